"""Hands: free hand model, MANO path (stand-in), generated motion, adapters, side-aware tracking, refinement."""
import json

import numpy as np
import pytest
import torch

from posebert_plug.body_model import BodyModelNotFound
from posebert_plug.hand_model import MANO_TIP_VERTICES, DefaultHandModel, MANOHandModel, load_hand_model
from posebert_plug.hand_motion import LIMITS, HandMotionGenerator, finger_angles
from posebert_plug.kinematics import forward_kinematics
from posebert_plug.rotations import rotvec_to_rotmat


@pytest.fixture(scope="module")
def hand():
    return DefaultHandModel("right")


@pytest.fixture(scope="module")
def gen(hand):
    return HandMotionGenerator(hand)


def test_default_hand_shapes_and_keypoints(hand):
    R = torch.eye(3).expand(2, 16, 3, 3)
    out = hand(R, torch.zeros(2, 3))
    assert out.joints.shape == (2, 16, 3) and out.vertices.shape == (2, 1609, 3)
    kp = hand.pose_keypoints(R, torch.zeros(2, 3), "hand21")
    assert kp.shape == (2, 21, 3)
    assert torch.allclose(kp, hand.keypoints(out, "hand21"), atol=1e-5)   # fast path == skinned mesh
    assert torch.allclose(kp[0, 0], torch.zeros(3), atol=1e-6)           # wrist at the origin
    # the middle finger tip is the farthest keypoint from the wrist, 12-25 cm away
    d = kp[0].norm(dim=-1)
    assert 0.12 < float(d[12]) < 0.25 and int(d.argmax()) in (8, 12, 16)
    with pytest.raises(ValueError, match=r"\(\.\.\., 16, 3, 3\)"):
        hand(torch.eye(3).expand(1, 24, 3, 3))


def test_left_hand_is_the_mirror_image(hand):
    left = DefaultHandModel("left")
    g = torch.Generator().manual_seed(0)
    R = rotvec_to_rotmat(0.4 * torch.randn(3, 16, 3, generator=g))
    t = torch.randn(3, 3, generator=g)
    M = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    right = hand.pose_keypoints(R, t, "hand21")
    mirrored = left.pose_keypoints(M @ R @ M, t * M.diagonal(), "hand21")
    assert torch.allclose(mirrored, right * M.diagonal(), atol=1e-5)
    assert (left.faces == hand.faces[:, ::-1]).all()
    with pytest.raises(ValueError, match="side"):
        DefaultHandModel("middle")


def test_flexion_curls_fingers_towards_the_palm(hand, gen):
    """Flexing a finger's MCP moves its tip toward the palm side (not backwards), and a fist
    brings every long fingertip much closer to the wrist than the flat hand."""
    flat = hand.pose_keypoints(torch.eye(3).expand(1, 16, 3, 3), None, "hand21")[0]
    ang = {f: np.array([1.4, 0.0, 1.6, 1.07]) for f in ("index", "middle", "ring", "pinky")}
    ang["thumb"] = np.array([0.9, 0.5, 0.7, 0.9])
    rv = torch.from_numpy(gen._local_rotvecs(ang))
    R = torch.cat([torch.eye(3)[None].double(), rotvec_to_rotmat(rv)]).float()[None]
    fist = hand.pose_keypoints(R, None, "hand21")[0]
    palmar = torch.as_tensor(gen.axes["index"]["abd"]).float()
    for tip in (8, 12, 16, 20):
        assert fist[tip].norm() < 0.75 * flat[tip].norm()
    for finger, tip in (("index", 8), ("middle", 12), ("ring", 16), ("pinky", 20)):
        one = {f: np.zeros(4) for f in ("index", "middle", "ring", "pinky")}
        one["thumb"] = np.zeros(4)
        one[finger] = np.array([0.5, 0.0, 0.0, 0.0])
        R1 = torch.cat([torch.eye(3)[None].double(), rotvec_to_rotmat(torch.from_numpy(gen._local_rotvecs(one)))])
        bent = hand.pose_keypoints(R1.float()[None], None, "hand21")[0]
        assert float((bent[tip] - flat[tip]) @ palmar) > 0.01, finger
    # reading the angles back gives the flexions that were put in
    back = finger_angles(R[0], gen)
    assert np.allclose(back["index"], np.rad2deg([1.4, 1.6, 1.07]), atol=2.0)


def test_generator_is_deterministic_smooth_and_within_limits(gen, hand):
    R1, p1 = gen.sequence(240, np.random.default_rng(3))
    R2, p2 = gen.sequence(240, np.random.default_rng(3))
    assert np.array_equal(R1, R2) and np.array_equal(p1, p2)
    assert R1.shape == (240, 16, 3, 3) and p1.shape == (240, 3)
    assert np.allclose(R1 @ np.swapaxes(R1, -1, -2), np.eye(3), atol=1e-4)      # proper rotations
    ang = finger_angles(R1, gen)
    lo, hi = np.rad2deg(min(v[0] for v in LIMITS.values())), np.rad2deg(max(v[1] for v in LIMITS.values()))
    for f, a in ang.items():
        assert a.min() >= lo - 25 and a.max() <= hi + 25, f      # within the joint limits (+ abduction coupling)
    kp = hand.pose_keypoints(torch.from_numpy(R1), torch.from_numpy(p1), "hand21").numpy()
    step = np.linalg.norm(np.diff(kp, axis=0), axis=-1).max()
    assert step < 0.10                                             # no jumps: fingertips under 3 m/s at 30 fps
    acc = np.linalg.norm(kp[2:] - 2 * kp[1:-1] + kp[:-2], axis=-1).mean()
    assert acc < 0.004
    # the motion actually moves the fingers (not a frozen hand)
    assert np.ptp(ang["index"][:, 1]) > 20


class ManoStandIn(torch.nn.Module):
    """Same forward signature and tensor shapes as smplx.MANO (778 vertices, 16 joints, 1538 faces)."""

    def __init__(self):
        super().__init__()
        base = DefaultHandModel("right")
        self.rest = base.rest_joints
        self.parents_list = base.parents
        g = torch.Generator().manual_seed(0)
        self.owner = torch.randint(0, 16, (778,), generator=g)
        self.offset = 0.01 * torch.randn(778, 3, generator=g)
        self.faces = np.random.default_rng(0).integers(0, 778, (1538, 3))
        self.parents = torch.tensor([-1] + self.parents_list[1:])

    def forward(self, global_orient, hand_pose, betas, transl):
        assert global_orient.shape[-1] == 3 and hand_pose.shape[-1] == 45 and betas.shape[-1] == 10
        rv = torch.cat([global_orient, hand_pose], -1).reshape(-1, 16, 3)
        joints, G = forward_kinematics(rotvec_to_rotmat(rv), self.rest, self.parents_list, transl)
        verts = joints[:, self.owner] + (G[:, self.owner] @ self.offset[..., None])[..., 0]

        class Out:
            pass
        o = Out()
        o.vertices, o.joints = verts, joints
        return o


def test_mano_path_with_a_stand_in():
    mano = MANOHandModel(mano=ManoStandIn())
    R = rotvec_to_rotmat(0.3 * torch.randn(4, 16, 3, generator=torch.Generator().manual_seed(1)))
    out = mano(R, torch.ones(4, 3))
    assert out.joints.shape == (4, 16, 3) and out.vertices.shape == (4, 778, 3)
    kp = mano.pose_keypoints(R, torch.ones(4, 3), "hand21")
    assert kp.shape == (4, 21, 3)
    assert torch.allclose(kp[:, 0], out.joints[:, 0])                          # wrist first
    assert torch.allclose(kp[:, 4], out.vertices[:, MANO_TIP_VERTICES[0]])     # thumb tip
    assert torch.allclose(kp[:, 8], out.vertices[:, MANO_TIP_VERTICES[1]])     # index tip
    assert torch.allclose(kp[:, 5], out.joints[:, 1])                          # index MCP (MANO joint 1)
    assert mano.rest_joints.shape == (16, 3)


def test_missing_mano_files_are_a_clear_error(tmp_path):
    with pytest.raises(BodyModelNotFound, match="mano.is.tue.mpg.de"):
        load_hand_model("mano", model_dir=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="unknown hand model"):
        load_hand_model("glove")


def test_hand_file_adapter_reads_npz_and_json(tmp_path, hand):
    import adapters
    from adapters.base import AdapterError
    from posebert_plug.types import VideoInfo
    n = 12
    kp3 = hand.pose_keypoints(torch.eye(3).expand(n, 16, 3, 3), torch.tensor([0.0, 0.0, 0.5]).expand(n, 3),
                              "hand21").numpy()
    kp2 = 500 * kp3[..., :2] / kp3[..., 2:] + 320
    np.savez(tmp_path / "h.npz", frame=np.arange(n), kp2d=kp2, kp3d=kp3, side=np.array(["left"] * n))
    A = adapters.get("hand21")()
    frames = A.read(str(tmp_path / "h.npz"), VideoInfo(640, 480, 30.0))
    assert len(frames) == n and frames[0].detections[0].side == "left"
    assert frames[0].detections[0].kp3d.shape == (21, 3)
    js = [{"frame_id": i, "instances": [{"keypoints": kp2[i].tolist(), "keypoint_scores": [0.9] * 21,
                                         "handedness": "right"}]} for i in range(n)]
    (tmp_path / "h.json").write_text(json.dumps(js))
    frames = adapters.get("mmpose-hand")().read(str(tmp_path / "h.json"), VideoInfo(640, 480, 30.0))
    assert frames[3].detections[0].layout2d == "hand21" and frames[3].detections[0].side == "right"
    js[2]["instances"][0]["keypoints"] = kp2[2, :17].tolist()
    (tmp_path / "bad.json").write_text(json.dumps(js))
    with pytest.raises(AdapterError, match=r"\(21, 2\)"):
        A.read(str(tmp_path / "bad.json"), VideoInfo(640, 480, 30.0))
    np.savez(tmp_path / "bad.npz", kp2d=kp2[:, :5])
    with pytest.raises(AdapterError, match="kp2d must have shape"):
        A.read(str(tmp_path / "bad.npz"), VideoInfo(640, 480, 30.0))


def test_tracker_never_joins_a_left_and_a_right_hand():
    from posebert_plug.types import Detection, FrameDetections, VideoInfo
    from tracking import track_detections
    frames = []
    for f in range(30):
        # the two hands swap places at frame 15 (as when hands cross): boxes alone would keep positions
        xl, xr = (100, 300) if f < 15 else (300, 100)
        frames.append(FrameDetections(f, [Detection(f, box=[xl, 100, xl + 80, 180], side="left"),
                                          Detection(f, box=[xr, 100, xr + 80, 180], side="right")]))
    tracks = track_detections(frames, VideoInfo(640, 480, 30.0))
    for t in tracks:
        assert t.side in ("left", "right")
    # no track mixes sides: each track's observed boxes jump exactly where its side's hand jumped
    assert {t.side for t in tracks} == {"left", "right"}
    for t in tracks:
        x = t.boxes[t.observed, 0]
        expected = [100 if (f < 15) == (t.side == "left") else 300 for f in t.frames[t.observed]]
        assert np.allclose(x, expected)


def test_generated_hand_cache_trains(tmp_path, tiny_size):
    """posebert-data hands + posebert-train --preset kp3d-hand21 for a few steps writes a loadable model."""
    from posebert_plug.mocap.dataset import main as data_main
    from posebert_plug.presets import load_model
    from posebert_plug.train import main as train_main
    assert data_main(["hands", "--out", str(tmp_path / "c"), "--train-clips", "4", "--val-clips", "2",
                      "--frames", "80"]) == 0
    assert train_main(["--preset", "kp3d-hand21", "--cache", str(tmp_path / "c"), "--steps", "3", "--batch", "4",
                       "--size", tiny_size, "--val-every", "3", "--out", str(tmp_path / "run")]) == 0
    m = load_model("kp3d-hand21", checkpoint=str(tmp_path / "run" / "model.pt"))
    assert m.num_joints == 16 and m.preset.name == "kp3d-hand21"
    # a fine-tune keeps the start mode its weights were trained with unless told otherwise
    args = ["--preset", "kp3d-hand21", "--cache", str(tmp_path / "c"), "--steps", "1", "--batch", "4", "--val-every", "1",
            "--size", tiny_size]
    assert train_main(args + ["--init-masked", "interp", "--out", str(tmp_path / "a")]) == 0
    assert train_main(args + ["--init", str(tmp_path / "a" / "model.pt"), "--out", str(tmp_path / "b")]) == 0
    assert load_model("kp3d-hand21", checkpoint=str(tmp_path / "b" / "model.pt")).config["init_masked"] == "interp"
    # ... and so does a resumed run
    assert train_main(args[:5] + ["2"] + args[6:] + ["--out", str(tmp_path / "b")]) == 0
    assert load_model("kp3d-hand21", checkpoint=str(tmp_path / "b" / "model.pt")).config["init_masked"] == "interp"
    assert m.config["init_masked"] == "smooth"


def _noisy_hand_track(hand, T=90, seed=11, drop_every=4, noise=0.008):
    from posebert_plug import synth
    from posebert_plug.presets import get_preset
    from posebert_plug.types import Detection, Track, VideoInfo
    gen = HandMotionGenerator(hand)
    R, p = gen.sequence(T, np.random.default_rng(seed))
    R, tr = synth.place_in_camera(torch.from_numpy(R)[None], torch.from_numpy(p)[None],
                                  torch.Generator().manual_seed(seed), **get_preset("kp3d-hand21").placement)
    kp = hand.pose_keypoints(R, tr, "hand21")[0].numpy()
    noisy = kp + np.random.default_rng(seed).normal(0, noise, kp.shape)
    dets = [Detection(t, kp3d=noisy[t], layout3d="hand21", side="right") for t in range(T) if t % drop_every]
    return kp, noisy, Track.from_detections(0, dets, VideoInfo(1024, 1024, 30.0))


def test_shipped_hand_preset_denoises_and_fills(hand):
    """The shipped kp3d-hand21 weights: a noisy hand track with dropped frames comes back complete,
    MANO-shaped, and closer to the truth (wrist-relative) than its input."""
    from posebert_plug.refine import refine_tracks
    kp, noisy, track = _noisy_hand_track(hand)
    out = refine_tracks([track])[0]
    assert out.preset == "kp3d-hand21" and out.side == "right"
    assert out.rotmats.shape == (len(track), 16, 3, 3) and out.joints.shape == (len(track), 21, 3)
    f = track.frames
    rel = lambda k: k - k[:, :1]
    err_out = np.linalg.norm(rel(out.joints) - rel(kp[f]), axis=-1).mean()
    obs = track.observed
    err_in = np.linalg.norm(rel(noisy[f][obs]) - rel(kp[f][obs]), axis=-1).mean()
    assert err_out < err_in, (err_out, err_in)


def test_left_hand_track_mirrors_the_right_result(hand):
    from posebert_plug.refine import refine_tracks
    from posebert_plug.types import Detection, Track, VideoInfo
    kp, noisy, track = _noisy_hand_track(hand, T=40)
    mirrored = [Detection(d, kp3d=noisy[d] * [-1, 1, 1], layout3d="hand21", side="left")
                for d in track.frames[track.observed]]
    right = refine_tracks([track])[0]
    left = refine_tracks([Track.from_detections(0, mirrored, VideoInfo(1024, 1024, 30.0))])[0]
    assert left.side == "left"
    assert np.allclose(left.joints, right.joints * [-1, 1, 1], atol=1e-4)


def test_cli_mediapipe_hands_on_the_bundled_clip(tmp_path, capsys):
    """posebert-refine with the live MediaPipe Hands estimator renders hand meshes and writes results
    (in-process: the end-to-end child process of the hand path is the online demo below)."""
    import os
    from posebert_plug.cli import refine_main
    from posebert_plug.types import load_tracks
    clip = os.path.join(os.path.dirname(__file__), "..", "examples", "hand_clip.mp4")
    rc = refine_main([clip, "--estimator", "mediapipe-hands", "--out", str(tmp_path / "o"), "--max-frames", "20",
                      "--quiet"])
    assert rc == 0, capsys.readouterr().err[-2000:]
    tracks = load_tracks(tmp_path / "o" / "results.npz")
    assert len(tracks) == 1 and tracks[0].side == "right" and tracks[0].joints.shape[1:] == (21, 3)
    assert (tmp_path / "o" / "overlay.mp4").stat().st_size > 10_000
    assert len(list((tmp_path / "o" / "bvh").glob("track_000_frame_*.bvh"))) == 1


def test_online_hand_demo_streams_joint_angles(tmp_path):
    """examples/hand_online_demo.py on the bundled clip: JSON lines of per-finger angles, latency summary.
    A true end-to-end run: the script in a child process, live MediaPipe Hands, streaming refinement."""
    import os
    import subprocess
    import sys
    demo = os.path.join(os.path.dirname(__file__), "..", "examples", "hand_online_demo.py")
    out = tmp_path / "stream.jsonl"
    r = subprocess.run([sys.executable, demo, "--source", os.path.join(os.path.dirname(demo), "hand_clip.mp4"),
                        "--max-frames", "20", "--ahead", "3", "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "median refinement latency" in r.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) >= 15 and rows[0]["side"] == "right" and rows[0]["ahead"] == 3
    assert set(rows[0]["fingers_deg"]) == {"thumb", "index", "middle", "ring", "pinky"}
    assert all(len(v) == 3 for v in rows[0]["fingers_deg"].values())
