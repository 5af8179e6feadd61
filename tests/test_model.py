"""Issue 4: PoseBERT model, presets, training command, checkpoints."""
import json
import os

import numpy as np
import pytest
import torch

from posebert_plug import available_presets, load_model
from posebert_plug.features import canonical_rotation, kp3d_features, normalise_bones
from posebert_plug.model import PoseBERT
from posebert_plug.presets import get_preset, save_checkpoint, build_training_batch


def test_presets_registered():
    assert {"smpl", "kp3d-h36m17", "kp3d-mediapipe33", "kp2d-coco17"} <= set(available_presets())
    assert get_preset("kp3d-h36m17").in_dim == 3 * 17 + 6 + 2 * 17
    assert get_preset("kp2d-coco17").in_dim == 51
    with pytest.raises(KeyError, match="unknown preset"):
        get_preset("kp2d-openpose25")


def test_masked_frames_content_is_not_attended():
    torch.manual_seed(0)
    m = PoseBERT(in_dim=12, num_joints=2, dim=32, depth=2, heads=4, mlp_dim=64).eval()
    with torch.no_grad():
        for p in m.regressor.parameters():
            p.normal_(0, 0.1)
    x = torch.randn(1, 10, 12)
    obs = torch.ones(1, 10, dtype=torch.bool)
    obs[0, 3:6] = False
    x2 = x.clone()
    x2[0, 3:6] = torch.randn(3, 12) * 100  # garbage in masked frames
    x2[0, 4] = float("nan")
    a, b = m(x, obs), m(x2, obs)
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-5)
    x3 = x.clone()
    x3[0, 0] += 1.0  # an observed frame does change the output
    assert not torch.allclose(m(x3, obs)[0], a[0])
    # Nothing observed: defined output (the prior), no NaN.
    out = m(x, torch.zeros(1, 10, dtype=torch.bool))
    assert torch.isfinite(out[0]).all()


def test_regression_starts_from_the_mean_pose():
    m = PoseBERT(in_dim=8, num_joints=3, dim=16, depth=3, heads=2, mlp_dim=32)
    outs = m(torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool), return_all=True)
    assert len(outs) == 3  # one estimate per block (unrolled regressor)
    assert torch.allclose(outs[0][0], m.mean_theta[:-3].expand(2, 5, -1))  # zero-initialised last layer


def test_canonical_frame_and_bone_normalisation(body):
    kp = body.pose_keypoints(torch.eye(3).expand(1, 24, 3, 3), None, "h36m17")[0]
    import roma
    Rrand = roma.random_rotmat()
    rotated = kp @ Rrand.T + torch.tensor([1.0, 2.0, 5.0])
    R = canonical_rotation(rotated, "h36m17")
    assert torch.allclose(R @ Rrand, canonical_rotation(kp, "h36m17"), atol=1e-5)  # the frame follows the body
    bl = torch.full((17,), 0.2)
    n = normalise_bones(rotated * 1.7, "h36m17", bl)
    from posebert_plug.skeletons import get_skeleton
    for c, p in get_skeleton("h36m17").bones:
        assert abs((n[c] - n[p]).norm() - 0.2) < 1e-5
    f1 = kp3d_features(kp, torch.zeros(17, 2), "h36m17", bl)
    f2 = kp3d_features(rotated, torch.zeros(17, 2), "h36m17", bl)
    assert torch.allclose(f1[:51], f2[:51], atol=1e-5)  # canonical keypoints invariant to the rigid motion


def test_training_batch_shapes(body, tiny_cache):
    from posebert_plug.mocap.dataset import MotionCache
    c = MotionCache(tiny_cache / "train.npz")
    rot6d, tr = c.sample(4, 32, np.random.default_rng(0))
    from posebert_plug.hand_motion import HandMotionGenerator
    from posebert_plug.rotations import rotmat_to_6d
    for name in available_presets():
        p = get_preset(name)
        if p.body == "hand":    # hand presets train on generated hand motion (16 joints)
            hand = p.make_body()
            seqs = [HandMotionGenerator(hand).sequence(32, np.random.default_rng(k)) for k in range(4)]
            r6 = rotmat_to_6d(torch.from_numpy(np.stack([q[0] for q in seqs])))
            b = build_training_batch(name, r6, torch.from_numpy(np.stack([q[1] for q in seqs])), hand,
                                     torch.Generator().manual_seed(0))
        else:
            b = build_training_batch(name, rot6d, tr, body, torch.Generator().manual_seed(0))
        assert b["x"].shape == (4, 32, p.in_dim)
        assert b["rotmats"].shape == (4, 32, p.num_joints, 3, 3)
        assert torch.isfinite(b["x"]).all() and b["observed"].any(1).all()


def test_train_command_writes_a_loadable_checkpoint(tiny_cache, tiny_size, tmp_path, capsys):
    from posebert_plug.train import main as train_main
    out = tmp_path / "run"
    args = ["--preset", "smpl", "--cache", str(tiny_cache), "--size", tiny_size, "--batch", "4", "--window", "32",
            "--save-every", "3", "--out", str(out)]
    assert train_main(args + ["--steps", "6", "--val-every", "3"]) == 0
    stdout = capsys.readouterr().out
    assert "step 3: val corrupted MPJPE" in stdout and "step 6: val corrupted MPJPE" in stdout
    log = json.load(open(out / "log.json"))
    assert [e["step"] for e in log] == [3, 6]
    m = load_model("smpl", checkpoint=str(out / "model.pt"))
    assert m.preset.name == "smpl" and m.config["dim"] == 32 and m.meta["step"] == 6
    x = torch.randn(1, 16, m.config["in_dim"])
    pose, param = m(x, torch.ones(1, 16, dtype=torch.bool))
    assert pose.shape == (1, 16, 144) and param.shape == (1, 16, 3)
    # Resumable: a second call continues from last.pt.
    assert train_main(args + ["--steps", "8", "--val-every", "100"]) == 0
    assert f"resumed from {out / 'last.pt'} at step 6" in capsys.readouterr().out
    assert json.load(open(out / "log.json"))[-1]["step"] == 8
    assert load_model("smpl", checkpoint=str(out / "model.pt")).meta["step"] == 8


def test_missing_cache_is_a_clear_error(tmp_path, capsys):
    from posebert_plug.train import main as train_main
    assert train_main(["--preset", "smpl", "--cache", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "posebert-data build" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad, message", [
    (["--preset", "smplx"], "unknown preset 'smplx'"),
    (["--preset", "smpl", "--steps", "0"], "--steps must be at least 1"),
    (["--preset", "smpl", "--init", "NOFILE"], "no such checkpoint file"),
    (["--preset", "smpl", "--init", "TEXT"], "not a PoseBERT checkpoint"),
])
def test_bad_training_arguments_are_usage_errors(tiny_cache, tmp_path, capsys, bad, message):
    from posebert_plug.train import main as train_main
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    bad = [str(tmp_path / "missing.pt") if a == "NOFILE" else str(tmp_path / "notes.txt") if a == "TEXT" else a
           for a in bad]
    with pytest.raises(SystemExit) as e:
        train_main(bad + ["--cache", str(tiny_cache), "--out", str(tmp_path / "run")])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()                # no empty run folder left behind


def test_checkpoint_loading_is_weights_only_and_checked(tmp_path):
    m = PoseBERT(in_dim=192, dim=32, depth=1, heads=2, mlp_dim=32, init_from_input=(0, 144))
    save_checkpoint(m, "smpl", tmp_path / "m.pt")
    back = load_model("smpl", checkpoint=str(tmp_path / "m.pt"))
    assert back.config["dim"] == 32
    # A file holding arbitrary objects is refused by weights_only loading.

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))
    torch.save({"config": {}, "state_dict": {}, "preset": "smpl", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception):
        load_model("smpl", checkpoint=str(tmp_path / "evil.pt"))
    assert not (tmp_path / "pwned").exists()


def test_robust_smooth_start_rejects_an_outlier_and_keeps_a_ramp():
    from posebert_plug.model import _robust_smooth
    t = torch.arange(40, dtype=torch.float32)
    ramp = torch.stack([t * 0.01, torch.ones(40)], -1)[None]            # (1, 40, 2)
    spiky = ramp.clone()
    spiky[0, 20] = torch.tensor([5.0, -3.0])                           # one outlier frame
    out = _robust_smooth(spiky)
    assert out.shape == ramp.shape
    # away from the replicated edges a clean linear ramp survives a median + symmetric Gaussian unchanged
    assert torch.allclose(_robust_smooth(ramp)[0, 10:30], ramp[0, 10:30], atol=1e-5)
    # the outlier frame (5 units off) is gone: what remains is under one ramp step (0.01)
    assert (out[0, 10:30] - ramp[0, 10:30]).abs().max() < 0.01


def test_forward_on_selected_frames_matches_the_full_forward():
    # streaming use asks for two frames only; the regressor then runs on those alone
    torch.manual_seed(0)
    m = PoseBERT(in_dim=12, num_joints=2, dim=32, depth=2, heads=4, mlp_dim=64, init_from_input=(0, 12),
                 init_masked="smooth").eval()
    with torch.no_grad():
        for p in m.regressor.parameters():
            p.normal_(0, 0.1)
    x, obs = torch.randn(2, 20, 12), torch.rand(2, 20) > 0.3
    full = m(x, obs)
    part = m(x, obs, frames=[5, 19])
    assert part[0].shape == (2, 2, 12) and part[1].shape == (2, 2, 3)
    assert torch.allclose(part[0], full[0][:, [5, 19]], atol=1e-5)
    assert torch.allclose(part[1], full[1][:, [5, 19]], atol=1e-5)


def test_training_mask_mixture_and_long_futures():
    from posebert_plug import synth
    a = synth.training_mask(32, 64, torch.Generator().manual_seed(0))
    b = synth.training_mask(32, 64, torch.Generator().manual_seed(0), mix=synth.MASK_MIX)
    assert torch.equal(a, b)
    fut = synth.training_mask(512, 64, torch.Generator().manual_seed(1), mix=(0, 0, 0, 1), max_future=56)
    assert not fut[:, -1].any()                         # futures only: the last frame is always hidden
    hidden_tail = (~fut).flip(1).cummin(1).values.sum(1)  # length of the hidden run at the end
    assert hidden_tail.max() >= 56 and hidden_tail.min() >= 1   # (a random drop may lengthen it)
    short = synth.training_mask(512, 64, torch.Generator().manual_seed(1), mix=(0, 0, 0, 1))
    assert (~short).flip(1).cummin(1).values.sum(1).median() < hidden_tail.median()
    assert fut.any(1).all()


def test_training_mask_heavy_drop_range():
    from posebert_plug import synth
    g = torch.Generator().manual_seed(2)
    default = 1 - synth.training_mask(512, 200, g, mix=(0, 0, 1, 0)).float().mean(1)
    wider = 1 - synth.training_mask(512, 200, torch.Generator().manual_seed(2), mix=(0, 0, 1, 0),
                                    heavy_max=0.97).float().mean(1)
    assert default.min() > 0.4 and default.max() < 0.95     # U(0.5, 0.9) of 200 frames, sampling noise aside
    assert wider.max() > 0.93 and wider.mean() > default.mean()


def test_training_mask_long_blocks():
    """--block-max / --block-len: blocks up to 40 frames and 70% of the window (occlusions of 1-2 s)."""
    from posebert_plug import synth

    def longest_gap(m):
        best = []
        for row in (~m).int().tolist():
            run = top = 0
            for v in row:
                run = run + 1 if v else 0
                top = max(top, run)
            best.append(top)
        return np.array(best)
    default = synth.training_mask(256, 64, torch.Generator().manual_seed(3), mix=(0, 1, 0, 0))
    longer = synth.training_mask(256, 64, torch.Generator().manual_seed(3), mix=(0, 1, 0, 0), block_max=0.7, block_len=40)
    assert (1 - default.float().mean(1)).max() < 0.5 + 30 / 64 + 1e-6
    assert (1 - longer.float().mean(1)).mean() > (1 - default.float().mean(1)).mean()
    assert longest_gap(longer).max() >= 40 and np.median(longest_gap(longer)) > np.median(longest_gap(default))
