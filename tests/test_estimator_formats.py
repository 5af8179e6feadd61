"""Issue 20 (real estimator files) and the adapter side of issue 19 (bad numbers, bad structure).

Each fixture builder writes a small file the way the estimator's own writing code does (named in its
docstring); each adapter test checks frames (0-based video frames), units, and that the adapted root
projects where the estimator put it (with the focal the adapter returns).
"""
import json
import os
import pickle

import joblib
import numpy as np
import pytest
import roma
import torch

import adapters
from adapters import AdapterError, AdapterWarning
from adapters.smpl_estimators import SMPL_REST_PELVIS, SMPLX_REST_PELVIS
from posebert_plug.skeletons import get_skeleton, to_coco17
from posebert_plug.types import Track, VideoInfo

W, H = 1280, 720
V = VideoInfo(W, H, 30)


def _pix(p, f):
    """Pinhole projection, principal point at the image centre: (..., 3) -> (..., 2) px."""
    p = np.asarray(p, float)
    return np.stack([f * p[..., 0] / p[..., 2] + W / 2, f * p[..., 1] / p[..., 2] + H / 2], -1)


def _back(px, z, f):
    """The camera-frame point at depth z that projects to pixel px."""
    return np.array([(px[0] - W / 2) * z / f, (px[1] - H / 2) * z / f, z])


def _read(name, path, video=V):
    return adapters.get(name)().read(str(path), video)


def _dets(out):
    return [d for f in out for d in f.detections]


def _rot(n, seed=0):
    return roma.rotvec_to_rotmat(torch.as_tensor(np.random.default_rng(seed).normal(0, 0.2, (n, 24, 3)))).numpy()


# ---- fixture builders, after the estimators' own writing code ---------------------------------------

def hybrik_res(path, frames=(0, 1, 2, 3), prefix="clip", widths=None, centres=None):
    """HybrIK scripts/demo_video.py (the ``res_db`` dict of per-frame lists, ``pk.dump`` with --save-pk):
    frames come from ``ffmpeg -i video <out>/raw_images/<name>-%06d.png`` (numbered from 1); transl is
    ``pred_cam_root`` for focal 1000 * bbox width / 256. The root is placed on each box's centre."""
    N = len(frames)
    rng = np.random.default_rng(1)
    bw = np.asarray(widths if widths is not None else np.linspace(180, 260, N), float)
    c = np.asarray(centres if centres is not None else [[400 + 30 * i, 300 + 5 * i] for i in range(N)], float)
    bbox = np.stack([c[:, 0] - bw / 2, c[:, 1] - bw / 2, c[:, 0] + bw / 2, c[:, 1] + bw / 2], 1)
    f = 1000 * bw / 256
    z = rng.uniform(3, 6, N)
    transl = np.stack([_back(c[i], z[i], f[i]) for i in range(N)])
    d = {"pred_xyz_17": np.zeros((N, 17, 3)), "pred_xyz_29": rng.normal(0, 0.2, (N, 29, 3)),
         "pred_xyz_24_struct": np.zeros((N, 24, 3)), "pred_uvd": rng.uniform(-0.5, 0.5, (N, 29, 3)),
         "pred_thetas": _rot(N).reshape(N, 216), "pred_betas": np.zeros((N, 10)), "pred_phi": np.zeros((N, 23, 2)),
         "pred_cam_root": transl, "transl": transl, "pred_scores": rng.uniform(0.0002, 0.125, (N, 29, 1)),
         "bbox": bbox, "height": np.full(N, H), "width": np.full(N, W),
         "img_path": [f"out/raw_images/{prefix}-{k + 1:06d}.png" for k in frames]}
    with open(path, "wb") as fh:
        pickle.dump(d, fh)
    return d


def vibe_output(path, tracks):
    """VIBE demo.py: ``joblib.dump(vibe_results, 'vibe_output.pkl')``, a dict by track id of per-track arrays;
    ``tracks``: {tid: (frame_ids, box sizes)}. The crop camera [s, tx, ty] is SPIN's (focal 5000 on 224 px)."""
    rng = np.random.default_rng(2)
    out = {}
    for tid, (fids, size) in tracks.items():
        T = len(fids)
        cx, cy = rng.uniform(300, 1000, T), rng.uniform(250, 450, T)
        out[tid] = {"pred_cam": np.column_stack([rng.uniform(0.8, 1.1, T), rng.normal(0, 0.05, (T, 2))]),
                    "orig_cam": np.zeros((T, 4)), "verts": np.zeros((T, 10, 3)),
                    "pose": rng.normal(0, 0.2, (T, 72)), "betas": np.zeros((T, 10)),
                    "joints3d": np.zeros((T, 49, 3)), "joints2d_img_coord": rng.uniform(0, 700, (T, 49, 2)),
                    "bboxes": np.column_stack([cx, cy, np.full(T, size), np.full(T, size)]),
                    "frame_ids": np.asarray(fids)}
    joblib.dump(out, path)
    return out


def phalp_pkl(path, people, frames=3):
    """4D-Humans track.py / PHALP ``joblib.dump(final_visuals_dic, 'demo_<video>.pkl', compress=3)``: per frame
    path, lists aligned with ``tid``; ``camera`` is the translation for focal 5000 * max(H, W) / 256;
    ``2d_joints`` (90,) in [0, 1] of the padded square; ``3d_joints`` (45, 3) without the translation.
    ``people``: {tid: (box centre px, box size px, depth m)}."""
    f = 5000 * max(W, H) / 256
    S = max(W, H)
    pad = np.array([(S - W) // 2, (S - H) // 2])
    rng = np.random.default_rng(3)
    d = {}
    for t in range(frames):
        fr = {k: [] for k in ("tid", "bbox", "smpl", "camera", "conf", "2d_joints", "3d_joints")}
        for tid, (c, size, z) in people.items():
            c = np.asarray(c, float) + [5 * t, 0]
            cam = _back(c, z, f)
            j3 = rng.normal(0, 0.3, (45, 3))
            j2 = (_pix(j3 + cam, f) + pad) / S
            fr["tid"].append(tid)
            fr["bbox"].append(np.array([c[0] - size / 2, c[1] - size, size, 2 * size]))
            fr["smpl"].append({"global_orient": np.eye(3)[None], "body_pose": np.tile(np.eye(3), (23, 1, 1)),
                               "betas": np.zeros(10)})
            fr["camera"].append(cam)
            fr["conf"].append(0.95)
            fr["2d_joints"].append(j2.reshape(-1))
            fr["3d_joints"].append(j3)
        fr.update(tracked_ids=list(people), time=t, shot=0, size=[H, W])
        d[f"outputs/_DEMO/clip/img/{t + 1:06d}.jpg"] = fr
    joblib.dump(d, path, compress=3)
    return d, f


def alphapose_json(path, K=26, frames=(0, 1, 3)):
    """AlphaPose alphapose/utils/pPose_nms.py ``write_json``: one row per person with ``image_id`` the frame's
    file name (the video loader names frame i "<i>.jpg"), 3K flat keypoints, the pose-NMS proposal ``score``
    (above 1), ``box`` [x, y, w, h] and the tracker's ``idx``."""
    rng = np.random.default_rng(4)
    rows = []
    for fr in frames:
        for idx, x0 in ((1, 200.0), (2, 800.0)):
            kp = np.column_stack([x0 + rng.uniform(0, 150, K), rng.uniform(200, 600, K), rng.uniform(0.5, 1.0, K)])
            rows.append({"image_id": f"{fr}.jpg", "category_id": 1, "keypoints": kp.ravel().tolist(),
                         "score": float(rng.uniform(2.0, 3.2)), "box": [x0, 200.0, 150.0, 400.0],
                         "idx": [float(idx)]})   # as in MotionBERT's example/1/alphapose-results.json: [0.0]
    json.dump(rows, open(path, "w"))
    return rows


def openpose_folder(folder, frames=(0, 1, 2, 5)):
    """OpenPose --write_json (doc/02_output.md): one ``<video>_<frame:012d>_keypoints.json`` per frame (0-based)
    with ``people[].pose_keypoints_2d`` = 25 x (x, y, confidence) in BODY_25 order, (0, 0, 0) when missing."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(5)
    kps = {}
    for fr in frames:
        kp = np.column_stack([rng.uniform(300, 500, 25), rng.uniform(100, 600, 25), rng.uniform(0.3, 0.9, 25)])
        kp[20] = 0   # a missing keypoint (left small toe)
        kps[fr] = kp
        people = [{"person_id": [-1], "pose_keypoints_2d": kp.ravel().tolist(), "face_keypoints_2d": [],
                   "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": [], "pose_keypoints_3d": [],
                   "face_keypoints_3d": [], "hand_left_keypoints_3d": [], "hand_right_keypoints_3d": []}]
        json.dump({"version": 1.3, "people": people},
                  open(os.path.join(folder, f"clip_{fr:012d}_keypoints.json"), "w"))
    return kps


def wham_pkl(path, tracks):
    """WHAM demo.py ``run(..., save_pkl=True)``: ``joblib.dump(results, 'wham_output.pkl')``, a dict by subject id
    with pose (T, 72) (root in the camera frame), trans = trans_cam - offset (SMPL's transl, camera frame),
    pose_world, trans_world, betas, verts, frame_ids. Camera: focal sqrt(W^2 + H^2) (compute_cam_intrinsics).
    ``tracks``: {tid: (frame_ids, pelvis pixel, depth)}."""
    f = np.hypot(W, H)
    rng = np.random.default_rng(6)
    res = {}
    for tid, (fids, px, z) in tracks.items():
        T = len(fids)
        pelvis = np.stack([_back(np.asarray(px, float) + [3 * i, 0], z, f) for i in range(T)])
        res[tid] = {"pose": rng.normal(0, 0.2, (T, 72)), "trans": pelvis - SMPL_REST_PELVIS,
                    "pose_world": rng.normal(0, 0.2, (T, 72)), "trans_world": rng.normal(0, 1, (T, 3)),
                    "betas": np.zeros((T, 10)), "verts": np.zeros((T, 20, 3)), "frame_ids": np.asarray(fids)}
    joblib.dump(res, path)
    return res, f


def gvhmr_pt(path, L=6, px=(700.0, 380.0), z=4.0):
    """GVHMR tools/demo/demo.py: ``torch.save(pred, paths.hmr4d_results)`` with pred from DemoPL.predict:
    smpl_params_incam / smpl_params_global {global_orient (L,3), body_pose (L,63), betas (L,10), transl (L,3)}
    (SMPL-X), K_fullimg (L,3,3) = estimate_K(W, H) (focal sqrt(W^2 + H^2)), net_outputs."""
    f = float(np.hypot(W, H))
    K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]]).float().repeat(L, 1, 1)
    pelvis = np.stack([_back(np.asarray(px) + [4 * i, 0], z, f) for i in range(L)])
    incam = {"global_orient": torch.zeros(L, 3), "body_pose": torch.randn(L, 63) * 0.1,
             "betas": torch.zeros(L, 10), "transl": torch.as_tensor(pelvis - SMPLX_REST_PELVIS).float()}
    pred = {"smpl_params_global": {k: v.clone() for k, v in incam.items()}, "smpl_params_incam": incam,
            "K_fullimg": K, "net_outputs": {"model_output": {"pred_x": torch.zeros(1, L, 151)}}}
    torch.save(pred, path)
    return pelvis, f


def motionbert_x3d(path, T=8, scale=0.6):
    """MotionBERT infer_wild.py: ``np.save('X3D.npy', results_all)``, (T, 17, 3) H36M-17 with the root zeroed
    (rootrel), in normalised image units (``scale`` of a metric skeleton here)."""
    rng = np.random.default_rng(7)
    sk = get_skeleton("h36m17")
    base = np.zeros((17, 3))
    for c in sk.traversal[1:]:
        base[c] = base[sk.parents[c]] + rng.normal(0, 0.15, 3) + [0, -0.1, 0]
    k = np.stack([base + rng.normal(0, 0.01, (17, 3)) for _ in range(T)]) * scale
    k[:, 0] = 0
    np.save(path, k.astype(np.float32))
    return k


def mmpose_3d_json(path, frames=4):
    """mmpose demo/body3d_pose_lifter_demo.py --save-predictions: ``{meta_info, instance_info: [{frame_id
    (1-based), instances: split_instances(...)}]}`` with keypoints = -kp[..., [0, 2, 1]] and the height rebased."""
    rng = np.random.default_rng(8)
    cam = rng.normal(0, 0.3, (frames, 17, 3))
    cam -= cam[:, :1]
    demo = -cam[..., [0, 2, 1]]
    demo[..., 2] -= demo[..., 2].min(-1, keepdims=True)
    info = [{"frame_id": t + 1, "instances": [{"keypoints": demo[t].tolist(), "keypoint_scores": [0.9] * 17}]}
            for t in range(frames)]
    json.dump({"meta_info": {"dataset_name": "h36m"}, "instance_info": info}, open(path, "w"))
    return cam


# ---- per-format tests ---------------------------------------------------------------------------------

def test_hybrik_frames_are_1_based_file_numbers_and_roots_land_on_the_boxes(tmp_path):
    d = hybrik_res(tmp_path / "res.pk", frames=(0, 1, 2, 4), widths=[120, 200, 260, 330])
    out = _read("hybrik", tmp_path / "res.pk")
    assert [f.frame for f in out] == [0, 1, 2, 4]           # clip-000001.png is video frame 0
    for k, det in enumerate(_dets(out)):
        centre = (d["bbox"][k, :2] + d["bbox"][k, 2:]) / 2
        assert np.abs(_pix(det.transl, out.focal_px) - centre).max() < 5
        assert np.allclose(det.kp3d, d["pred_xyz_29"][k] * 2.2, atol=1e-5)       # metres
    # Raw heatmap maxima (0.0002-0.125) made relative: most keypoints pass the 0.2 confidence threshold.
    conf = np.stack([det.kp2d_conf for det in _dets(out)])
    assert conf.max() <= 1 and (conf >= 0.2).mean() > 0.7
    assert (d["pred_scores"] >= 0.2).mean() == 0                  # as given they would all be masked


def test_hybrik_refuses_a_file_mixing_two_videos(tmp_path):
    d = hybrik_res(tmp_path / "res.pk")
    d["img_path"][2] = "out/raw_images/other-000003.png"
    pickle.dump(d, open(tmp_path / "mixed.pk", "wb"))
    with pytest.raises(AdapterError, match="mixes frames of 2 videos.*'clip-'.*'other-'"):
        _read("hybrik", tmp_path / "mixed.pk")


def test_vibe_two_people_of_different_box_sizes_project_onto_their_own_boxes(tmp_path):
    tr = vibe_output(tmp_path / "vibe_output.pkl", {1: ([0, 1, 2, 3], 90.0), 7: ([1, 2, 3, 5], 420.0)})
    v = VideoInfo(W, H, 30)
    out = _read("vibe", tmp_path / "vibe_output.pkl", v)
    assert v.focal_px is None and out.focal_px > 0
    assert [f.frame for f in out] == [0, 1, 2, 3, 5]
    n = 0
    for det in _dets(out):
        t = tr[det.track_id]
        i = list(t["frame_ids"]).index(det.frame)
        s, tx, ty = t["pred_cam"][i]
        cx, cy, w, h = t["bboxes"][i]
        expected = np.array([cx + s * tx * w / 2, cy + s * ty * w / 2])   # where VIBE's crop camera puts the root
        assert np.abs(_pix(det.transl, out.focal_px) - expected).max() < 5, det.track_id
        assert det.kp2d.shape == (17, 2) and det.layout2d == "coco17"
        n += 1
    assert n == 8


def test_phalp_two_people_project_onto_their_boxes_and_bring_their_joints(tmp_path):
    people = {3: ((300.0, 400.0), 80.0, 12.0), 9: ((900.0, 350.0), 300.0, 3.5)}
    d, f = phalp_pkl(tmp_path / "demo_clip.pkl", people)
    out = _read("phalp", tmp_path / "demo_clip.pkl")
    assert out.focal_px == pytest.approx(f)
    assert [f_.frame for f_ in out] == [0, 1, 2]
    for det in _dets(out):
        c = np.asarray(people[det.track_id][0]) + [5 * det.frame, 0]
        assert np.abs(_pix(det.transl, out.focal_px) - c).max() < 5
        # 2D joints (COCO-17 from BODY_25) in pixels, consistent with the 3D joints projected by PHALP's camera
        assert np.abs(_pix(det.kp3d, f)[to_coco17("body25")] - det.kp2d).max() < 0.5
        assert det.layout2d == "coco17" and det.layout3d == "body25"


def test_alphapose_halpe26_file_names_scores_and_track_ids(tmp_path):
    rows = alphapose_json(tmp_path / "alphapose-results.json", K=26)
    out = _read("alphapose", tmp_path / "alphapose-results.json")
    assert [f.frame for f in out] == [0, 1, 3]
    dets = _dets(out)
    assert sorted({d.track_id for d in dets}) == [1, 2]
    d0 = dets[0]
    kp = np.asarray(rows[0]["keypoints"]).reshape(26, 3)
    assert np.allclose(d0.kp2d, kp[:17, :2], atol=1e-3)          # Halpe-26 starts with COCO-17
    assert np.allclose(d0.box, [200, 200, 350, 600])              # [x, y, w, h] -> xyxy
    assert all(0 < d.score <= 1 for d in dets)                    # proposal scores above 1, rescaled
    alphapose_json(tmp_path / "coco.json", K=17)
    assert len(_dets(_read("alphapose", tmp_path / "coco.json"))) == 6


def test_openpose_folder_body25_to_coco17(tmp_path):
    kps = openpose_folder(tmp_path / "json")
    out = _read("openpose", tmp_path / "json")
    assert [f.frame for f in out] == [0, 1, 2, 5]
    det = out[3].detections[0]
    kp = kps[5]
    assert np.allclose(det.kp2d[get_skeleton("coco17").index("left_shoulder")], kp[5, :2], atol=1e-3)
    assert np.allclose(det.kp2d[get_skeleton("coco17").index("right_ankle")], kp[11, :2], atol=1e-3)
    single = _read("openpose", tmp_path / "json" / "clip_000000000002_keypoints.json")
    assert [f.frame for f in single] == [2]


def test_wham_camera_frame_translation_projects_at_the_diagonal_focal(tmp_path):
    tracks = {0: ([0, 1, 2, 3], (400.0, 360.0), 5.0), 1: ([2, 3, 4], (950.0, 330.0), 8.0)}
    _, f = wham_pkl(tmp_path / "wham_output.pkl", tracks)
    out = _read("wham", tmp_path / "wham_output.pkl")
    assert out.focal_px == pytest.approx(f) and [x.frame for x in out] == [0, 1, 2, 3, 4]
    for det in _dets(out):
        fids, px, _ = tracks[det.track_id]
        expected = np.asarray(px) + [3 * fids.index(det.frame), 0]
        assert np.abs(_pix(det.transl, out.focal_px) - expected).max() < 5


def test_gvhmr_torch_file_loads_weights_only_and_projects(tmp_path):
    pelvis, f = gvhmr_pt(tmp_path / "hmr4d_results.pt")
    out = _read("gvhmr", tmp_path / "hmr4d_results.pt")
    assert [x.frame for x in out] == list(range(6)) and out.focal_px == pytest.approx(f)
    for det in _dets(out):
        assert np.abs(_pix(det.transl, f) - _pix(pelvis[det.frame], f)).max() < 1
        assert np.allclose(det.rotmats[22:], np.eye(3))      # SMPL-X has no SMPL hand joints: at rest


def test_gvhmr_refuses_a_pickle_of_arbitrary_classes(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    torch.save({"smpl_params_incam": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(AdapterError, match="weights_only=True"):
        _read("gvhmr", tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_motionbert_x3d_is_rescaled_to_metres(tmp_path):
    motionbert_x3d(tmp_path / "X3D.npy")
    out = _read("motionbert", tmp_path / "X3D.npy")
    dets = _dets(out)
    assert [x.frame for x in out] == list(range(8)) and dets[0].layout3d == "h36m17" and out.focal_px is None
    sk = get_skeleton("h36m17")
    bones = np.median([sum(np.linalg.norm(d.kp3d[c] - d.kp3d[p]) for c, p in sk.bones) for d in dets])
    assert bones == pytest.approx(3.99, rel=1e-3)
    assert np.allclose(dets[0].kp3d[0], 0)


def test_mmpose_3d_json_back_to_camera_axes(tmp_path):
    cam = mmpose_3d_json(tmp_path / "pred.json")
    out = _read("mmpose", tmp_path / "pred.json")
    assert [x.frame for x in out] == [0, 1, 2, 3]                # the demos number frames from 1
    dets = _dets(out)
    assert all(d.track_id == 0 for d in dets)                     # one person per frame: one track
    assert np.allclose(dets[2].kp3d, cam[2], atol=1e-5)


def test_mmpose_wholebody_and_per_image_folder(tmp_path):
    rng = np.random.default_rng(9)
    kp = rng.uniform(0, 600, (133, 2))
    (tmp_path / "preds").mkdir()
    for i in (1, 2, 4):   # frames extracted by ffmpeg: 000001.jpg is video frame 0
        json.dump([{"keypoints": kp.tolist(), "keypoint_scores": [5.0] * 133, "bbox": [[1, 2, 300, 400]],
                    "bbox_score": 0.9}], open(tmp_path / "preds" / f"{i:06d}.json", "w"))
    out = _read("mmpose", tmp_path / "preds")
    assert [x.frame for x in out] == [0, 1, 3]
    det = out[0].detections[0]
    assert np.allclose(det.kp2d, kp[:17], atol=1e-3) and det.layout2d == "coco17"
    assert np.allclose(det.kp2d_conf, 1.0)                        # SimCC scores above 1, made relative


def test_rtmlib_npz_padded_people(tmp_path):
    T, P = 5, 2
    rng = np.random.default_rng(10)
    kp = rng.uniform(0, 700, (T, P, 26, 2))
    sc = rng.uniform(0.2, 3.0, (T, P, 26))
    sc[2, 1] = 0      # padding: nobody second in frame 2
    np.savez(tmp_path / "rtm.npz", keypoints=kp, scores=sc, frame_ids=np.arange(10, 15))
    out = _read("rtmlib", tmp_path / "rtm.npz")
    assert [x.frame for x in out] == [10, 11, 12, 13, 14]
    assert len(out[2].detections) == 1
    assert np.allclose(out[0].detections[1].kp2d, kp[0, 1, :17], atol=1e-3)


@pytest.mark.parametrize("name, build", [
    ("hybrik", lambda p: hybrik_res(p / "res.pk") and p / "res.pk"),
    ("vibe", lambda p: vibe_output(p / "v.pkl", {1: (list(range(6)), 200.0)}) and p / "v.pkl"),
    ("phalp", lambda p: phalp_pkl(p / "d.pkl", {1: ((500.0, 300.0), 100.0, 5.0)}) and p / "d.pkl"),
    ("alphapose", lambda p: alphapose_json(p / "a.json") and p / "a.json"),
    ("openpose", lambda p: openpose_folder(p / "op") and p / "op"),
    ("wham", lambda p: wham_pkl(p / "w.pkl", {0: ([0, 1, 2], (500.0, 300.0), 5.0)}) and p / "w.pkl"),
    ("gvhmr", lambda p: gvhmr_pt(p / "g.pt") and p / "g.pt"),
    ("motionbert", lambda p: motionbert_x3d(p / "X3D.npy") is not None and p / "X3D.npy"),
    ("mmpose", lambda p: mmpose_3d_json(p / "m.json") is not None and p / "m.json"),
])
def test_every_format_reads_through_the_pipeline(tmp_path, name, build):
    """Pipeline.detect is what posebert-refine --estimator NAME --estimator-output FILE runs."""
    from posebert_plug.pipeline import Pipeline
    path = build(tmp_path)
    p = Pipeline(estimator=name, estimator_output=str(path), progress=False)
    video = VideoInfo(W, H, 30, num_frames=20)
    frames = p.detect("unused.mp4", video)
    assert sum(len(f) for f in frames) > 0 and p.warnings == []
    assert video.focal_px == frames.focal_px                      # the pipeline takes the camera the adapter returns
    assert all(0 <= f.frame < 20 for f in frames)


# ---- issue 19: one bad number or entry ----------------------------------------------------------------

def test_hybrik_inf_box_in_one_frame_does_not_poison_the_others(tmp_path):
    d = hybrik_res(tmp_path / "res.pk", frames=(0, 1, 2, 3, 4))
    d["bbox"][2, 2] = np.inf
    pickle.dump(d, open(tmp_path / "inf.pk", "wb"))
    with pytest.warns(AdapterWarning, match="1 of 5 frames"):
        out = _read("hybrik", tmp_path / "inf.pk")
    assert np.isfinite(out.focal_px) and [f.frame for f in out] == [0, 1, 3, 4]


def test_duplicated_frames_keep_the_first(tmp_path):
    d = hybrik_res(tmp_path / "res.pk", frames=(0, 1, 1, 2))
    with pytest.warns(AdapterWarning, match="repeat a track's frame"):
        out = _read("hybrik", tmp_path / "res.pk")
    assert [len(f) for f in out] == [1, 1, 1]
    assert np.allclose(out[1].detections[0].rotmats, d["pred_thetas"][1].reshape(24, 3, 3), atol=1e-6)
    vibe_output(tmp_path / "v.pkl", {1: ([0, 1, 1, 2], 150.0)})
    with pytest.warns(AdapterWarning, match="repeat a track's frame"):
        out = _read("vibe", tmp_path / "v.pkl")
    Track.from_detections(1, _dets(out), V)       # builds: no two detections in one frame


def test_empty_vibe_track_is_dropped_with_a_warning(tmp_path):
    tr = vibe_output(tmp_path / "v.pkl", {1: ([0, 1, 2], 150.0)})
    tr[2] = {k: v[:0] for k, v in tr[1].items()}
    joblib.dump(tr, tmp_path / "v.pkl")
    with pytest.warns(AdapterWarning, match=r"track 2\]: an empty track"):
        out = _read("vibe", tmp_path / "v.pkl")
    assert {d.track_id for d in _dets(out)} == {1}


@pytest.mark.parametrize("value, message", [(1e9, "not a frame number in 0..10000000"), (1e12, "0..10000000"),
                                            (float("nan"), "nan at entry 1 is not a frame number")])
def test_absurd_frame_ids_are_refused_before_allocating(tmp_path, value, message):
    tr = vibe_output(tmp_path / "v.pkl", {1: ([0, 1, 2], 150.0)})
    tr[1]["frame_ids"] = np.array([0, value, 2])
    joblib.dump(tr, tmp_path / "v.pkl")
    with pytest.raises(AdapterError, match=message) as e:
        _read("vibe", tmp_path / "v.pkl", VideoInfo(W, H, 30))
    assert str(tmp_path / "v.pkl") in str(e.value) and "-9223372036854775808" not in str(e.value)
    rows = [{"frame_id": 0, "instances": []}, {"frame_id": 10 ** 12, "instances": []}]
    json.dump(rows, open(tmp_path / "m.json", "w"))
    with pytest.raises(AdapterError, match="not a frame number"):
        _read("mmpose", tmp_path / "m.json", VideoInfo(W, H, 30))


def test_frames_past_the_video_are_dropped_with_a_warning(tmp_path):
    tr = vibe_output(tmp_path / "v.pkl", {1: ([0, 1, 2, 900_000], 150.0)})
    with pytest.warns(AdapterWarning, match="up to frame 900000, but the video declares 40 frames"):
        out = _read("vibe", tmp_path / "v.pkl", VideoInfo(W, H, 30, num_frames=40))
    assert [f.frame for f in out] == [0, 1, 2] and len(tr[1]["frame_ids"]) == 4


def test_keypoints_far_outside_the_frame_warn(tmp_path):
    alphapose_json(tmp_path / "a.json")
    with pytest.warns(AdapterWarning, match="well outside the 320x180 frame"):
        _read("alphapose", tmp_path / "a.json", VideoInfo(320, 180, 30))


def test_hand21_2d_only_and_nan_frame(tmp_path):
    rng = np.random.default_rng(11)
    k2 = rng.uniform(100, 300, (6, 21, 2))
    np.savez(tmp_path / "h2d.npz", frame=np.arange(6), kp2d=k2, side=np.array(["right"] * 6))
    with pytest.warns(AdapterWarning, match="2D keypoints only"):
        out = _read("hand21", tmp_path / "h2d.npz")
    k3 = out[0].detections[0].kp3d          # a flat, camera-facing hand, so the kp3d-hand21 preset can run
    assert len(out) == 6 and np.allclose(k3[:, 2], 0) and np.allclose(k3[0], 0)
    assert np.linalg.norm(k3[9]) == pytest.approx(0.09, rel=0.5)
    rows = [{"frame_id": i, "instances": [{"keypoints": k2[i].tolist(), "handedness": "right"}]} for i in range(6)]
    json.dump(rows, open(tmp_path / "h2d.json", "w"))
    with pytest.warns(AdapterWarning, match="2D keypoints only"):
        assert _dets(_read("hand21", tmp_path / "h2d.json"))[0].layout3d == "hand21"
    k3 = rng.normal(0, 0.05, (6, 21, 3))
    k3[3] = np.nan
    np.savez(tmp_path / "hnan.npz", frame=np.arange(6), kp2d=k2, kp3d=k3, side=np.array(["left"] * 6))
    out = _read("hand21", tmp_path / "hnan.npz")
    t = Track.from_detections(0, _dets(out), V)       # was: "mixed keypoint layouts"
    assert t.layout3d == "hand21" and np.isnan(t.kp3d[3]).all() and np.isfinite(t.kp3d[2]).all()


def _bad_inputs(tmp_path):
    """(adapter, path, what the one-line message must say) for malformed files."""
    cases = []
    (tmp_path / "empty.npz").write_bytes(b"")
    cases.append(("hand21", tmp_path / "empty.npz", "not a readable .npz"))
    np.savez(tmp_path / "full.npz", kp2d=np.zeros((50, 21, 2)), kp3d=np.zeros((50, 21, 3)))
    raw = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    cases.append(("hand21", tmp_path / "trunc.npz", "not a readable .npz"))
    d, _ = phalp_pkl(tmp_path / "ok.pkl", {1: ((500.0, 300.0), 100.0, 5.0)}, frames=1)
    fr = next(iter(d.values()))
    joblib.dump({"f0": dict(fr, tid=[[1, 2]])}, tmp_path / "tidlist.pkl")
    cases.append(("phalp", tmp_path / "tidlist.pkl", "'tid' must be a flat list"))
    joblib.dump({"f0": dict(fr, tid=[1, 2], tracked_ids=[1, 2], conf=[0.9])}, tmp_path / "shortconf.pkl")
    cases.append(("phalp", tmp_path / "shortconf.pkl", "not aligned with tid"))
    bad_smpl = dict(fr, smpl=[{"global_orient": np.zeros(5), "body_pose": np.zeros((23, 3, 3)), "betas": np.zeros(10)}])
    joblib.dump({"f0": bad_smpl}, tmp_path / "reshape.pkl")
    cases.append(("phalp", tmp_path / "reshape.pkl", "global_orient must hold one"))
    json.dump([{"frame_id": 0, "instances": {"keypoints": []}}], open(tmp_path / "inst.json", "w"))
    cases.append(("mmpose", tmp_path / "inst.json", "'instances' must be a list"))
    json.dump([{"frame_id": 0, "instances": ["x"]}], open(tmp_path / "inst2.json", "w"))
    cases.append(("mmpose", tmp_path / "inst2.json", "an instance must be an object"))
    inst = {"keypoints": np.zeros((17, 2)).tolist(), "bbox": [[1, 2, 3]]}
    json.dump([{"frame_id": 0, "instances": [inst]}], open(tmp_path / "box.json", "w"))
    cases.append(("mmpose", tmp_path / "box.json", "bbox must be"))
    d = hybrik_res(tmp_path / "res.pk")
    d["img_path"] = d["img_path"][:2]
    pickle.dump(d, open(tmp_path / "short.pk", "wb"))
    cases.append(("hybrik", tmp_path / "short.pk", "'img_path' has 2 entries but the arrays have 4"))
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    for name in ("mmpose", "alphapose", "hand21"):
        cases.append((name, tmp_path / "deep.json", "nested too deeply"))
    (tmp_path / "notatorch.pt").write_bytes(b"garbage")
    cases.append(("gvhmr", tmp_path / "notatorch.pt", "weights_only"))
    np.save(tmp_path / "bad.npy", np.zeros((4, 16, 3)))
    cases.append(("motionbert", tmp_path / "bad.npy", "must be \\(T, 17, 3\\)"))
    return cases


def test_malformed_files_are_one_clear_error_naming_the_file(tmp_path):
    for name, path, message in _bad_inputs(tmp_path):
        with pytest.raises(AdapterError, match=message) as e:
            _read(name, path)
        assert str(path) in str(e.value) and "\n" not in str(e.value), (name, str(e.value))


def test_npz_declaring_a_huge_array_is_refused_from_its_header(tmp_path):
    import zipfile
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 21, 2)))
    header["shape"] = (10 ** 9, 21, 2)
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf:
        with zf.open("kp2d.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, header)
            f.write(b"\0" * 64)
    with pytest.raises(AdapterError, match="would take"):
        _read("hand21", tmp_path / "huge.npz")


def test_a_still_image_renamed_as_video_is_one_frame_and_the_run_says_so(tmp_path, capsys):
    from PIL import Image
    from adapters.video import probe
    Image.fromarray(np.full((H // 4, W // 4, 3), 120, np.uint8)).save(tmp_path / "still.png")
    os.replace(tmp_path / "still.png", tmp_path / "still.mp4")
    assert probe(tmp_path / "still.mp4").num_frames == 1
    hybrik_res(tmp_path / "res.pk", frames=tuple(range(40)), widths=np.full(40, 60.0),
               centres=np.tile([W / 8, H / 8], (40, 1)))
    from posebert_plug.cli import refine_main
    capsys.readouterr()
    rc = refine_main([str(tmp_path / "still.mp4"), "--estimator", "hybrik", "--estimator-output", str(tmp_path / "res.pk"),
                      "--out", str(tmp_path / "out"), "--no-render", "--quiet"])
    err = capsys.readouterr().err
    assert "single frame" in err and "up to frame 39" in err, err[-2000:]
    assert rc != 0 or "warning" in err
