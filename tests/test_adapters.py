"""Issue 6: adapters on fixture files in each estimator's exact format, camera conventions, fuzzing."""
import json
import os
import pickle

import joblib
import numpy as np
import pytest
import roma
import torch

import adapters
from adapters import AdapterError, UnsafeFileError
from conftest import needs_shared, shared_path
from posebert_plug.types import VideoInfo

W, H = 1280, 720


def _pix(p, f, cx=W / 2, cy=H / 2):
    return np.array([f * p[0] / p[2] + cx, f * p[1] / p[2] + cy])


def _adapted_pixel(det, frames):
    """Where the adapted root projects, with the focal the adapter returned for its translations."""
    return _pix(det.transl, frames.focal_px)


def test_registry():
    names = adapters.available()
    for n in ("hybrik", "spin", "vibe", "hrnet", "mmpose", "yolo", "4dhumans", "phalp", "mediapipe", "alphapose",
              "openpose", "wham", "gvhmr", "motionbert", "rtmlib"):
        assert n in names
        assert adapters.get(n).describe()
    with pytest.raises(KeyError, match="unknown estimator 'nonesuch'"):
        adapters.get("nonesuch")


def _hybrik_file(path, frames=(5, 6, 8)):
    N = len(frames)
    rng = np.random.default_rng(0)
    R = roma.rotvec_to_rotmat(torch.as_tensor(rng.normal(0, 0.3, (N, 24, 3)))).numpy()
    bw = np.array([200.0, 260.0, 180.0])[:N]
    cx, cy = np.array([500.0, 520, 560])[:N], np.array([300.0, 310, 320])[:N]
    bbox = np.stack([cx - bw / 2, cy - bw / 2, cx + bw / 2, cy + bw / 2], 1)
    transl = np.stack([rng.uniform(-0.5, 0.5, N), rng.uniform(-0.3, 0.3, N), rng.uniform(3, 6, N)], 1)
    d = {"pred_thetas": R.reshape(N, 216), "pred_betas": rng.normal(size=(N, 10)), "pred_phi": np.zeros((N, 23, 2)),
         "pred_xyz_29": rng.normal(0, 0.2, (N, 29, 3)), "pred_xyz_24_struct": np.zeros((N, 24, 3)),
         "pred_xyz_17": np.zeros((N, 17, 3)), "pred_uvd": rng.uniform(-0.5, 0.5, (N, 29, 3)),
         "pred_scores": rng.uniform(0.5, 1, (N, 29, 1)), "transl": transl, "pred_cam_root": transl,
         "bbox": bbox, "height": np.full(N, H), "width": np.full(N, W),
         # scripts/demo_video.py extracts frames with ffmpeg "-%06d.png" (counts from 1): frame f is file f + 1.
         "img_path": np.array([f"out/raw_images/image-{f + 1:06d}.png" for f in frames])}
    with open(path, "wb") as f:
        pickle.dump(d, f)
    return d


def test_hybrik_adapter(tmp_path):
    d = _hybrik_file(tmp_path / "res.pk")
    v = VideoInfo(W, H, 30)
    frames = adapters.get("hybrik")().read(tmp_path / "res.pk", v)
    assert [f.frame for f in frames] == [5, 6, 8]   # frame 7 stays missing, not shifted
    assert v.focal_px is None                       # the caller's VideoInfo is not written into
    for k, fd in enumerate(frames):
        det = fd.detections[0]
        assert np.allclose(det.rotmats, d["pred_thetas"][k].reshape(24, 3, 3), atol=1e-6)
        bw = d["bbox"][k, 2] - d["bbox"][k, 0]
        f_hybrik = 1000 * bw / 256
        # The root, projected by HybrIK's own camera, lands on the same pixel after adaptation.
        assert np.allclose(_adapted_pixel(det, frames), _pix(d["transl"][k], f_hybrik), atol=1e-3)
        # 2D keypoints: u * bw + box centre.
        cx = (d["bbox"][k, 0] + d["bbox"][k, 2]) / 2
        assert np.allclose(det.kp2d[3, 0], d["pred_uvd"][k, 3, 0] * bw + cx, atol=1e-3)
        assert np.allclose(det.kp3d, d["pred_xyz_29"][k] * 2.2, atol=1e-5)   # 2.2 m units


def test_spin_adapter(tmp_path):
    N = 3
    R = np.tile(np.eye(3), (N, 24, 1, 1))
    cam = np.array([[0.9, 0.1, -0.05], [1.1, -0.1, 0.0], [0.7, 0.0, 0.2]])
    bbox = np.array([[100, 100, 400, 400], [600, 200, 800, 400], [300, 50, 550, 300]], float)
    np.savez(tmp_path / "spin.npz", pred_rotmat=R, pred_betas=np.zeros((N, 10)), pred_camera=cam, bbox=bbox,
             frame_ids=np.array([0, 2, 3]))
    v = VideoInfo(W, H, 30)
    frames = adapters.get("spin")().read(tmp_path / "spin.npz", v)
    assert [f.frame for f in frames] == [0, 2, 3]
    for k, fd in enumerate(frames):
        s, tx, ty = cam[k]
        z = 2 * 5000 / (224 * s)
        crop_px = np.array([5000 * tx / z + 112, 5000 * ty / z + 112])
        size = bbox[k, 2] - bbox[k, 0]
        expected = bbox[k, :2] + crop_px * size / 224
        assert np.allclose(_adapted_pixel(fd.detections[0], frames), expected, atol=1e-3)


def test_vibe_adapter_multi_person_with_gaps(tmp_path):
    rng = np.random.default_rng(1)
    out = {}
    for tid, fids in ((1, [0, 1, 2, 5, 6]), (4, [3, 4, 5])):
        T = len(fids)
        out[tid] = {"pose": rng.normal(0, 0.2, (T, 72)), "betas": np.zeros((T, 10)),
                    "pred_cam": np.column_stack([rng.uniform(0.8, 1.2, T), rng.normal(0, 0.1, (T, 2))]),
                    "orig_cam": np.zeros((T, 4)), "verts": np.zeros((T, 10, 3)), "joints3d": np.zeros((T, 49, 3)),
                    "joints2d_img_coord": np.zeros((T, 49, 2)),
                    "bboxes": np.column_stack([rng.uniform(300, 900, T), rng.uniform(200, 500, T), np.full(T, 180.0),
                                               np.full(T, 200.0)]),
                    "frame_ids": np.array(fids)}
    joblib.dump(out, tmp_path / "vibe_output.pkl", compress=3)
    v = VideoInfo(W, H, 30)
    frames = adapters.get("vibe")().read(tmp_path / "vibe_output.pkl", v)
    assert [f.frame for f in frames] == [0, 1, 2, 3, 4, 5, 6]
    assert len([f for f in frames if f.frame == 5][0].detections) == 2
    d = [x for f in frames for x in f.detections if x.track_id == 1 and x.frame == 5][0]
    tr = out[1]
    s, tx, ty = tr["pred_cam"][3]
    cx, cy, bw, bh = tr["bboxes"][3]
    size = max(bw, bh)
    z = 2 * 5000 / (224 * s)
    expected = np.array([cx - size / 2, cy - size / 2]) + np.array([5000 * tx / z + 112, 5000 * ty / z + 112]) * size / 224
    assert np.allclose(_adapted_pixel(d, frames), expected, atol=1e-3)
    R = roma.rotvec_to_rotmat(torch.as_tensor(tr["pose"][3].reshape(24, 3))).numpy()
    assert np.allclose(d.rotmats, R, atol=1e-5)


def test_phalp_adapter_drops_stale_tracks(tmp_path):
    def person(x):
        return {"global_orient": np.eye(3)[None], "body_pose": np.tile(np.eye(3), (23, 1, 1)), "betas": np.zeros(10)}
    d = {}
    for t in range(3):
        d[f"frames/{t:06d}.jpg"] = {"tid": [1, 2], "tracked_ids": [1] if t == 1 else [1, 2],
                                    "bbox": [[100, 100, 50, 120], [400, 100, 60, 130]],
                                    "smpl": [person(0), person(1)], "camera": [[0.1, 0.2, 8.0], [-0.3, 0.1, 9.0]],
                                    "conf": [0.9, 0.8], "3d_joints": [np.zeros((45, 3))] * 2,
                                    "2d_joints": [np.zeros(90)] * 2, "time": t}
    joblib.dump(d, tmp_path / "demo_x.pkl", compress=3)
    v = VideoInfo(W, H, 30)
    frames = adapters.get("phalp")().read(tmp_path / "demo_x.pkl", v)
    assert [len(f.detections) for f in frames] == [2, 1, 2]   # track 2's stale entry at t=1 is dropped
    f_phalp = 5000 * max(W, H) / 256
    det = frames[0].detections[0]
    assert np.allclose(_adapted_pixel(det, frames), _pix(np.array([0.1, 0.2, 8.0]), f_phalp), atol=1e-3)


def test_mmpose_adapters(tmp_path):
    kp = np.random.default_rng(0).uniform(0, 500, (17, 2))
    inst = {"keypoints": kp.tolist(), "keypoint_scores": [0.9] * 17, "bbox": [[1, 2, 300, 400]], "bbox_score": 0.8}
    json.dump([{"frame_id": 0, "instances": [inst, inst]}, {"frame_id": 2, "instances": [inst]}],
              open(tmp_path / "inf.json", "w"))
    frames = adapters.get("mmpose")().read(tmp_path / "inf.json", VideoInfo(W, H))
    assert [f.frame for f in frames] == [0, 2] and len(frames[0].detections) == 2
    assert np.allclose(frames[0].detections[0].kp2d, kp) and np.allclose(frames[0].detections[0].box, [1, 2, 300, 400])
    json.dump({"meta_info": {}, "instance_info": [{"frame_id": 1, "instances": [inst]}, {"frame_id": 3, "instances": []}]},
              open(tmp_path / "td.json", "w"))
    frames = adapters.get("hrnet")().read(tmp_path / "td.json", VideoInfo(W, H))
    assert [f.frame for f in frames] == [0]   # 1-based frame ids of the top-down demo
    rows = [{"image_id": 4, "category_id": 1, "keypoints": np.column_stack([kp, np.full(17, 0.7)]).ravel().tolist(),
             "score": 0.9, "center": [0, 0], "scale": [1, 1]}]
    json.dump(rows, open(tmp_path / "coco.json", "w"))
    frames = adapters.get("hrnet")().read(tmp_path / "coco.json", VideoInfo(W, H))
    assert frames[0].frame == 4 and np.allclose(frames[0].detections[0].kp2d_conf, 0.7)


# ---- fuzzing --------------------------------------------------------------------------

class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/posebert_pwned",))


def _variants(tmp_path, name):
    """(path, adapter) pairs of broken inputs for every file adapter."""
    _hybrik_file(tmp_path / "ok.pk")
    good = pickle.load(open(tmp_path / "ok.pk", "rb"))
    out = []
    raw = open(tmp_path / "ok.pk", "rb").read()
    for cut in (0, 10, len(raw) // 2):
        p = tmp_path / f"{name}_trunc{cut}"
        p.write_bytes(raw[:cut])
        out.append(p)
    for mutate in ("drop", "shape", "type"):
        d = dict(good)
        if mutate == "drop":
            d.pop("pred_thetas")
        elif mutate == "shape":
            d["pred_thetas"] = np.zeros((3, 7))
        else:
            d["bbox"] = "not an array"
        p = tmp_path / f"{name}_{mutate}.pk"
        pickle.dump(d, open(p, "wb"))
        out.append(p)
    p = tmp_path / f"{name}_evil.pk"
    pickle.dump({"pred_thetas": _Evil()}, open(p, "wb"))
    out.append(p)
    p = tmp_path / f"{name}_evil_joblib.pkl"
    joblib.dump({1: {"pose": _Evil()}}, p, compress=3)
    out.append(p)
    p = tmp_path / f"{name}_list.pk"
    pickle.dump([1, 2, 3], open(p, "wb"))
    out.append(p)
    p = tmp_path / f"{name}_json.json"
    p.write_text('[{"frame_id": 0, "instances": [{"keypoints": [[1, 2]]}]}')
    out.append(p)
    p = tmp_path / f"{name}_garbage.json"
    p.write_text("{not json")
    out.append(p)
    return out


@pytest.mark.parametrize("name", ["hybrik", "spin", "vibe", "4dhumans", "mmpose"])
def test_fuzz_file_adapters(tmp_path, name):
    if os.path.exists("/tmp/posebert_pwned"):
        os.remove("/tmp/posebert_pwned")
    ad = adapters.get(name)()
    for p in _variants(tmp_path, name):
        with pytest.raises((AdapterError, UnsafeFileError, ValueError)) as e:
            ad.read(p, VideoInfo(W, H))
        assert str(p) in str(e.value) or "expected" in str(e.value) or "must" in str(e.value), str(e.value)
    assert not os.path.exists("/tmp/posebert_pwned")


def test_nan_frames_are_dropped_not_fatal(tmp_path):
    d = _hybrik_file(tmp_path / "res.pk")
    d["pred_thetas"][1] = np.nan
    pickle.dump(d, open(tmp_path / "nan.pk", "wb"))
    with pytest.warns(UserWarning, match="1 of 3 frames hold NaN"):
        frames = adapters.get("hybrik")().read(tmp_path / "nan.pk", VideoInfo(W, H))
    assert [f.frame for f in frames] == [5, 8]
    d["pred_thetas"][:] = np.nan
    pickle.dump(d, open(tmp_path / "allnan.pk", "wb"))
    with pytest.raises(AdapterError, match="all 3 frames hold NaN"):
        adapters.get("hybrik")().read(tmp_path / "allnan.pk", VideoInfo(W, H))


@needs_shared
def test_yolo_runs_offline_on_the_real_video(tmp_path):
    from adapters.video import VideoWriter, iter_frames, probe
    src = shared_path("data", "video", "vtest.avi")
    v = probe(src)
    with VideoWriter(tmp_path / "short.mp4", v.width, v.height, v.fps) as w:
        for i, im in iter_frames(src, stop=4):
            w.write(im)
    frames = list(adapters.get("yolo")(imgsz=960).run(tmp_path / "short.mp4", v))
    assert len(frames) == 4
    assert sum(len(f) for f in frames) >= 4          # several pedestrians per frame at imgsz 960
    d = frames[0].detections[0]
    assert d.kp2d.shape == (17, 2) and d.layout2d == "coco17" and 0 < d.score <= 1


def test_video_errors(tmp_path):
    from adapters.video import VideoError, probe
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        probe(tmp_path / "empty.mp4")
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(5000))   # seeded: see test_cli
    with pytest.raises(VideoError, match="not a readable video"):
        probe(tmp_path / "junk.mp4")
    with pytest.raises(VideoError, match="no such video"):
        probe(tmp_path / "nope.mp4")
    import wave
    with wave.open(str(tmp_path / "sound.wav"), "wb") as w:   # a readable container without video
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\0\0" * 800)
    with pytest.raises(VideoError, match="contains no video stream"):
        probe(tmp_path / "sound.wav")
