"""Issue 5: refine_tracks API, tasks, online mode, confidence, baselines, metrics."""
import numpy as np
import pytest
import roma
import torch

from conftest import extract_members, needs_shared, random_motion, shared_path
from posebert_plug import baselines as B
from posebert_plug import metrics as M
from posebert_plug.refine import ConfidencePolicy, OnlineRefiner, complete_motion, encode_track, predict_future, \
    refine_tracks
from posebert_plug.types import Detection, FrameDetections, Track, VideoInfo

V = VideoInfo(1024, 768, 30.0, focal_px=1200.0)


def smpl_track(T=50, missing=(), seed=0, tid=0):
    R, tr = random_motion(T=T, seed=seed)
    R[:, 0] = np.diag([1.0, -1, -1]) @ R[:, 0]
    tr = np.column_stack([tr[:, 0], np.full(T, 0.2), 4.0 + tr[:, 2]])
    dets = [Detection(f, rotmats=R[f], transl=tr[f], betas=np.ones(10) * 0.1) for f in range(T) if f not in set(missing)]
    return Track.from_detections(tid, dets, V), R, tr


def coco_track(T=40, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(300, 600, (17, 2))
    dets = [Detection(f, kp2d=base + [2 * f, 0], kp2d_conf=np.full(17, 0.9), layout2d="coco17", score=0.9)
            for f in range(T)]
    return Track.from_detections(0, dets, V)


def test_refine_fills_gaps_and_keeps_lengths():
    t, R, tr = smpl_track(T=150, missing=range(40, 70))
    out = refine_tracks([t])[0]
    assert len(out) == 150 and out.preset == "smpl"
    assert out.rotmats.shape == (150, 24, 3, 3) and out.joints.shape == (150, 24, 3)
    assert roma.is_rotation_matrix(torch.as_tensor(out.rotmats), epsilon=1e-4)
    assert (~out.observed[40:70]).all() and out.observed[:40].all()
    assert np.isfinite(out.transl).all() and np.allclose(out.betas, 0.1)


def test_preset_choice_and_override():
    t = coco_track()
    assert refine_tracks([t])[0].preset == "kp2d-coco17"
    with pytest.raises(ValueError, match="needs SMPL rotations"):
        refine_tracks([t], model="smpl")


@needs_shared
def test_h36m_keypoints_use_the_shipped_kp3d_preset(body, tmp_path):
    """3D H36M-17 keypoints of a held-out CMU clip (subject 03, the validation split) go to kp3d-h36m17
    (shipped); with every fifth frame missing, the refined body's keypoints stay near the input's,
    much nearer than the rest pose with the true root orientation."""
    from posebert_plug import load_motion
    members = ["subjects/03/03_01.amc", "subjects/03/03.asf"]
    extract_members(shared_path("data", "mocap", "cmu-asfamc-01-03.tar.xz"), members, tmp_path)
    m = load_motion(tmp_path / members[0])
    R = m.rotmats[:90].astype(np.float32).copy()
    R[:, 0] = np.diag([1.0, -1, -1]) @ R[:, 0]            # Y-up world -> camera frame, facing the camera
    tr = np.column_stack([np.zeros(90), np.full(90, 0.2), np.full(90, 4.0)]).astype(np.float32)
    kp = body.pose_keypoints(torch.as_tensor(R), torch.as_tensor(tr), "h36m17").numpy()
    dets = [Detection(f, kp3d=kp[f], layout3d="h36m17") for f in range(90) if f % 5]
    track = Track.from_detections(0, dets, V)
    out = refine_tracks([track])[0]
    assert out.preset == "kp3d-h36m17" and out.rotmats.shape == (len(track), 24, 3, 3)
    rel = lambda k: k - k[:, :1]
    mine = body.pose_keypoints(torch.as_tensor(out.rotmats), None, "h36m17").numpy()
    err = np.linalg.norm(rel(mine) - rel(kp[track.frames]), axis=-1).mean()
    R0 = np.tile(np.eye(3, dtype=np.float32), (len(track), 24, 1, 1))
    R0[:, 0] = R[track.frames, 0]
    rest = body.pose_keypoints(torch.as_tensor(R0), None, "h36m17").numpy()
    err_rest = np.linalg.norm(rel(rest) - rel(kp[track.frames]), axis=-1).mean()
    assert err < 0.08 and err < 0.5 * err_rest, (err, err_rest)


def test_windows_blend_without_seams():
    t, _, _ = smpl_track(T=200)
    a = refine_tracks([t], stride=16)[0]
    # Consecutive-frame rotation changes stay as small at window edges as elsewhere.
    d = roma.rotmat_geodesic_distance(torch.as_tensor(a.rotmats[1:]), torch.as_tensor(a.rotmats[:-1])).mean(-1)
    assert d.max() < 5 * d.median() + 0.05


def test_edge_cases():
    assert refine_tracks([]) == []
    one, _, _ = smpl_track(T=1)
    assert len(refine_tracks([one])[0]) == 1
    t, _, _ = smpl_track(T=20)
    t.observed[:] = False
    with pytest.raises(ValueError, match="no usable observation"):
        refine_tracks([t])
    t, R, tr = smpl_track(T=20)
    t.rotmats[5] = np.nan                                  # a NaN frame is treated as missing
    out = refine_tracks([t])[0]
    assert not out.observed[5] and np.isfinite(out.rotmats).all()
    with pytest.raises(ValueError, match=r"kp2d \(coco17\): expected shape \(17, 2\)"):
        Detection(0, kp2d=np.zeros((18, 2)), layout2d="coco17")
    for bad in ([1, 2], 42, "tracks.npz"):
        with pytest.raises(TypeError, match="refine_tracks takes"):
            refine_tracks(bad)
    with pytest.raises(ValueError, match="needs video"):
        refine_tracks([FrameDetections(0, [Detection(0, box=[0, 0, 1, 1])])])


def test_detections_are_grouped_or_tracked():
    dets = [Detection(f, kp2d=np.random.default_rng(f).uniform(100, 140, (17, 2)) + [5 * f, 0], layout2d="coco17",
                      score=0.9, track_id=7) for f in range(12)]
    out = refine_tracks(dets, video=V)
    assert len(out) == 1 and out[0].track_id == 7 and len(out[0]) == 12
    for d in dets:
        d.track_id = None
    with pytest.raises(ValueError, match="need tracking first"):   # the core does not track ...
        refine_tracks([FrameDetections(d.frame, [d]) for d in dets], video=V)
    import posebert_plug
    out = posebert_plug.refine_tracks([FrameDetections(d.frame, [d]) for d in dets], video=V)   # ... the facade does
    assert len(out) == 1 and len(out[0]) == 12


def test_confidence_policy_masks_unreliable_inputs(body):
    t = coco_track()
    t.scores[3] = 0.1                    # low detection score
    t.kp2d_conf[7, :12] = 0.05           # too few confident keypoints
    x, obs, _ = encode_track(t, "kp2d-coco17", body, ConfidencePolicy())
    assert not obs[3] and not obs[7] and obs[4]
    x, obs, _ = encode_track(t, "kp2d-coco17", body, ConfidencePolicy(min_frame_score=0.0, min_visible_joints=1))
    assert obs[3] and obs[7]


def test_future_prediction_and_completion():
    t, _, _ = smpl_track(T=40)
    f = predict_future(t, 10)
    assert len(f) == 50 and f.frames[-1] == t.frames[-1] + 10 and (~f.observed[-10:]).all()
    with pytest.raises(ValueError, match="smaller than the window"):
        predict_future(t, 64)
    R, _ = random_motion(T=60, seed=4)
    c = complete_motion({0: R[0], 30: R[30], 59: R[59]}, 60)
    assert len(c) == 60 and c.observed.sum() == 3


def test_online_refiner_streams():
    t, R, tr = smpl_track(T=30)
    on = OnlineRefiner("smpl", video=V, predict_ahead=3)
    for i in range(30):
        det = Detection(i, rotmats=t.rotmats[i], transl=t.transl[i]) if i % 5 else None
        cur, ahead = on.step(0, det)
        if i == 0:
            assert cur is None      # nothing seen yet
        else:
            assert cur[0].shape == (24, 3, 3) and ahead[1].shape == (3,)
    assert len(on.buffers[0]) == 30 and on.last[0].observed.sum() == 24


# ---- baselines and metrics -----------------------------------------------------------

def test_baselines_fill_and_smooth():
    x = np.arange(10.0)[:, None] * np.ones((1, 3))
    obs = np.ones(10, bool)
    obs[3:6] = False
    assert np.allclose(B.nearest_fill(x, obs)[3:6, 0], [2, 2, 6])
    assert np.allclose(B.interpolate(x, obs), x)
    assert np.allclose(B.savgol(x, np.ones(10, bool), window=5), x)   # SG keeps a line
    assert B.predict_velocity(x, 2)[:, 0].tolist() == [10, 11]
    assert B.predict_no_velocity(x, 2)[:, 0].tolist() == [9, 9]
    R = roma.rotvec_to_rotmat(torch.as_tensor(np.linspace(0, 1, 12)[:, None, None] * [[0, 0, 1.0]])).numpy()
    obs = np.ones(12, bool)
    obs[4:7] = False
    Ri = B.interpolate_rotations(R, obs)
    assert np.allclose(Ri, R, atol=1e-6)
    Rs = B.savgol_rotations(R + np.random.default_rng(0).normal(0, 0.05, R.shape), np.ones(12, bool), window=5)
    assert roma.is_rotation_matrix(torch.as_tensor(Rs), epsilon=1e-6)   # back on the manifold
    Rv = B.predict_velocity(R, 3, rotations=True)
    ang = roma.rotmat_to_rotvec(torch.as_tensor(Rv))[:, 0, 2].numpy()
    assert np.allclose(ang, 1 + np.arange(1, 4) / 11, atol=1e-6)
    noisy = 1.0 + np.random.default_rng(1).normal(0, 0.1, (90, 1))
    e = B.one_euro(noisy, np.ones(90, bool))
    assert e.shape == (90, 1) and e[30:].std() < 0.5 * noisy[30:].std() and abs(e[30:].mean() - 1) < 0.05
    with pytest.raises(ValueError, match="no observed frame"):
        B.nearest_fill(x, np.zeros(10, bool))


def test_metrics_on_hand_computed_cases():
    gt = torch.zeros(2, 3, 3)
    gt[..., 1, 0] = 1.0
    pred = gt.clone()
    pred[..., 2, :] += torch.tensor([0.0, 0.03, 0.04])              # one joint 5 cm off
    assert M.mpjpe(pred, gt, root=0) == pytest.approx(50 / 3, rel=1e-5)
    assert M.pck3d(pred, gt, threshold=0.04) == pytest.approx(200 / 3, rel=1e-5)
    # Procrustes removes rotation, translation and scale.
    Rz = roma.rotvec_to_rotmat(torch.tensor([0, 0, 0.7]))
    g = torch.randn(4, 17, 3)
    p = 1.3 * g @ Rz.T + 0.2
    assert M.pa_mpjpe(p, g) < 1e-3 and M.pa_pck3d(p, g) == 100
    assert M.mpjpe(p, g, root=None) > 10
    # Acceleration: a constant-velocity offset has no acceleration error, a jump has.
    seq = torch.zeros(5, 2, 3)
    lin = seq + torch.arange(5.0)[:, None, None] * 0.01
    assert M.accel_error(lin, seq, root=None) == pytest.approx(0.0, abs=1e-4)
    jump = seq.clone()
    jump[2] += 0.003
    assert M.accel_error(jump, seq, root=None) == pytest.approx(1000 * 0.003 * 3 ** 0.5 * (1 + 2 + 1) / 3, rel=1e-4)
    v = torch.zeros(1, 4, 3)
    assert M.mpvpe(v + torch.tensor([0.001, 0, 0]), v) == pytest.approx(1.0, rel=1e-4)


def test_windows_stay_within_the_trained_window():
    t, R, tr = smpl_track(T=30)
    with pytest.raises(ValueError, match="window must lie in"):
        refine_tracks([t], model="smpl", window=65)
    for bad in (dict(window=0), dict(stride=0), dict(window=8, stride=9)):   # 0 is not "the default"; no gaps
        with pytest.raises(ValueError, match="window must lie in"):
            refine_tracks([t], model="smpl", **bad)
    with pytest.raises(ValueError, match="extra_frames must be >= 0"):
        refine_tracks([t], model="smpl", extra_frames=-1)
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        complete_motion({0: R[0]}, 0)
    with pytest.raises(ValueError, match="predict_ahead must lie in"):
        OnlineRefiner("smpl", video=V, predict_ahead=64)
    with pytest.raises(TypeError, match="step takes a Detection"):
        OnlineRefiner("smpl", video=V).step(0, {"frame": 0})
    on = OnlineRefiner("smpl", video=V, history=64, predict_ahead=10)
    assert on.context == 54                  # 54 frames + 10 mask tokens fill the 64 trained positions
    calls = []
    hook = on.net.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[1]))
    try:
        for i in range(30):
            on.step(0, Detection(i, rotmats=t.rotmats[i], transl=t.transl[i]))
        for i in range(30):
            on.step(0, Detection(30 + i, rotmats=t.rotmats[i], transl=t.transl[i]))
    finally:
        hook.remove()
    assert max(calls) == 64 and len(on.buffers[0]) == 54   # the ring buffer keeps the context


def test_anchor_to_observed_hits_keys_and_interpolates_the_correction():
    from posebert_plug.refine import anchor_to_observed
    N, J = 21, 24
    R = roma.random_rotmat((N, J), dtype=torch.float64)
    C = roma.rotvec_to_rotmat(torch.tensor([0.0, 0.0, 0.4], dtype=torch.float64)).expand(J, 3, 3)
    R_in = torch.eye(3, dtype=torch.float64).expand(N, J, 3, 3).clone()
    obs = torch.zeros(N, dtype=torch.bool)
    obs[[5, 15]] = True
    R_in[5] = R[5]                       # correction identity at 5 ...
    R_in[15] = C @ R[15]                 # ... and a 0.4 rad turn about z at 15
    out = anchor_to_observed(R, R_in, obs)
    assert torch.allclose(out[obs], R_in[obs])
    assert torch.allclose(out[:5], R[:5])                           # held before the first key
    assert torch.allclose(out[16:], C @ R[16:], atol=1e-9)          # and after the last
    half = roma.rotvec_to_rotmat(torch.tensor([0.0, 0.0, 0.2], dtype=torch.float64))
    assert torch.allclose(out[10], half @ R[10], atol=1e-9)         # halfway: half the correction


def test_exact_keys_and_kept_observations():
    R, _ = random_motion(T=60, seed=4)
    keys = {0: R[0], 30: R[30], 59: R[59]}
    c = complete_motion(keys, 60)
    for f, Rk in keys.items():
        assert np.allclose(c.rotmats[f], Rk, atol=1e-5)
    loose = complete_motion(keys, 60, exact_keys=False)
    assert max(np.abs(loose.rotmats[f] - Rk).max() for f, Rk in keys.items()) > 1e-3
    Rc = torch.as_tensor(c.rotmats, dtype=torch.float64)
    step = roma.rotmat_geodesic_distance(Rc[1:], Rc[:-1]).max(-1).values   # largest joint turn per frame
    assert step[[28, 29, 30, 31]].max() < 3 * step.median() + 0.05          # no jump into or out of a key
    t, R2, tr = smpl_track(T=30)
    f = predict_future(t, 10, keep_observed=True)
    assert np.allclose(f.rotmats[:30], t.rotmats, atol=1e-5) and np.allclose(f.transl[:30], t.transl, atol=1e-5)
    assert len(f) == 40 and np.isfinite(f.rotmats).all()
    with pytest.raises(ValueError, match="keep_observed needs SMPL rotation"):
        refine_tracks([coco_track()], keep_observed=True)


def test_prediction_is_drawn_toward_the_last_pose_with_the_horizon():
    """damp_prediction: frames before n unchanged; frame n-1+h at weight 1/(1 + h/(hold_s*fps)) between the
    last refined pose and PoseBERT's prediction (half way hold_s seconds ahead); off with hold_s = 0."""
    from posebert_plug.refine import damp_prediction
    from posebert_plug.rotations import geodesic_distance, rotvec_to_rotmat
    n, extra, fps = 10, 30, 30.0
    angles = torch.linspace(0, 1.5, n + extra)
    R = rotvec_to_rotmat(torch.stack([angles, torch.zeros_like(angles), torch.zeros_like(angles)], -1))[:, None]
    D = damp_prediction(R, n, fps, hold_s=1.0)
    assert D.shape == R.shape and torch.allclose(D[:n], R[:n])
    moved = geodesic_distance(D[n:, 0], R[n - 1, 0].expand(extra, 3, 3))
    full = geodesic_distance(R[n:, 0], R[n - 1, 0].expand(extra, 3, 3))
    h = torch.arange(1, extra + 1, dtype=torch.float32)
    assert torch.allclose(moved, full / (1 + h / 30.0), atol=1e-4)      # x-axis rotations: angles blend linearly
    assert abs(float(moved[29] / full[29]) - 0.5) < 1e-3                # half way one second ahead
    assert torch.equal(damp_prediction(R, n, fps, 0.0), R) and torch.equal(damp_prediction(R[:n], n, fps, 1.0), R[:n])


def test_fit_presets_are_named_and_follow_the_keypoints_in_their_order():
    import pytest
    from posebert_plug.camera import project
    from posebert_plug.fit2d import FIT_PRESETS
    from posebert_plug.pipeline import Pipeline
    from posebert_plug.refine import refine_tracks
    from posebert_plug.types import Detection, Track, VideoInfo
    assert Pipeline(fit="close").fit_options == FIT_PRESETS["close"] and Pipeline().fit_options is None
    with pytest.raises(ValueError, match="fit must be one of"):
        Pipeline(fit="tight")
    from posebert_plug.body_model import DefaultBodyModel
    body = DefaultBodyModel()
    from posebert_plug.rotations import rotvec_to_rotmat
    t = torch.arange(45, dtype=torch.float32)[:, None, None] / 30
    R = rotvec_to_rotmat(0.5 * torch.sin(2 * np.pi * 0.5 * t + torch.rand(24, 3, generator=torch.Generator().manual_seed(0)) * 6))
    R[:, 0] = rotvec_to_rotmat(torch.tensor([[np.pi * 0.8, 0.0, 0.0]])).expand(45, 3, 3)   # seen from above
    tr = torch.tensor([0.0, 0.3, 6.0]).expand(45, 3)
    px = (project(body.pose_keypoints(R, tr, "coco17")) * 512 + 512).numpy()
    track = Track.from_detections(0, [Detection(t, kp2d=px[t], kp2d_conf=np.full(17, 0.9), layout2d="coco17", score=0.9)
                                      for t in range(45)], VideoInfo(1024, 1024, 30.0))
    err = {}
    for name, opts in FIT_PRESETS.items():
        out = refine_tracks([track], model="kp2d-coco17", fit_options=opts or None)[0]
        P = project(body.pose_keypoints(torch.as_tensor(out.rotmats).float(), torch.as_tensor(out.transl).float(),
                                        "coco17")) * 512 + 512
        err[name] = float(np.median(np.linalg.norm(P.numpy() - px, axis=-1)))
    # the lighter the prior, the closer the body to the keypoints (a body seen from above: the default
    # 26 px, the earlier PoseBERT-bound fit 31 px)
    assert err["close"] < err["default"] < err["loose"], err


def test_default_fit_draws_an_upright_person_upright_from_a_raised_camera():
    """Issue 17 item 4 in small: people standing and gesturing, seen from 45 degrees above, 2D keypoints with
    3 px noise. PoseBERT alone leans them forward (15 degrees when written); the default fit stands them up
    (2.3), the loose one less (7.4)."""
    from posebert_plug import synth
    from posebert_plug.body_model import DefaultBodyModel
    from posebert_plug.camera import project
    from posebert_plug.fit2d import FIT_PRESETS
    from posebert_plug.refine import refine_tracks
    from posebert_plug.rotations import rotvec_to_rotmat
    from posebert_plug.types import Detection, Track, VideoInfo
    body = DefaultBodyModel()
    B, T = 3, 48
    t = torch.arange(T, dtype=torch.float32) / 30
    rv = torch.zeros(B, T, 24, 3)
    for j, amp in ((16, 0.6), (17, -0.6), (18, 0.5), (19, 0.5), (1, 0.15), (2, -0.15)):
        rv[:, :, j, 2 if j in (16, 17) else 0] = amp * torch.sin(2 * np.pi * 0.7 * t)
    g = torch.Generator().manual_seed(0)
    R, tr = synth.place_in_camera(rotvec_to_rotmat(rv), torch.zeros(B, T, 3), g, depth=(5.0, 7.0),
                                  u_range=(-0.2, 0.2), v_range=(0.0, 0.2), pitch=(np.pi / 4, np.pi / 4))
    px = project(body.pose_keypoints(R, tr, "coco17")) * 512 + 512
    noisy = px + torch.randn(px.shape, generator=g) * 3.0
    tracks = [Track.from_detections(i, [Detection(f, kp2d=noisy[i, f].numpy(), kp2d_conf=np.full(17, 0.9),
                                                  layout2d="coco17", score=0.9) for f in range(T)],
                                    VideoInfo(1024, 1024, 30.0)) for i in range(B)]

    def pitch(Rs):   # pelvis -> neck direction's pitch in the camera frame (degrees)
        j = body.pose_keypoints(torch.as_tensor(np.asarray(Rs)).float(), None, "smpl24")
        up = j[..., 12, :] - j[..., 0, :]
        return torch.rad2deg(torch.atan2(up[..., 2], -up[..., 1]))

    err = {}
    for name in ("default", "loose"):
        out = refine_tracks(tracks, model="kp2d-coco17", fit_options=FIT_PRESETS[name] or None)
        err[name] = float((pitch(np.stack([o.rotmats for o in out])) - pitch(R)).abs().median())
    out = refine_tracks(tracks, model="kp2d-coco17", fit_2d=False)
    err["PoseBERT alone"] = float((pitch(np.stack([o.rotmats for o in out])) - pitch(R)).abs().median())
    assert err["default"] < 10.0 and err["default"] < err["loose"], err
