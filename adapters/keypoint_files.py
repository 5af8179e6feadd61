"""Keypoint files of 2D and 3D estimators: AlphaPose, OpenPose, rtmlib arrays, MotionBERT / VideoPose3D arrays.

2D bodies come out as COCO-17 (the mappings from BODY_25, Halpe-26 and COCO-WholeBody-133 are
``posebert_plug.skeletons.to_coco17``) for the ``kp2d-coco17`` preset; 3D keypoints as H36M-17,
root-relative metres, for ``kp3d-h36m17``.
"""
from __future__ import annotations

import os
import re

import numpy as np

from posebert_plug.types import Detection
from .base import (MAX_ARRAY_BYTES, Adapter, AdapterError, Notes, brief, finish, frame_indices, load_json,
                   load_npz, numeric, one_frame_index, register, relative_scores)
from .mmpose import body_layout, coco17_from, metres_from_bones


def _track_id(v, path, where):
    """AlphaPose's ``idx`` (an int, a float or a one-element list) / OpenPose's ``person_id`` ([-1] = none)."""
    if v is None:
        return None
    a = np.asarray(v, dtype=object).reshape(-1)
    if a.size == 0:
        return None
    try:
        x = float(a[0])
    except (TypeError, ValueError):
        raise AdapterError(f"{path}: {where}track id {v!r} is not a number") from None
    if x < 0:
        return None
    return one_frame_index(x, path, f"{where}track id")


@register
class AlphaPoseAdapter(Adapter):
    name = "alphapose"
    reads = ("alphapose-results.json (alphapose/utils/pPose_nms.py write_json): rows {image_id: file name "
             "\"<frame>.jpg\" (0-based video frames) or int, category_id, keypoints 3K flat (x, y, score) with "
             "K = 17 COCO, 26 Halpe, 133 COCO-WholeBody or 136 Halpe-136, score (pose-NMS proposal score, up to "
             "~3), box [x, y, w, h] px, idx (track id, with --pose_track / PoseFlow)}")
    skeleton = "COCO-17 (from COCO-17, Halpe-26/136 or COCO-WholeBody-133)"
    units = "pixels"
    camera = "none (2D only)"
    # Scores above 1 (proposal scores, some keypoint scores) are divided by the file's 95th percentile.

    def read(self, path, video):
        notes = Notes()
        data = load_json(path)
        if not isinstance(data, list):
            raise AdapterError(f"{path}: expected AlphaPose's list of result rows, got {type(data).__name__}")
        rows = []
        for n, r in enumerate(data):
            if not isinstance(r, dict) or "image_id" not in r or "keypoints" not in r:
                raise AdapterError(f"{path}: row {n} lacks 'image_id'/'keypoints'")
            kp = numeric(r["keypoints"], path, f"row {n}: keypoints").reshape(-1)
            if kp.size % 3 or kp.size == 0:
                raise AdapterError(f"{path}: row {n}: keypoints must hold 3 numbers (x, y, score) per keypoint")
            kp = kp.reshape(-1, 3)
            if len(kp) == 136:          # Halpe-136 starts with the 26 body keypoints of Halpe-26
                kp = kp[:26]
            layout = body_layout(len(kp), path, f"row {n}: ")
            img = r["image_id"]
            frame = _frame_of(img, path, n)
            score = r.get("score", 1.0)
            try:
                score = float(score)
            except (TypeError, ValueError):
                raise AdapterError(f"{path}: row {n}: score is not a number") from None
            box = r.get("box")
            if box is not None:
                b = numeric(box, path, f"row {n}: box").reshape(-1)
                if b.size != 4:
                    raise AdapterError(f"{path}: row {n}: box must be [x, y, w, h], got {b.size} numbers")
                box = [b[0], b[1], b[0] + b[2], b[1] + b[3]]
            rows.append((frame, kp, layout, score, box, _track_id(r.get("idx"), path, f"row {n}: ")))
        if not rows:
            return finish([], path, video, notes=notes)
        scores = relative_scores([r[3] for r in rows], floor=1.0)
        kconf = relative_scores(np.concatenate([r[1][:, 2] for r in rows]), floor=1.0)
        dets, k = [], 0
        for (frame, kp, layout, _, box, tid), s in zip(rows, scores):
            conf = kconf[k:k + len(kp)]
            k += len(kp)
            xy, c = coco17_from(kp[:, :2], conf, layout)
            dets.append(Detection(frame, box=box, score=float(s), kp2d=xy, kp2d_conf=c, layout2d="coco17",
                                  track_id=tid, source=self.name))
        if any(d.track_id is None for d in dets):   # partial ids: let the tracker decide for all
            for d in dets:
                d.track_id = None
        return finish(dets, path, video, notes=notes)


def _frame_of(img, path, n):
    """AlphaPose's image_id: "12.jpg" (its video loader names frame i "<i>.jpg") or an int (for_eval)."""
    if isinstance(img, str):
        m = re.findall(r"\d+", os.path.basename(img))
        if not m:
            raise AdapterError(f"{path}: row {n}: image_id {img!r} holds no frame number")
        return one_frame_index(int(m[-1]), path, f"row {n}: image_id")
    return one_frame_index(img, path, f"row {n}: image_id")


@register
class OpenPoseAdapter(Adapter):
    name = "openpose"
    reads = ("OpenPose --write_json output (doc/02_output.md): a folder of <video>_<frame:012d>_keypoints.json "
             "files (0-based frames) or one such file; each {version, people: [{person_id [-1], "
             "pose_keypoints_2d 75 numbers (BODY_25 x, y, confidence), ...}]}")
    skeleton = "COCO-17 (from BODY_25)"
    units = "pixels"
    camera = "none (2D only)"
    # A missing keypoint is (0, 0, 0): confidence 0, so it is masked.

    def read(self, path, video):
        notes = Notes()
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.endswith(".json"))
            if not names:
                raise AdapterError(f"{path}: no OpenPose *_keypoints.json files in this folder")
            files = [os.path.join(path, n) for n in names]
        else:
            files = [path]
        dets = []
        for k, f in enumerate(files):
            frame = self._frame(f, k if len(files) > 1 else 0)
            data = load_json(f)
            if not isinstance(data, dict) or not isinstance(data.get("people"), list):
                raise AdapterError(f"{f}: expected OpenPose's {{version, people: [...]}}")
            for n, person in enumerate(data["people"]):
                if not isinstance(person, dict):
                    raise AdapterError(f"{f}: people[{n}] is not an object")
                kp = numeric(person.get("pose_keypoints_2d", []), f, f"people[{n}]: pose_keypoints_2d").reshape(-1)
                if kp.size == 0:
                    continue
                if kp.size != 75:
                    raise AdapterError(f"{f}: people[{n}]: pose_keypoints_2d must hold 75 numbers (BODY_25 x, y, "
                                       f"confidence), got {kp.size}")
                kp = kp.reshape(25, 3)
                xy, c = coco17_from(kp[:, :2], np.clip(kp[:, 2], 0, 1), "body25")
                if not (c > 0).any():
                    continue
                dets.append(Detection(frame, kp2d=xy, kp2d_conf=c, layout2d="coco17",
                                      score=float(np.mean(kp[:, 2][kp[:, 2] > 0])) if (kp[:, 2] > 0).any() else 0.0,
                                      track_id=_track_id(person.get("person_id"), f, f"people[{n}]: "),
                                      source=self.name))
        if any(d.track_id is None for d in dets):
            for d in dets:
                d.track_id = None
        return finish(dets, path, video, notes=notes)

    @staticmethod
    def _frame(f, fallback):
        """``clip_000000000012_keypoints.json`` -> 12 (OpenPose numbers video frames from 0)."""
        m = re.findall(r"\d+", os.path.basename(f).replace("_keypoints", ""))
        return one_frame_index(int(m[-1]), f, "frame number in the file name") if m else fallback


@register
class RTMLibAdapter(Adapter):
    name = "rtmlib"
    reads = ("an .npz of rtmlib's per-frame outputs (rtmlib returns keypoints, scores = model(image) and writes no "
             "file): keypoints (T, P, K, 2) px or (T, K, 2), scores (T, P, K) or (T, K), optional frame_ids (T,) "
             "0-based, bboxes (T, P, 4) xyxy px, track_ids (T, P); K = 17, 26 or 133; padded persons have all "
             "scores 0 or NaN keypoints")
    skeleton = "COCO-17 (from COCO-17, Halpe-26 or COCO-WholeBody-133)"
    units = "pixels"
    camera = "none (2D only)"
    # scores are SimCC maxima (can exceed 1): divided by the file's 95th percentile when above 1.

    def read(self, path, video):
        notes = Notes()
        d = load_npz(path)
        if "keypoints" not in d or "scores" not in d:
            raise AdapterError(f"{path}: needs 'keypoints' (T, P, K, 2) and 'scores' (T, P, K); has {sorted(d)}")
        kp, sc = numeric(d["keypoints"], path, "'keypoints'"), numeric(d["scores"], path, "'scores'")
        if kp.ndim == 3:
            kp, sc = kp[:, None], sc.reshape(len(sc), 1, -1) if sc.ndim == 2 else sc
        if kp.ndim != 4 or kp.shape[-1] != 2 or sc.shape != kp.shape[:3]:
            raise AdapterError(f"{path}: keypoints must be (T, P, K, 2) and scores (T, P, K); got {kp.shape} and "
                               f"{sc.shape}")
        T, P, K = sc.shape
        layout = body_layout(K, path)
        frames = frame_indices(d["frame_ids"], path, "frame_ids") if "frame_ids" in d else np.arange(T)
        if len(frames) != T:
            raise AdapterError(f"{path}: frame_ids has {len(frames)} entries for {T} frames of keypoints")
        boxes = d.get("bboxes")
        if boxes is not None and np.shape(boxes) != (T, P, 4):
            raise AdapterError(f"{path}: bboxes must be (T, P, 4) = {(T, P, 4)}, got {np.shape(boxes)}")
        tids = d.get("track_ids")
        if tids is not None and np.shape(tids) != (T, P):
            raise AdapterError(f"{path}: track_ids must be (T, P) = {(T, P)}, got {np.shape(tids)}")
        conf = relative_scores(sc, floor=1.0)
        dets = []
        for t in range(T):
            for p in range(P):
                if not (sc[t, p] > 0).any() or not np.isfinite(kp[t, p]).any():
                    continue   # padding
                xy, c = coco17_from(kp[t, p], conf[t, p], layout)
                tid = None if tids is None else _track_id(tids[t, p], path, f"frame {frames[t]}: ")
                dets.append(Detection(int(frames[t]), box=None if boxes is None else boxes[t, p],
                                      score=float(np.mean(c)), kp2d=xy, kp2d_conf=c, layout2d="coco17",
                                      track_id=tid, source=self.name))
        if any(d_.track_id is None for d_ in dets):
            for d_ in dets:
                d_.track_id = None
        return finish(dets, path, video, notes=notes)


@register
class MotionBERTAdapter(Adapter):
    name = "motionbert"
    aliases = ("videopose3d", "kp3d-h36m17")
    reads = ("3D keypoint arrays: MotionBERT infer_wild.py's X3D.npy (T, 17, 3) H36M-17, root-relative, in "
             "normalised image units (one row per AlphaPose detection of the followed person: rows are taken as "
             "frames 0..T-1), or an .npz with X3D / kp3d (T, 17, 3) and optional frame_ids (T,) 0-based")
    skeleton = "H36M-17"
    units = "metres: rescaled so the median bone lengths match the default body (the arrays are not metres)"
    camera = "none (root-relative, camera-aligned axes: x right, y down, z forward)"

    def read(self, path, video):
        notes = Notes()
        frames = None
        if str(path).endswith(".npz"):
            d = load_npz(path)
            key = next((k for k in ("X3D", "kp3d", "keypoints_3d", "keypoints") if k in d), None)
            if key is None:
                raise AdapterError(f"{path}: needs X3D or kp3d (T, 17, 3); has {sorted(d)}")
            k3 = numeric(d[key], path, repr(key))
            if "frame_ids" in d:
                frames = frame_indices(d["frame_ids"], path, "frame_ids")
        else:
            k3 = _load_npy(path)
        if k3.ndim == 4 and k3.shape[0] == 1:   # (1, T, 17, 3) from a batch
            k3 = k3[0]
        if k3.ndim != 3 or k3.shape[1:] != (17, 3) or len(k3) == 0:
            raise AdapterError(f"{path}: 3D keypoints must be (T, 17, 3) H36M-17, got {k3.shape}")
        T = len(k3)
        frames = np.arange(T) if frames is None else frames
        if len(frames) != T:
            raise AdapterError(f"{path}: frame_ids has {len(frames)} entries for {T} frames of keypoints")
        if T - 1 > 10_000_000:
            raise AdapterError(f"{path}: {T} frames is not a video")
        k3 = k3 - k3[:, :1]                     # root-relative (infer_wild zeroes the root only with rootrel)
        k3 = metres_from_bones(k3, path)
        ok = np.isfinite(k3).all((1, 2))
        dets = [Detection(int(frames[i]), kp3d=k3[i], layout3d="h36m17", kp3d_root_relative=True, track_id=0,
                          source=self.name) for i in range(T) if ok[i]]
        if not dets:
            raise AdapterError(f"{path}: all {T} frames hold NaN or infinite values")
        if len(dets) < T:
            notes(f"{path}: {T - len(dets)} of {T} frames hold NaN or infinite values and are treated as missing")
        return finish(dets, path, video, notes=notes)


def _load_npy(path):
    """A .npy array, its size checked from the header before it is read; no pickles."""
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise AdapterError(f"{path}: not a readable .npy array ({brief(e)})") from None
    if not isinstance(a, np.ndarray):
        raise AdapterError(f"{path}: expected one .npy array (T, 17, 3)")
    if a.nbytes > MAX_ARRAY_BYTES:
        raise AdapterError(f"{path}: an array of shape {a.shape} is too large for an estimator file")
    try:
        return numeric(a, path, "the array")
    except OSError as e:   # a memory-mapped file shorter than its header says
        raise AdapterError(f"{path}: not a numeric array ({brief(e)})") from None
