"""Training data by performer, the CMU BVH maps, and the augmentations of posebert-train."""
from __future__ import annotations

import glob
import os
import pickle

import numpy as np
import pytest
import torch

from posebert_plug import synth
from posebert_plug.mocap.dataset import clip_meta
from posebert_plug.rotations import rotmat_to_6d, sixd_to_rotmat

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mocap")


def _motion(B=3, T=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    rv = torch.randn(B, T, 24, 3, generator=g) * 0.4
    from posebert_plug.rotations import rotvec_to_rotmat
    return rotmat_to_6d(rotvec_to_rotmat(rv)), torch.randn(B, T, 3, generator=g)


@pytest.mark.parametrize("name, source, expected", [
    ("subjects/03/03_04", "cmu", ("cmu-03", "locomotion", "val")),
    ("subjects/01/01_02", "cmu", ("cmu-01", "everyday", "train")),
    ("cmu-bvh-przestr/data/14/14_07", "cmu-bvh-przestr", ("cmu-14", "everyday", "val")),
    ("cmu-bvh-przestr/data/13/13_10", "cmu-bvh-przestr", ("cmu-13", "everyday", "train")),
    ("cmu-bvh-acrnn/train_data_bvh/salsa/01", "cmu-bvh-acrnn", ("cmu-60+61", "dance", "val")),
    ("cmu-bvh-acrnn/train_data_bvh/indian/04", "cmu-bvh-acrnn", ("cmu-94", "dance", "train")),
    ("cmu-bvh-acrnn/train_data_bvh/martial/03", "cmu-bvh-acrnn", ("cmu-135", "martial_arts", "val")),
    ("Bandai-Namco-Research-Motiondataset-1/data/dataset-1_kick_normal_001", "bandai-namco-1",
     ("bandai-namco-1-normal", "martial_arts", "train")),
    ("Bandai-Namco-Research-Motiondataset-2/data/dataset-2_walk-turn-left_elderly_003", "bandai-namco-2",
     ("bandai-namco-2-elderly", "locomotion", "val")),
])
def test_split_holds_out_whole_performers(name, source, expected):
    assert clip_meta(name, source) == expected


def test_user_clips_split_by_performer_folder_not_by_clip():
    metas = {clip_meta(f"CMU/{s}/{s}_{k:02d}_poses", "amass") for s in ("07", "31", "77") for k in range(1, 6)}
    by_performer = {}
    for performer, _, split in metas:
        by_performer.setdefault(performer, set()).add(split)
    assert len(by_performer) == 3 and all(len(v) == 1 for v in by_performer.values())


def test_mirror_twice_is_identity_and_swaps_sides():
    r6, tr = _motion()
    which = torch.tensor([True, False, True])
    m6, mtr = synth.mirror_motion(r6, tr, which)
    assert torch.allclose(m6[1], r6[1]) and not torch.allclose(m6[0], r6[0])
    assert torch.allclose(mtr[0, :, 0], -tr[0, :, 0])
    b6, btr = synth.mirror_motion(m6, mtr, which)
    assert torch.allclose(sixd_to_rotmat(b6), sixd_to_rotmat(r6), atol=1e-5) and torch.allclose(btr, tr)


def test_mirror_keeps_a_mirrored_body_pose():
    """Joints of the mirrored motion are the reflected joints of the original, sides swapped."""
    from posebert_plug.body_model import DefaultBodyModel
    from posebert_plug.skeletons import get_skeleton
    body = DefaultBodyModel()
    r6, tr = _motion(B=1, T=4)
    m6, mtr = synth.mirror_motion(r6, tr, torch.tensor([True]))
    j = body.pose_keypoints(sixd_to_rotmat(r6), tr, "smpl24")
    jm = body.pose_keypoints(sixd_to_rotmat(m6), mtr, "smpl24")
    flip = torch.as_tensor(get_skeleton("smpl24").flip_map)
    expect = j[..., flip, :] * torch.tensor([-1.0, 1.0, 1.0])
    assert (jm - expect).norm(dim=-1).max() < 0.02   # the default body's rest skeleton is symmetric to ~mm


def test_time_warp_speed_one_is_identity_and_speed_two_skips_frames():
    r6, tr = _motion(B=2, T=40)
    a6, atr = synth.time_warp(r6, tr, torch.ones(2), 20)
    assert torch.allclose(a6, r6[:, :20]) and torch.allclose(atr, tr[:, :20])
    b6, btr = synth.time_warp(r6, tr, torch.full((2,), 2.0), 20)
    assert torch.allclose(btr, tr[:, 0:40:2])


def test_rig_offsets_are_constant_per_window_and_zero_is_identity():
    from posebert_plug.kinematics import local_to_global
    from posebert_plug.skeletons import get_skeleton
    r6, _ = _motion(B=2, T=10)
    assert synth.rig_offsets(r6, torch.Generator().manual_seed(0), 0.0) is r6
    s6 = synth.rig_offsets(r6, torch.Generator().manual_seed(0), 25.0)
    parents = get_skeleton("smpl24").parents
    G, Gs = local_to_global(sixd_to_rotmat(r6), parents), local_to_global(sixd_to_rotmat(s6), parents)
    O = G.transpose(-1, -2) @ Gs                          # G_j^T G'_j = O_j, the same in every frame
    assert torch.allclose(O, O[:, :1].expand_as(O), atol=1e-4)
    ang = torch.arccos(((O[:, 0].diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1))
    assert ang[:, list(synth.RIG_JOINTS)].max() <= np.radians(25) + 1e-3
    assert ang[:, [0, 3, 6, 9, 12, 15]].max() < 1e-3     # trunk untouched


def test_swap_limbs_all_frames_twice_is_identity():
    x = torch.arange(2 * 5 * 24, dtype=torch.float32).reshape(2, 5, 24, 1)
    g = torch.Generator().manual_seed(0)
    y = synth.swap_limbs(x, torch.ones(2), g)
    assert not torch.equal(x, y)
    assert torch.equal(y[:, :, [0, 3, 6, 9, 12, 15]], x[:, :, [0, 3, 6, 9, 12, 15]])


def test_heavy_tailed_noise_has_heavier_tails_than_gaussian():
    g = torch.Generator().manual_seed(0)
    t = synth.heavy_tailed((200000,), g)
    n = torch.randn(200000, generator=g)
    ratio = lambda v: float((v.abs() > 4 * v.abs().median()).float().mean())   # noqa: E731
    assert ratio(t) > 3 * ratio(n)


def test_clean_windows_are_exactly_clean():
    from posebert_plug.body_model import DefaultBodyModel
    from posebert_plug.presets import build_training_batch
    r6, tr = _motion(B=16, T=12)
    aug = synth.Augment(clean_frac=1.0, mirror=0.0, rig_deg=0.0)
    b = build_training_batch("smpl", r6, tr, DefaultBodyModel(), torch.Generator().manual_seed(0), aug=aug)
    x6 = b["x"][..., :144].reshape(16, 12, 24, 6)
    assert torch.allclose(sixd_to_rotmat(x6), b["rotmats"], atol=1e-5)


def test_augment_off_reproduces_the_shipped_training_distribution():
    """aug=None draws exactly what the shipped checkpoints trained on (their cards stay reproducible)."""
    from posebert_plug.body_model import DefaultBodyModel
    from posebert_plug.presets import build_training_batch
    r6, tr = _motion(B=4, T=16)
    body = DefaultBodyModel()
    a = build_training_batch("smpl", r6, tr, body, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    from posebert_plug.camera import project
    R, trc = synth.place_in_camera(sixd_to_rotmat(r6), tr, g, pitch=(-0.1, 0.6))
    synth.training_mask(4, 16, g)
    Rin = synth.corrupt_rotations(R, g)
    assert torch.allclose(a["x"][..., :144], rotmat_to_6d(Rin).flatten(-2), atol=1e-6)
    assert project is not None


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_training_resume_never_runs_code_from_a_crafted_last_pt(tmp_path, capsys):
    from posebert_plug.train import main
    cache = tmp_path / "cache"
    cache.mkdir()
    r6 = rotmat_to_6d(torch.eye(3).expand(80, 24, 3, 3)).numpy().astype(np.float16)
    for split in ("train", "val"):
        np.savez(cache / f"{split}.npz", rot6d=r6, transl=np.zeros((80, 3), np.float32), clip_start=np.array([0]),
                 clip_len=np.array([80]), clip_name=np.array(["a"]), clip_source=np.array(["bvh"]))
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "pwned"
    boom = _Boom()
    boom.marker = marker
    torch.save({"model": boom, "opt": {}, "step": 1}, out / "last.pt", pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(SystemExit) as e:
        main(["--preset", "smpl", "--cache", str(cache), "--out", str(out), "--steps", "1"])
    assert e.value.code == 2 and not marker.exists()
    assert "last.pt" in capsys.readouterr().err


@pytest.mark.skipif(not glob.glob(os.path.join(SHARED, "cmu-bvh-*.tar.xz")),
                    reason="the CMU BVH archives of ../shared/data/mocap are absent (bare clone)")
def _keep_first_frames(path, n):
    """Cut a BVH file to its first ``n`` frames (header's frame count updated): martial/03.bvh has 2750."""
    lines = open(path).read().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Frames:"))
    if int(lines[at].split()[1]) > n:
        lines = lines[:at] + [f"Frames: {n}"] + lines[at + 1:at + 2 + n]
        open(path, "w").write("\n".join(lines) + "\n")


def test_cmu_bvh_archives_load_with_their_maps(tmp_path):
    """Every map is checked by forward kinematics: feet below the head, symmetric arms, no T-pose start."""
    from conftest import extract_members
    from posebert_plug.body_model import DefaultBodyModel
    from posebert_plug.mocap.loaders import load_motion
    body = DefaultBodyModel()
    picks = {"cmu-bvh-przestr": ("13_13.bvh", "16_01.bvh"), "cmu-bvh-acrnn": ("martial/03.bvh",)}
    for archive, names in picks.items():
        extract_members(os.path.join(SHARED, f"{archive}.tar.xz"), names, tmp_path)
    files = sorted(glob.glob(str(tmp_path / "**" / "*.bvh"), recursive=True))
    assert len(files) == 3
    for f in files:
        _keep_first_frames(f, 600)    # 5 s at 120 fps: the checks look at the first 60 frames (2 s at 30 fps)
        m = load_motion(f)
        assert 25 < m.fps < 35 and np.isfinite(m.rotmats).all()
        j = body.pose_keypoints(torch.as_tensor(m.rotmats[:60]).float(), torch.as_tensor(m.transl[:60]).float(),
                                "smpl24").numpy()
        assert (j[:, 15, 1] - j[:, [7, 8], 1].min(1) > 0.7).all(), f          # head well above the ankles
        speed = np.linalg.norm(np.diff(j, axis=0), axis=-1).max(1) * m.fps
        assert speed[:5].max() < 12, f                                       # no jump out of a T-pose frame
        arm = np.linalg.norm(j[0, 20] - j[0, 16]) / np.linalg.norm(j[0, 21] - j[0, 17])
        assert 0.9 < arm < 1.1


def _smooth_track(N=60, J=24, seed=0):
    from posebert_plug.rotations import rotvec_to_rotmat
    g = torch.Generator().manual_seed(seed)
    amp, ph = torch.rand(J, 3, generator=g) * 0.6, torch.rand(J, 3, generator=g) * 6
    t = torch.arange(N, dtype=torch.float32)[:, None, None] / 30
    return rotvec_to_rotmat(amp * torch.sin(2 * np.pi * 0.7 * t + ph))


def test_trust_leaves_clean_input_alone_and_hands_noisy_input_to_the_model():
    from posebert_plug.rotations import geodesic_distance, rotvec_to_rotmat
    from posebert_plug.trust import blend_with_input, input_noise
    R = _smooth_track()
    obs = torch.ones(len(R), dtype=torch.bool)
    g = torch.Generator().manual_seed(1)
    model_out = R @ rotvec_to_rotmat(torch.randn(R.shape[:-2] + (3,), generator=g) * 0.03)   # a model 0.03 rad off
    assert input_noise(R, obs).max() < 0.01
    clean = blend_with_input(model_out, R, obs)
    assert geodesic_distance(clean, R).mean() < 0.2 * geodesic_distance(model_out, R).mean()
    noisy = R @ rotvec_to_rotmat(torch.randn(R.shape[:-2] + (3,), generator=g) * 0.15)
    est = input_noise(noisy, obs)
    assert 0.1 < float(est.median()) < 0.2
    out = blend_with_input(model_out, noisy, obs)
    assert geodesic_distance(out, R).mean() < 0.5 * geodesic_distance(noisy, R).mean()


def test_trust_replaces_an_outlier_frame_of_clean_input():
    from posebert_plug.rotations import geodesic_distance, rotvec_to_rotmat
    from posebert_plug.trust import blend_with_input
    R = _smooth_track()
    bad = R.clone()
    bad[30] = rotvec_to_rotmat(torch.full((24, 3), 1.0))       # one wrong pose
    obs = torch.ones(len(R), dtype=torch.bool)
    out = blend_with_input(R, bad, obs)                       # a model that got the pose right
    assert geodesic_distance(out[30], R[30]).max() < 1e-3
    assert geodesic_distance(out[:29], bad[:29]).max() < 1e-3


def test_refine_tracks_returns_clean_smpl_input_nearly_as_given():
    from posebert_plug.refine import refine_tracks
    from posebert_plug.rotations import geodesic_distance
    from posebert_plug.types import Detection, Track, VideoInfo
    R = _smooth_track(N=48)
    video = VideoInfo(1024, 1024, 30.0)
    dets = [Detection(t, rotmats=R[t].numpy(), transl=np.array([0.0, 0.2, 5.0], np.float32)) for t in range(48)]
    track = Track.from_detections(0, dets, video)
    trusted = torch.as_tensor(refine_tracks([track], model="smpl")[0].rotmats)
    raw = torch.as_tensor(refine_tracks([track], model="smpl", trust_input=False)[0].rotmats)
    assert geodesic_distance(trusted, R).mean() < 0.5 * geodesic_distance(raw, R).mean()


def test_refined_keypoints_follow_clean_input_and_denoise_noisy_input():
    from posebert_plug.trust import refine_keypoints
    t = torch.arange(90, dtype=torch.float32)[:, None, None] / 30
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 17, 3, generator=g) * 0.3
    kp = base + 0.2 * torch.sin(2 * np.pi * 0.5 * t + torch.rand(1, 17, 3, generator=g) * 6)
    body = kp + 0.04 + torch.randn(kp.shape, generator=g) * 0.02       # a fitted body: offset and wobbly
    obs = torch.ones(90, dtype=torch.bool)
    clean = refine_keypoints(kp, body, obs)
    assert (clean - kp).norm(dim=-1).mean() < 0.005
    noisy = kp + torch.randn(kp.shape, generator=g) * 0.03
    out = refine_keypoints(noisy, body, obs)
    assert (out - kp).norm(dim=-1).mean() < 0.5 * (noisy - kp).norm(dim=-1).mean()


def test_kp3d_refined_track_carries_keypoints_through_save_and_load(tmp_path):
    from posebert_plug.body_model import DefaultBodyModel
    from posebert_plug.refine import refine_tracks
    from posebert_plug.types import Detection, Track, VideoInfo, load_tracks, save_tracks
    R = _smooth_track(N=40) * 1.0
    R[:, 0] = torch.tensor([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])   # facing the camera, upright
    kp = DefaultBodyModel().pose_keypoints(R, torch.tensor([0.0, 0.0, 4.0]).expand(40, 3), "h36m17")
    video = VideoInfo(1024, 1024, 30.0)
    track = Track.from_detections(0, [Detection(t, kp3d=kp[t].numpy(), layout3d="h36m17") for t in range(40)], video)
    out = refine_tracks([track], model="kp3d-h36m17")[0]
    assert out.keypoints.shape == (40, 17, 3) and out.keypoint_layout == "h36m17"
    assert np.abs(out.keypoints - kp.numpy()).max() < 0.02
    for ext in ("npz", "json"):
        save_tracks(tmp_path / f"r.{ext}", [out], video)
        back = load_tracks(tmp_path / f"r.{ext}")[0]
        assert back.keypoint_layout == "h36m17" and np.allclose(back.keypoints, out.keypoints, atol=1e-5)


def test_an_amass_folder_is_accepted_unchanged_and_split_by_subject(tmp_path):
    """AMASS as downloaded: <dataset>/<subject>/<clip>_poses.npz plus a shape.npz per subject."""
    import json
    from posebert_plug.mocap.dataset import build_cache
    g = np.random.default_rng(0)
    for ds, subjects in (("CMU", ("01", "02", "07", "31", "77")), ("BMLrub", ("rub001", "rub002"))):
        for s in subjects:
            d = tmp_path / "amass" / ds / s
            d.mkdir(parents=True)
            np.savez(d / "shape.npz", betas=np.zeros(16), gender="neutral")
            for k in range(2):
                T = 90
                np.savez(d / f"{s}_{k:02d}_poses.npz", poses=g.normal(0, 0.1, (T, 156)), trans=np.zeros((T, 3)),
                         betas=np.zeros(16), gender="male", mocap_framerate=120.0)
    m = build_cache(tmp_path / "amass", tmp_path / "cache", progress=False)
    assert m["skipped"] == [] and sum(s["clips"] for s in m["sources"].values()) == 14
    performers = {}
    for split in ("train", "val"):
        with np.load(tmp_path / "cache" / f"{split}.npz") as z:
            for p in z["clip_performer"]:
                performers.setdefault(str(p), set()).add(split)
    assert len(performers) == 7 and all(len(v) == 1 for v in performers.values())
    assert json.loads((tmp_path / "cache" / "manifest.json").read_text())["frames"]["train"] > 0


def test_proportions_change_the_observed_body_not_the_targets():
    from posebert_plug.body_model import DefaultBodyModel
    from posebert_plug.presets import build_training_batch
    r6, tr = _motion(B=4, T=8)
    body = DefaultBodyModel()
    kw = dict(mirror=0.0, rig_deg=0.0, clean_frac=1.0)
    a = build_training_batch("kp2d-coco17", r6, tr, body, torch.Generator().manual_seed(0),
                             aug=synth.Augment(proportions=0.0, **kw))
    b = build_training_batch("kp2d-coco17", r6, tr, body, torch.Generator().manual_seed(0),
                             aug=synth.Augment(proportions=0.1, **kw))
    assert torch.equal(a["rotmats"], b["rotmats"]) and torch.equal(a["transl"], b["transl"])
    assert not torch.allclose(a["x"], b["x"])
    s = synth.bone_scales(torch.Generator().manual_seed(0), 1000, 0.1)
    assert 0.85 * 0.9 - 1e-6 <= float(s.min()) and float(s.max()) <= 1.15 * 1.1 + 1e-6
