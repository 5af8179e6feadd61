"""Issue 3: mocap readers, retargeting, dataset builder, synthetic observations, perturbations."""
import os
import tarfile

import numpy as np
import pytest
import torch

from conftest import extract_members, needs_shared, random_motion, shared_path
from posebert_plug import load_motion
from posebert_plug.mocap.bvh import read_bvh, write_bvh
from posebert_plug.mocap.dataset import MotionCache, build_cache, summary_table
from posebert_plug.mocap.retarget import load_joint_map, retarget
from posebert_plug.mocap.skeleton_motion import MocapFormatError
from posebert_plug.skeletons import SMPL24
from posebert_plug import synth


def _write_smpl_bvh(path, body, T=40, seed=0):
    R, tr = random_motion(T=T, seed=seed)
    write_bvh(path, list(SMPL24.joints), list(SMPL24.parents), body.rest_joints.double().numpy(), R, tr, fps=30)
    return R, tr


def test_bvh_round_trip_recovers_rotations(tmp_path, body):
    R, tr = _write_smpl_bvh(tmp_path / "m.bvh", body)
    m = load_motion(tmp_path / "m.bvh", joint_map="smpl24")
    assert m.rotmats.shape == (40, 24, 3, 3) and m.fps == pytest.approx(30)
    assert np.abs(m.rotmats - R).max() < 1e-5
    assert np.abs(m.transl - tr).max() < 1e-5
    # Recognised without naming the map.
    assert np.abs(load_motion(tmp_path / "m.bvh").rotmats - R).max() < 1e-5


def test_resampling_to_30fps(tmp_path, body):
    R, tr = random_motion(T=121, seed=3, fps=120)
    write_bvh(tmp_path / "m120.bvh", list(SMPL24.joints), list(SMPL24.parents), body.rest_joints.double().numpy(),
              R, tr, fps=120)
    m = load_motion(tmp_path / "m120.bvh", joint_map="smpl24", fps=30)
    assert m.num_frames == 31 and m.fps == 30
    assert np.abs(m.rotmats[5] - R[20]).max() < 1e-5


def test_amass_npz_feeds_the_dataset_path(tmp_path):
    import roma
    T = 60
    poses = (torch.randn(T, 156) * 0.2).numpy()
    trans = np.cumsum(np.full((T, 3), 0.01), 0)
    d = tmp_path / "amass"
    d.mkdir()
    np.savez(d / "clip_a.npz", poses=poses, trans=trans, mocap_framerate=np.array(60.0), betas=np.zeros(16))
    np.savez(d / "clip_b.npz", poses=poses[:, :72], trans=trans, mocap_framerate=np.array(30.0))
    m = load_motion(d / "clip_a.npz")
    assert m.rotmats.shape == (30, 24, 3, 3) and m.fps == 30
    body_R = roma.rotvec_to_rotmat(torch.as_tensor(poses[::2, 3:6]))
    assert np.abs(m.rotmats[:, 1] - body_R.numpy()).max() < 1e-5   # left hip copied
    assert np.allclose(m.rotmats[:, 22], np.eye(3))                  # SMPL-H hands dropped
    manifest = build_cache(d, tmp_path / "cache", progress=False)
    assert manifest["sources"]["amass"]["clips"] == 2
    c = MotionCache(tmp_path / "cache" / ("train.npz" if os.path.exists(tmp_path / "cache" / "train.npz") else "val.npz"))
    assert c.rot6d.shape[1:] == (24, 6)


def test_truncated_bvh_names_file_and_line(tmp_path, body):
    _write_smpl_bvh(tmp_path / "m.bvh", body)
    lines = open(tmp_path / "m.bvh").read().splitlines()
    open(tmp_path / "cut.bvh", "w").write("\n".join(lines[:-3]) + "\n" + lines[-3][:40] + "\n")
    with pytest.raises(MocapFormatError, match=r"cut\.bvh, line \d+: frame \d+ has \d+ values"):
        read_bvh(tmp_path / "cut.bvh")
    open(tmp_path / "head.bvh", "w").write("\n".join(lines[:20]))
    with pytest.raises(MocapFormatError, match="head.bvh.*truncated"):
        read_bvh(tmp_path / "head.bvh")


def test_nan_channels_are_refused(tmp_path, body):
    _write_smpl_bvh(tmp_path / "m.bvh", body)
    text = open(tmp_path / "m.bvh").read().splitlines()
    i = next(k for k, l in enumerate(text) if l.startswith("Frame Time")) + 2
    vals = text[i].split()
    vals[5] = "nan"
    text[i] = " ".join(vals)
    open(tmp_path / "nan.bvh", "w").write("\n".join(text) + "\n")
    with pytest.raises(MocapFormatError, match=f"nan.bvh, line {i + 1}: frame 1 has NaN"):
        read_bvh(tmp_path / "nan.bvh")


def test_unknown_joints_in_a_map(tmp_path, body):
    _write_smpl_bvh(tmp_path / "m.bvh", body)
    with pytest.raises(KeyError, match="unknown SMPL-24 joint.*'left_tail'"):
        load_joint_map({"joints": {"pelvis": "pelvis", "left_tail": "x"}})
    src = read_bvh(tmp_path / "m.bvh")
    with pytest.raises(KeyError, match="source joint.*'Hips'"):
        retarget(src, {"joints": {"pelvis": "Hips"}})


def test_builder_skips_bad_clips_with_a_warning(tmp_path, body):
    d = tmp_path / "src"
    d.mkdir()
    for s in range(3):
        _write_smpl_bvh(d / f"ok_{s}.bvh", body, seed=s)
    (d / "broken.bvh").write_text("HIERARCHY\nROOT pelvis\n{\n")
    with pytest.warns(UserWarning, match="skipping .*broken.bvh"):
        manifest = build_cache(d, tmp_path / "cache", progress=False)
    assert [s["clip"] for s in manifest["skipped"]] == ["broken"]
    assert manifest["sources"]["bvh"]["clips"] == 3
    assert "| total | 3 |" in summary_table(manifest)


def test_builder_reads_archives(tmp_path, body):
    d = tmp_path / "clips"
    d.mkdir()
    _write_smpl_bvh(d / "a.bvh", body)
    with tarfile.open(tmp_path / "pack.tar.gz", "w:gz") as tf:
        tf.add(d, arcname="clips")
    os.remove(d / "a.bvh")
    src = tmp_path / "archives"
    src.mkdir()
    os.rename(tmp_path / "pack.tar.gz", src / "pack.tar.gz")
    manifest = build_cache(src, tmp_path / "cache", progress=False)
    assert sum(s["clips"] for s in manifest["sources"].values()) == 1


def test_synthetic_observations_and_perturbations(body):
    g = torch.Generator().manual_seed(0)
    R, tr = random_motion(T=64, seed=1)
    R = torch.as_tensor(R).float()[None].repeat(4, 1, 1, 1, 1)
    tr = torch.as_tensor(tr).float()[None].repeat(4, 1, 1)
    Rc, trc = synth.place_in_camera(R, tr, g)
    assert (trc[..., 2] >= 1.0).all()
    from posebert_plug.camera import project
    uv = project(trc[:, 0])
    assert (uv.abs() < 1.0).all()                          # starts inside the image
    # Body-relative pose unchanged by the placement.
    assert torch.allclose(Rc[:, :, 1:], R[:, :, 1:])
    m = synth.block_mask(8, 64, 0.25, 0.25, 1, 15, g)
    assert ((~m).float().mean(1) >= 0.25).all()
    m = synth.random_mask(8, 64, 0.5, 0.5, torch.Generator().manual_seed(1))
    assert abs((~m).float().mean() - 0.5) < 0.1
    f = synth.future_mask(4, 64, 10, 10, g)
    assert (~f[:, -10:]).all() and f[:, :-10].all()
    noisy = synth.rotation_noise(R, 0.1, g)
    from posebert_plug.rotations import geodesic_distance
    ang = geodesic_distance(noisy, R)
    assert 0.1 < ang.mean() < 0.25                          # ~ sigma * sqrt(8/pi) for 3D Gaussian noise
    x, rep = synth.replace_with_other(torch.arange(4.0)[:, None].repeat(1, 64), torch.full((4,), 0.3), g)
    assert (x[rep] != torch.arange(4.0)[:, None].repeat(1, 64)[rep]).all()
    c = synth.drop_joints(torch.ones(4, 64, 17), torch.full((4,), 0.2), g)
    assert abs((c == 0).float().mean() - 0.2) < 0.05
    # Same seed, same perturbation.
    a = synth.training_mask(4, 64, torch.Generator().manual_seed(5))
    b = synth.training_mask(4, 64, torch.Generator().manual_seed(5))
    assert (a == b).all()


@needs_shared
def test_real_mocap_clips_load(tmp_path):
    """One clip per source from the real archives retargets to a plausible standing body."""
    for arch, member in (("bandai-namco-1.tar.xz", "Bandai-Namco-Research-Motiondataset-1/data/dataset-1_walk_normal_001.bvh"),
                         ("cmu-asfamc-01-03.tar.xz", "subjects/02/02_01.amc")):
        members = [member] + (["subjects/02/02.asf"] if member.endswith(".amc") else [])
        extract_members(shared_path("data", "mocap", arch), members, tmp_path)
        m = load_motion(tmp_path / member)
        assert m.fps == 30 and m.num_frames > 30
        from posebert_plug.body_model import DefaultBodyModel
        J = DefaultBodyModel()(torch.as_tensor(m.rotmats).float(), None, return_vertices=False).joints
        head_above_feet = (J[:, 15, 1] - J[:, 10, 1]).median()
        assert 1.2 < head_above_feet < 1.7
