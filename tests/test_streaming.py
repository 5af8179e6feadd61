"""One refinement path: streaming (OnlineRefiner) equals offline refinement of the same frames."""
import numpy as np
import pytest
import torch
from conftest import random_motion

from posebert_plug.bodies import BodyModels
from posebert_plug.refine import OnlineRefiner, Refiner, refine_tracks, slice_track
from posebert_plug.types import Detection, Track, VideoInfo

LAYOUT = {"kp3d-h36m17": "h36m17", "kp3d-mediapipe33": "mediapipe33", "kp2d-coco17": "coco17"}
FAST_FIT = {"iters": 4}    # the same fit offline and streaming; few iterations keep the test short


@pytest.fixture(scope="module")
def ref():
    return Refiner("cpu")


def _track(ref, preset, fps, with_2d, T, seed=1):
    """A person walking 4 m from a 600 px camera, as the preset's estimator would give it: SMPL
    rotations (with a translation, hence 2D joints, or without), or keypoints with 1 cm noise (3D
    presets: with or without their 2D keypoints); every 7th frame missing."""
    V = VideoInfo(640, 480, fps, focal_px=600.0)
    R, tr = random_motion(T=T, seed=seed, fps=fps)
    R = torch.as_tensor(R).float()
    R[:, 0] = torch.diag(torch.tensor([1.0, -1, -1])) @ R[:, 0]
    tr = torch.stack([torch.as_tensor(tr[:, 0]).float() * 0.2, torch.full((T,), 0.2),
                      4.0 + torch.as_tensor(tr[:, 2]).float()], -1)
    rng = np.random.default_rng(seed)
    dets = []
    for f in range(T):
        if f % 7 == 3:
            continue
        if preset == "smpl":
            kw = dict(rotmats=R[f].numpy(), transl=tr[f].numpy() if with_2d else None)
        else:
            k3 = ref.body.pose_keypoints(R[f:f + 1], tr[f:f + 1], LAYOUT[preset])[0].numpy()
            k3 = k3 + rng.normal(0, 0.01, k3.shape)
            uv = 600 * k3[:, :2] / k3[:, 2:] + [320, 240]
            k2 = dict(kp2d=uv, kp2d_conf=np.full(len(uv), 0.9), layout2d=LAYOUT[preset])
            kw = k2 if preset.startswith("kp2d") else dict(kp3d=k3, layout3d=LAYOUT[preset], **(k2 if with_2d else {}))
        dets.append(Detection(f, score=0.9, **kw))
    return Track.from_detections(0, dets, V), {d.frame: d for d in dets}, V


CASES = [(p, fps, w) for p in ("smpl", "kp3d-h36m17", "kp3d-mediapipe33") for fps in (10.0, 30.0) for w in (True, False)] + \
    [("kp2d-coco17", fps, True) for fps in (10.0, 30.0)]


@pytest.mark.parametrize("preset, fps, with_2d", CASES)
def test_streaming_equals_offline_on_the_same_frames(ref, preset, fps, with_2d):
    on = OnlineRefiner(preset, video=VideoInfo(640, 480, fps, focal_px=600.0), refiner=ref, fit_options=FAST_FIT)
    T = on.context + 5                        # past the ring buffer's length: old frames leave it
    track, by_frame, V = _track(ref, preset, fps, with_2d, T)
    on.video = V
    checked = 0
    for f in range(T):
        if f not in (on.context // 2, T - 1):
            on.push(0, by_frame.get(f))
            continue
        cur, _ = on.step(0, by_frame.get(f))
        window = on.window(0)
        assert window.frames[-1] == f and len(window) <= on.context
        offline = refine_tracks([slice_track(track, np.arange(window.frames[0], f + 1))], model=preset, refiner=ref,
                                fit_options=FAST_FIT)[0]
        streamed = on.last[0]
        assert np.allclose(cur[0], streamed.rotmats[len(window) - 1])
        assert np.abs(offline.joints[-1] - streamed.joints[len(window) - 1]).max() < 1e-3   # 1 mm
        assert np.abs(offline.transl[-1] - cur[1]).max() < 1e-3
        checked += 1
    assert checked == 2


def test_streaming_with_prediction_equals_offline_prediction(ref):
    on = OnlineRefiner("smpl", video=VideoInfo(640, 480, 30.0, focal_px=600.0), refiner=ref, predict_ahead=5)
    assert on.context == 59
    track, by_frame, V = _track(ref, "smpl", 30.0, True, 30)
    for f in range(29):
        on.push(0, by_frame.get(f))
    cur, ahead = on.step(0, by_frame.get(29))
    off = refine_tracks([slice_track(track, np.arange(0, 30))], model="smpl", refiner=ref, extra_frames=5)[0]
    assert len(off) == 35 and np.abs(off.transl[-1] - ahead[1]).max() < 1e-3
    assert np.allclose(off.rotmats[29], cur[0], atol=1e-5)


def test_online_refiner_waits_for_a_first_observation_and_forgets(ref):
    on = OnlineRefiner("smpl", video=VideoInfo(640, 480, 30.0), refiner=ref, history=8)
    track, by_frame, _ = _track(ref, "smpl", 30.0, True, 12)
    assert on.step(7, None) == (None, None)         # nothing seen yet
    assert on.step(7, by_frame[0])[0][0].shape == (24, 3, 3)
    for _ in range(8):                               # 8 unseen frames: the observation left the buffer
        cur, _ = on.step(7, None)
    assert cur is None and 7 not in on.last
    on.reset(7)
    assert 7 not in on.buffers
    with pytest.raises(TypeError, match="step takes a Detection"):
        on.step(0, {"frame": 0})


# ---- one body-model provider: --smpl-dir reaches the joints of the results ---------------------------

def _smpl_stand_in(folder):
    """A tiny SMPL-shaped model file (synthetic numbers, no licensed data) in smplx's layout."""
    import scipy.sparse as sp
    rng = np.random.default_rng(0)
    V, J = 6890, 24
    parents = np.r_[-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
    rest = np.zeros((J, 3))
    for j in range(1, J):
        rest[j] = rest[parents[j]] + rng.normal(0, 0.1, 3)
    verts = rest[rng.integers(0, J, V)] + rng.normal(0, 0.02, (V, 3))
    jreg = np.zeros((J, V))
    jreg[np.arange(J), np.arange(J)] = 1.0       # joint j = vertex j, moved onto the rest joints below
    verts[:J] = rest
    d = {"v_template": verts, "f": rng.integers(0, V, (100, 3)).astype(np.uint32),
         "weights": np.eye(J)[rng.integers(0, J, V)], "kintree_table": np.stack([np.r_[4294967295, parents[1:]],
                                                                                 np.arange(J)]),
         "posedirs": np.zeros((V, 3, 207)), "shapedirs": rng.normal(size=(V, 3, 10)) * 0.01,
         "J_regressor": np.array(sp.csc_matrix(jreg), dtype=object)}
    (folder / "smpl").mkdir()
    np.savez(folder / "smpl" / "SMPL_NEUTRAL.npz", **d)
    return folder


def test_smpl_dir_changes_the_joints_refinement_returns(tmp_path):
    bodies = BodyModels(smpl_dir=_smpl_stand_in(tmp_path))
    free, smpl = Refiner("cpu"), Refiner("cpu", bodies=bodies)
    track, _, _ = _track(free, "smpl", 30.0, True, 20)
    a = refine_tracks([track], model="smpl", refiner=free)[0]
    b = refine_tracks([track], model="smpl", refiner=smpl)[0]
    assert np.allclose(a.rotmats, b.rotmats, atol=1e-6)             # the same refinement ...
    J = bodies.body(torch.as_tensor(b.rotmats), torch.as_tensor(b.transl), torch.as_tensor(b.betas)).joints
    assert np.allclose(b.joints, J.numpy(), atol=1e-5)               # ... whose joints are the SMPL model's
    assert np.abs(a.joints - b.joints).max() > 0.01
    assert bodies.for_track(b) is bodies.body and bodies.body.pose_keypoints(
        torch.as_tensor(b.rotmats[:2]), None, "coco17").shape == (2, 17, 3)


def test_hand_results_are_their_own_type(ref, tmp_path):
    from posebert_plug.refine import refined_track
    from posebert_plug.types import RefinedHandTrack, RefinedTrack, load_tracks, save_tracks
    hand = ref.prior("kp3d-hand21", "right")
    R = torch.eye(3).expand(5, 16, 3, 3).clone()
    kp = hand.pose_keypoints(R, torch.tensor([0.0, 0.0, 0.5]).expand(5, 3), "hand21").numpy()
    track = Track.from_detections(3, [Detection(f, kp3d=kp[f], layout3d="hand21", side="right") for f in range(5)],
                                  VideoInfo(640, 480, 30.0))
    r = refined_track(ref, "kp3d-hand21", track, R, np.tile([0.0, 0.0, 0.5], (5, 1)), np.ones(5, bool))
    body, _, _ = _track(ref, "smpl", 30.0, True, 5)
    b = refine_tracks([body], model="smpl", refiner=ref)[0]
    assert type(r) is RefinedHandTrack and r.joints.shape == (5, 21, 3) and type(b) is RefinedTrack
    save_tracks(tmp_path / "r.npz", [r, b])
    assert [type(t) for t in load_tracks(tmp_path / "r.npz")] == [RefinedHandTrack, RefinedTrack]
