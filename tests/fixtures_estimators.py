"""Valid estimator files of every file adapter, for tests that need one of each (tests/test_fuzz.py).

The builders that write a format the way its estimator does live in tests/test_estimator_formats.py
and are reused from there; the formats it has no builder for (SPIN .npz, rtmlib .npz, MotionBERT .npz,
mmpose 2D inferencer JSON, hand21 .npz/JSON) are written here after the adapters' documented layouts.

``CASES``: {case name: Case(adapter, file name, kind, build)}; ``build(path)`` writes the file (or, for
kind "json-folder", the folder) at ``path``. ``kind`` says how the file is serialised, so a test can
load it, change its structure and write it back the same way (:func:`load_structure`, :func:`dump_structure`).
"""
from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from typing import Callable

import joblib
import numpy as np
import torch

from test_estimator_formats import (H, W, alphapose_json, gvhmr_pt, hybrik_res, mmpose_3d_json, motionbert_x3d,
                                    openpose_folder, phalp_pkl, vibe_output, wham_pkl)


def spin_npz(path, N=5):
    """SPIN's in-memory demo outputs saved with np.savez (as test_adapters.test_spin_adapter)."""
    rng = np.random.default_rng(20)
    cam = np.column_stack([rng.uniform(0.7, 1.1, N), rng.normal(0, 0.1, (N, 2))])
    c = np.column_stack([rng.uniform(300, 900, N), rng.uniform(200, 500, N)])
    s = rng.uniform(150, 300, N)
    bbox = np.column_stack([c - s[:, None] / 2, c + s[:, None] / 2])
    np.savez(path, pred_rotmat=np.tile(np.eye(3), (N, 24, 1, 1)), pred_betas=np.zeros((N, 10)), pred_camera=cam,
             bbox=bbox, frame_ids=np.arange(N) * 2)


def rtmlib_npz(path, T=4, P=2, K=26):
    """rtmlib ``keypoints, scores = model(frame)`` stacked per frame: (T, P, K, 2) px and (T, P, K) SimCC scores."""
    rng = np.random.default_rng(21)
    kp = rng.uniform(0, 700, (T, P, K, 2))
    sc = rng.uniform(0.2, 3.0, (T, P, K))
    sc[1, 1] = 0   # padding
    boxes = np.concatenate([kp.min(2), kp.max(2)], -1)
    np.savez(path, keypoints=kp, scores=sc, frame_ids=np.arange(T) + 1, bboxes=boxes,
             track_ids=np.tile(np.arange(P), (T, 1)))


def motionbert_npz(path, T=6):
    rng = np.random.default_rng(22)
    k = rng.normal(0, 0.2, (T, 17, 3))
    k[:, 0] = 0
    np.savez(path, X3D=k, frame_ids=np.arange(T) + 3)


def mmpose_2d_json(path, frames=3):
    """mmpose inferencer (``pred_out_dir`` of a video): [{frame_id (0-based), instances: [...]}], COCO-17."""
    rng = np.random.default_rng(23)
    rows = []
    for t in range(frames):
        insts = []
        for tid, x0 in ((0, 300.0), (1, 800.0)):
            kp = np.column_stack([x0 + rng.uniform(0, 120, 17), rng.uniform(200, 500, 17)])
            insts.append({"keypoints": kp.tolist(), "keypoint_scores": rng.uniform(0.3, 1.0, 17).tolist(),
                          "bbox": [[x0, 200.0, x0 + 120, 500.0]], "bbox_score": 0.9, "track_id": tid})
        rows.append({"frame_id": t, "instances": insts})
    json.dump(rows, open(path, "w"))


def _hand(rng, n):
    k2 = rng.uniform(100, 300, (n, 21, 2))
    k3 = rng.normal(0, 0.05, (n, 21, 3))
    return k2, k3


def hand21_npz(path, n=5):
    rng = np.random.default_rng(24)
    k2, k3 = _hand(rng, n)
    np.savez(path, frame=np.arange(n), kp2d=k2, kp3d=k3, conf=rng.uniform(0.5, 1, (n, 21)),
             side=np.array(["right"] * n), track_id=np.zeros(n, int))


def hand21_json(path, n=4):
    rng = np.random.default_rng(25)
    k2, k3 = _hand(rng, n)
    rows = [{"frame_id": i, "instances": [{"keypoints": k2[i].tolist(), "keypoint_scores": [0.9] * 21,
                                           "keypoints_3d": k3[i].tolist(), "handedness": "left"}]} for i in range(n)]
    json.dump(rows, open(path, "w"))


@dataclass(frozen=True)
class Case:
    adapter: str
    file: str
    kind: str            # pickle | joblib | joblib-z | json | json-folder | npz | npy | pt
    build: Callable


CASES = {
    "hybrik": Case("hybrik", "res.pk", "pickle", lambda p: hybrik_res(p)),
    "spin": Case("spin", "spin.npz", "npz", spin_npz),
    "vibe": Case("vibe", "vibe_output.pkl", "joblib",
                 lambda p: vibe_output(p, {1: ([0, 1, 2, 3], 150.0), 4: ([2, 3, 5], 260.0)})),
    "4dhumans": Case("4dhumans", "demo_clip.pkl", "joblib-z",
                     lambda p: phalp_pkl(p, {3: ((300.0, 400.0), 80.0, 12.0), 9: ((900.0, 350.0), 300.0, 3.5)})),
    "wham": Case("wham", "wham_output.pkl", "joblib",
                 lambda p: wham_pkl(p, {0: ([0, 1, 2, 3], (400.0, 360.0), 5.0), 1: ([2, 3, 4], (950.0, 330.0), 8.0)})),
    "gvhmr": Case("gvhmr", "hmr4d_results.pt", "pt", lambda p: gvhmr_pt(p, L=5)),
    "alphapose": Case("alphapose", "alphapose-results.json", "json", lambda p: alphapose_json(p, K=26)),
    "openpose": Case("openpose", "json", "json-folder", lambda p: openpose_folder(p, frames=(0, 1, 3))),
    "mmpose": Case("mmpose", "predictions.json", "json", mmpose_2d_json),
    "mmpose-3d": Case("mmpose", "pred_3d.json", "json", lambda p: mmpose_3d_json(p, frames=4)),
    "rtmlib": Case("rtmlib", "rtm.npz", "npz", rtmlib_npz),
    "motionbert": Case("motionbert", "X3D.npy", "npy", lambda p: motionbert_x3d(p, T=6)),
    "motionbert-npz": Case("motionbert", "X3D.npz", "npz", motionbert_npz),
    "hand21": Case("hand21", "hands.npz", "npz", hand21_npz),
    "hand21-json": Case("hand21", "hands.json", "json", hand21_json),
}


def build(case: Case, folder) -> str:
    """Write ``case``'s valid file into ``folder``; returns its path."""
    path = os.path.join(os.fspath(folder), case.file)
    case.build(path)
    return path


# ---- structure round trip: file <-> Python objects, written back the way the estimator writes --------

def load_structure(case: Case, path):
    """The file's content as Python objects (trusted: only for the valid fixtures this module writes).
    json-folder: {file name: JSON object}; npz: {key: array}; pt: tensors as numpy arrays."""
    if case.kind == "pickle":
        with open(path, "rb") as f:
            return pickle.load(f)
    if case.kind in ("joblib", "joblib-z"):
        return joblib.load(path)
    if case.kind == "json":
        with open(path) as f:
            return json.load(f)
    if case.kind == "json-folder":
        return {n: json.load(open(os.path.join(path, n))) for n in sorted(os.listdir(path))}
    if case.kind == "npz":
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    if case.kind == "npy":
        return np.load(path)
    if case.kind == "pt":
        return _tensors_to_numpy(torch.load(path, weights_only=True))
    raise ValueError(case.kind)


def dump_structure(case: Case, obj, path):
    """Write ``obj`` (possibly malformed) at ``path`` the way ``case``'s estimator writes its file."""
    if case.kind == "pickle":
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    elif case.kind == "joblib":
        joblib.dump(obj, path)
    elif case.kind == "joblib-z":
        joblib.dump(obj, path, compress=3)
    elif case.kind == "json":
        with open(path, "w") as f:
            json.dump(obj, f)
    elif case.kind == "json-folder":
        os.makedirs(path, exist_ok=True)
        if not isinstance(obj, dict):      # the folder's {name: content} itself replaced: one odd file
            obj = {"clip_000000000000_keypoints.json": obj}
        for name, content in obj.items():
            with open(os.path.join(path, _file_name(name)), "w") as f:
                json.dump(content, f)
    elif case.kind == "npz":
        arrays = obj if isinstance(obj, dict) else {"arr_0": obj}
        with open(path, "wb") as f:
            np.savez(f, **{str(k): _as_array(v) for k, v in arrays.items()})
    elif case.kind == "npy":
        with open(path, "wb") as f:
            np.save(f, _as_array(obj))
    elif case.kind == "pt":
        torch.save(_numpy_to_tensors(obj), path)
    else:
        raise ValueError(case.kind)


def _as_array(v) -> np.ndarray:
    """What np.savez stores for ``v``: its array, or a one-element object array when it has no regular shape."""
    try:
        return np.asarray(v)
    except (TypeError, ValueError):
        a = np.empty(1, dtype=object)
        a[0] = v
        return a


def _file_name(name) -> str:
    name = os.path.basename(str(name)) or "x"
    return name if name.endswith(".json") else name + ".json"


def _tensors_to_numpy(obj):
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: _tensors_to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_tensors_to_numpy(v) for v in obj)
    return obj


def _numpy_to_tensors(obj):
    """Numeric arrays back to tensors (as GVHMR saves them); other arrays stay numpy (refused by weights_only)."""
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "biufc":
        return torch.as_tensor(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {k: _numpy_to_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_numpy_to_tensors(v) for v in obj)
    return obj


__all__ = ["CASES", "Case", "W", "H", "build", "load_structure", "dump_structure"]
