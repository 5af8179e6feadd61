"""Gap check (posebert_plug.gapfill) and the mirror average of SMPL refinement."""
from __future__ import annotations

import numpy as np
import torch

from posebert_plug.gapfill import gap_mix_weight, holdout_mask, interior_gaps, mix_gaps
from posebert_plug.rotations import geodesic_distance, rotvec_to_rotmat


def _linear_motion(N=60, J=24, seed=0):
    """Constant angular velocity per joint: slerp between any two frames is exact."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(J, 3, generator=g) * 0.02
    start = torch.randn(J, 3, generator=g) * 0.3
    R0 = rotvec_to_rotmat(start)
    t = torch.arange(N, dtype=torch.float64)[:, None, None]
    return (rotvec_to_rotmat((w * t).float()) @ R0).double()


def test_interior_gaps_leave_the_ends_out():
    obs = np.array([0, 1, 1, 0, 0, 1, 0, 1, 0, 0], bool)
    assert interior_gaps(obs).tolist() == [0, 0, 0, 1, 1, 0, 1, 0, 0, 0]
    assert not interior_gaps(np.zeros(5, bool)).any()


def test_holdout_hides_blocks_inside_observed_runs_in_two_disjoint_phases():
    obs = np.ones(120, bool)
    for a, b in [(20, 30), (50, 58), (80, 92)]:
        obs[a:b] = False
    h0, h1 = holdout_mask(obs, 0), holdout_mask(obs, 1)
    assert h0 is not None and h1 is not None
    for h in (h0, h1):
        assert not (h & ~obs).any()                       # only observed frames are hidden
        runs = np.flatnonzero(np.diff(np.r_[0, h.astype(int), 0]))
        lengths = runs[1::2] - runs[::2]
        assert lengths.max() <= 10                        # the median gap of the track
        left = obs & ~h
        for s, e in zip(runs[::2], runs[1::2]):          # an observed frame stays on each side
            assert left[s - 1] and left[e]
    assert not (h0 & h1).any()
    assert holdout_mask(np.ones(50, bool)) is None        # no gap: nothing to check


def test_mix_gaps_moves_only_interior_gap_frames():
    R = _linear_motion()
    noisy = R.clone()
    noisy[10:20] = noisy[10:20] @ rotvec_to_rotmat(torch.full((10, 24, 3), 0.2)).double()   # a fill off the motion
    obs = np.ones(len(R), bool)
    obs[10:20] = False
    obs[-5:] = False
    out = mix_gaps(noisy, obs, 1.0)
    assert torch.equal(out[obs], noisy[obs]) and torch.equal(out[-5:], noisy[-5:])
    # weight 1 is the slerp between the frames around the gap: the motion itself here
    assert float(geodesic_distance(out[10:20], R[10:20]).max()) < 1e-5
    half = mix_gaps(noisy, obs, 0.5)
    assert torch.allclose(geodesic_distance(half[10:20], R[10:20]), geodesic_distance(noisy[10:20], R[10:20]) / 2, atol=1e-5)
    assert torch.equal(mix_gaps(noisy, obs, 0.0), noisy)


def test_gap_check_prefers_interpolation_only_when_the_model_fills_badly():
    R = _linear_motion(N=90)
    obs = np.ones(len(R), bool)
    for a in (15, 45, 70):
        obs[a:a + 8] = False
    hidden = holdout_mask(obs, 0)
    check = obs & ~hidden
    bad_fill = R.clone()
    bad_fill[~check] = rotvec_to_rotmat(torch.full((int((~check).sum()), 24, 3), 0.5)).double()
    w = gap_mix_weight([(bad_fill, hidden)], R, obs)
    assert (w == 1.0).all()                               # interpolation is exact on linear motion
    good_fill = R.clone()
    w = gap_mix_weight([(good_fill, hidden)], R, obs)
    assert (w == 0.0).all()                               # a tie keeps the model's fill
    # only the arms filled badly: only the arms move toward the interpolation
    arms_bad = R.clone()
    arm = [13, 14, 16, 17, 18, 19, 20, 21, 22, 23]
    idx = np.flatnonzero(~check)
    arms_bad[torch.as_tensor(idx)[:, None], torch.as_tensor(arm)[None]] = rotvec_to_rotmat(
        torch.full((len(idx), len(arm), 3), 0.5)).double()
    w = gap_mix_weight([(arms_bad, hidden)], R, obs)
    assert (w[arm] == 1.0).all() and (w[[1, 2, 4, 5]] == 0.0).all()


def test_mirror_of_a_track_round_trips_and_refinement_is_mirror_equivariant():
    from posebert_plug.refine import mirror_smpl_output, mirror_smpl_track, refine_tracks
    from posebert_plug.types import Detection, Track, VideoInfo
    g = torch.Generator().manual_seed(3)
    N = 40
    t = torch.arange(N, dtype=torch.float32)[:, None, None] / 30
    R = rotvec_to_rotmat(0.4 * torch.sin(2 * np.pi * 0.6 * t + torch.rand(24, 3, generator=g) * 6))
    R = R @ rotvec_to_rotmat(torch.randn(R.shape[:-2] + (3,), generator=g) * 0.05)      # noisy input
    video = VideoInfo(1024, 1024, 30.0)
    dets = [Detection(i, rotmats=R[i].numpy(), transl=np.array([0.3, 0.2, 5.0], np.float32))
            for i in range(N) if not 12 <= i < 20]
    track = Track.from_detections(0, dets, video)
    mirrored = mirror_smpl_track(track)
    back, _ = mirror_smpl_output(torch.as_tensor(mirror_smpl_track(mirrored).rotmats), torch.zeros(N, 3))
    back2, _ = mirror_smpl_output(torch.as_tensor(mirrored.rotmats), torch.zeros(N, 3))
    assert np.allclose(np.nan_to_num(mirror_smpl_track(mirrored).rotmats), np.nan_to_num(track.rotmats))
    assert np.allclose(np.nan_to_num(back2.numpy()), np.nan_to_num(track.rotmats), atol=1e-6)
    a = refine_tracks([track], model="smpl")[0]
    b = refine_tracks([mirrored], model="smpl")[0]
    b_back, _ = mirror_smpl_output(torch.as_tensor(b.rotmats), torch.zeros(N, 3))
    # the model sees both the motion and its mirror image: mirrored input, mirrored output
    assert float(geodesic_distance(b_back, torch.as_tensor(a.rotmats)).max()) < 1e-3
    plain = refine_tracks([mirrored], model="smpl", mirror_average=False)[0]
    plain_back, _ = mirror_smpl_output(torch.as_tensor(plain.rotmats), torch.zeros(N, 3))
    a_plain = refine_tracks([track], model="smpl", mirror_average=False)[0]
    assert float(geodesic_distance(plain_back, torch.as_tensor(a_plain.rotmats)).max()) > 1e-3


def _wave(N=120, J=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(N, dtype=torch.float32)[:, None, None] / 30
    return rotvec_to_rotmat(0.5 * torch.sin(2 * np.pi * 0.5 * t + torch.rand(J, 3, generator=g) * 6))


def test_smoothed_input_corrects_a_biased_model_even_when_the_input_is_noisier():
    from posebert_plug.trust import smooth_residual
    R = _wave()
    g = torch.Generator().manual_seed(1)
    model_out = R @ rotvec_to_rotmat(torch.full((24, 3), 0.05))                  # 0.087 rad off, every frame
    noisy = R @ rotvec_to_rotmat(torch.randn(R.shape[:-2] + (3,), generator=g) * 0.1)
    obs = torch.ones(len(R), dtype=torch.bool)
    out = smooth_residual(model_out, noisy, obs)
    # the input's noise (0.17 rad) is larger than the model's bias, yet their average over time is not
    assert geodesic_distance(out, R).mean() < 0.6 * geodesic_distance(model_out, R).mean()


def test_smoothed_input_needs_a_noise_estimate():
    from posebert_plug.trust import smooth_residual
    R = _wave()
    model_out = R @ rotvec_to_rotmat(torch.full((24, 3), 0.05))
    obs = torch.zeros(len(R), dtype=torch.bool)
    obs[::2] = True                                                              # no 5 frames in a row
    assert torch.equal(smooth_residual(model_out, R, obs), model_out)


def test_streaming_skips_the_gap_check_because_it_never_changes_the_newest_frame():
    from posebert_plug.refine import OnlineRefiner
    from posebert_plug.types import Detection, VideoInfo
    R = _wave(N=60)
    video = VideoInfo(640, 480, 30.0)
    on = OnlineRefiner("smpl", video=video, predict_ahead=3)
    checked = OnlineRefiner("smpl", video=video, predict_ahead=3, gap_check=True)
    assert not on.options.gap_check and checked.options.gap_check
    for k in range(60):
        seen = (k // 6) % 3 != 1                                    # gaps of 6 frames
        d = Detection(k, rotmats=R[k].numpy(), transl=np.array([0.0, 0.2, 5.0], np.float32)) if seen else None
        a, b = on.step(0, d), checked.step(0, d)
        if a[0] is None:
            continue
        assert np.allclose(a[0][0], b[0][0], atol=1e-5) and np.allclose(a[1][0], b[1][0], atol=1e-5)
    # the windows had gaps for the check to work on: it moved frames inside them, not the newest one
    gap = ~on.last[0].observed
    assert gap.any()
    moved = np.abs(on.last[0].rotmats - checked.last[0].rotmats).max(axis=(1, 2, 3)) > 1e-4
    assert moved.any() and not (moved & ~gap).any()

