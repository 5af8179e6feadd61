"""mmpose / HRNet keypoints: 2D (COCO-17, Halpe-26, COCO-WholeBody-133 -> COCO-17) and 3D (H36M-17 lifters).

JSON flavours: the inferencer's video file ``[{frame_id (0-based), instances}]``, the demos'
``{meta_info, instance_info: [{frame_id (1-based), instances}]}``, COCO results rows
``{image_id, keypoints (3K flat), score}``, and a folder of the inferencer's per-image files
(``pred_out_dir``: one ``<image>.json`` list of instances each; the frame is the number in the image
name, 1-based like ffmpeg's frame files unless a file numbered 0 exists).
"""
from __future__ import annotations

import os

import numpy as np

from posebert_plug.skeletons import get_skeleton, layout_for_count, to_coco17
from posebert_plug.types import Detection
from .base import (Adapter, AdapterError, Notes, finish, load_json, numeric, one_frame_index, register,
                   relative_scores)

# Sum of the 16 H36M-17 bone lengths of the default body (T-pose), metres: the scale root-relative 3D
# keypoints in other units (MotionBERT's normalised image units) are brought to.
H36M17_BONE_SUM = 3.99


def coco17_from(kp, conf, layout):
    """Keypoints (K, 2) + confidences (K,) in ``layout`` -> the COCO-17 subset, in COCO order."""
    idx = to_coco17(layout)
    return kp[idx], conf[idx]


def body_layout(K, path, where=""):
    """The 2D layout of a K-keypoint body (17 COCO, 26 Halpe, 133 COCO-WholeBody, 25 BODY_25)."""
    try:
        return layout_for_count(K)
    except ValueError as e:
        raise AdapterError(f"{path}: {where}{e}") from None


def camera_from_mmpose3d(k):
    """mmpose 3D demos/inferencer save ``-kp[..., [0, 2, 1]]`` (z up, height rebased): undo it ->
    camera-aligned axes (x right, y down, z forward), root-relative (joint 0 = pelvis at the origin)."""
    k = np.asarray(k, float)
    cam = np.stack([-k[..., 0], -k[..., 2], -k[..., 1]], -1)
    return cam - cam[..., :1, :]


def metres_from_bones(k3, path):
    """Root-relative H36M-17 keypoints (N, 17, 3) in unknown units -> metres: scaled so the median
    (over frames) sum of bone lengths is the default body's."""
    sk = get_skeleton("h36m17")
    ok = np.isfinite(k3).all((1, 2))
    if not ok.any():
        return k3
    bl = sum(np.linalg.norm(k3[ok][:, c] - k3[ok][:, p], axis=-1) for c, p in sk.bones)
    med = float(np.median(bl))
    if not med > 0:
        raise AdapterError(f"{path}: the 3D keypoints have zero size")
    return k3 * (H36M17_BONE_SUM / med)


@register
class MMPoseAdapter(Adapter):
    name = "mmpose"
    aliases = ("hrnet", "rtmpose")
    reads = ("mmpose JSON: the inferencer's video file [{frame_id (0-based), instances: [...]}], the top-down and "
             "3D demos' {meta_info, instance_info: [{frame_id (1-based), instances}]}, COCO results rows "
             "{image_id, keypoints (3K flat x,y,score), score}, or a folder of the inferencer's per-image JSON "
             "files. Instance: keypoints K x [x, y] px (K = 17, 26 or 133) or 17 x [x, y, z] (3D lifters), "
             "keypoint_scores K, bbox [[x1,y1,x2,y2]] (nested), bbox_score, track_id (optional)")
    skeleton = "COCO-17 (Halpe-26 and COCO-WholeBody-133: their body 17); 3D: H36M-17"
    units = "pixels; 3D metres, root-relative"
    camera = "none (2D keypoints; 3D root-relative, camera-aligned axes)"

    def read(self, path, video):
        notes = Notes()
        if os.path.isdir(path):
            items = self._folder(path)
        else:
            data = load_json(path)
            items = self._items(data, path)
        dets = []
        for frame, inst, where in items:
            dets.append(self._detection(frame, inst, where, path))
        self._single_person_track(dets)
        return finish(dets, path, video, notes=notes)

    # ---- the flavours ----
    def _items(self, data, path):
        """-> list of (frame, instance dict, where) for the JSON flavours."""
        offset = 0
        if isinstance(data, dict) and "instance_info" in data:
            data, offset = data["instance_info"], 1   # the demos number frames from 1
        if not isinstance(data, list):
            raise AdapterError(f"{path}: expected a list of frames or COCO result rows, or {{instance_info: [...]}}")
        if data and all(isinstance(x, dict) and "image_id" in x for x in data):
            return self._coco_rows(data, path)
        out = []
        for n, item in enumerate(data):
            if not isinstance(item, dict) or "frame_id" not in item or "instances" not in item:
                raise AdapterError(f"{path}: entry {n} lacks 'frame_id'/'instances'")
            frame = one_frame_index(item["frame_id"], path, f"entry {n}: frame_id") - offset
            if frame < 0:
                raise AdapterError(f"{path}: entry {n}: frame_id 0 in a demo file numbered from 1")
            insts = item["instances"]
            if not isinstance(insts, list):
                raise AdapterError(f"{path}: frame {frame}: 'instances' must be a list, got {type(insts).__name__}")
            out += [(frame, inst, f"frame {frame}: ") for inst in insts]
        return out

    @staticmethod
    def _coco_rows(data, path):
        out = []
        for n, item in enumerate(data):
            kp = numeric(item.get("keypoints", []), path, f"row {n}: keypoints").reshape(-1)
            if kp.size % 3:
                raise AdapterError(f"{path}: row {n}: keypoints must hold 3 numbers (x, y, score) per keypoint")
            img = item["image_id"]
            frame = one_frame_index(img, path, f"row {n}: image_id") if not isinstance(img, str) else \
                _frame_of_name(img, path, n)
            inst = {"keypoints": kp.reshape(-1, 3)[:, :2], "keypoint_scores": kp.reshape(-1, 3)[:, 2],
                    "bbox_score": item.get("score", 1.0)}
            out.append((frame, inst, f"row {n}: "))
        return out

    def _folder(self, path):
        from .hybrik import frames_from_names
        names = sorted(n for n in os.listdir(path) if n.endswith(".json"))
        if not names:
            raise AdapterError(f"{path}: a folder without .json files")
        frames = frames_from_names(names, path)
        out = []
        for name, frame in zip(names, frames):
            f = os.path.join(path, name)
            data = load_json(f)
            if isinstance(data, dict) and "instances" in data:
                data = data["instances"]
            if not isinstance(data, list):
                raise AdapterError(f"{f}: expected a list of instances")
            out += [(int(frame), inst, "") for inst in data]
        return out

    def _detection(self, frame, inst, where, path):
        if not isinstance(inst, dict):
            raise AdapterError(f"{path}: {where}an instance must be an object, got {type(inst).__name__}")
        kp = numeric(inst.get("keypoints", []), path, f"{where}keypoints")
        sc = numeric(inst.get("keypoint_scores", np.ones(len(kp))), path, f"{where}keypoint_scores").reshape(-1)
        if kp.ndim != 2 or kp.shape[1] not in (2, 3) or len(kp) == 0:
            raise AdapterError(f"{path}: {where}keypoints must be K x [x, y] or 17 x [x, y, z], got {kp.shape}")
        if sc.shape != (len(kp),):
            raise AdapterError(f"{path}: {where}keypoint_scores must hold {len(kp)} numbers, got {sc.size}")
        tid = inst.get("track_id")
        tid = one_frame_index(tid, path, f"{where}track_id") if tid is not None else None
        bs = inst.get("bbox_score", 1.0)
        try:
            bs = float(np.asarray(bs if bs is not None else 1.0, float).reshape(-1)[0])
        except (TypeError, ValueError, IndexError):
            raise AdapterError(f"{path}: {where}bbox_score is not a number") from None
        box = inst.get("bbox")
        if box is not None:
            box = numeric(box, path, f"{where}bbox").reshape(-1)
            if box.size != 4:
                raise AdapterError(f"{path}: {where}bbox must be [[x1, y1, x2, y2]], got {box.size} numbers")
        score = float(np.clip(bs, 0, 1)) if np.isfinite(bs) else 0.0
        if kp.shape[1] == 3:   # a 3D lifter's output (H36M-17)
            if len(kp) != 17:
                raise AdapterError(f"{path}: {where}3D keypoints must be 17 x [x, y, z] (H36M-17), got {kp.shape}")
            return Detection(frame, box=box, score=score, kp3d=camera_from_mmpose3d(kp), layout3d="h36m17",
                             kp3d_root_relative=True, track_id=tid, source=self.name)
        layout = self.options.get("layout") or body_layout(len(kp), path, where)
        conf = relative_scores(sc, floor=1.0)   # RTMPose's SimCC maxima can exceed 1
        if get_skeleton(layout).num_joints != len(kp):
            raise AdapterError(f"{path}: {where}keypoints must be ({get_skeleton(layout).num_joints}, 2), got {kp.shape}")
        kp, conf = coco17_from(kp, conf, layout)
        return Detection(frame, box=box, score=score, kp2d=kp, kp2d_conf=conf, layout2d="coco17", track_id=tid,
                         source=self.name)

    @staticmethod
    def _single_person_track(dets):
        """3D-only files carry no boxes to track by: with one person per frame, it is one track."""
        if dets and all(d.box is None and d.kp2d is None for d in dets):
            frames = [d.frame for d in dets]
            if len(set(frames)) == len(frames):
                for d in dets:
                    d.track_id = 0 if d.track_id is None else d.track_id


def _frame_of_name(name, path, n):
    """AlphaPose-style image ids: "12.jpg" -> 12 (the number in the name, as written)."""
    from .hybrik import split_frame_name
    _, num = split_frame_name(name)
    if num is None:
        raise AdapterError(f"{path}: row {n}: image_id {name!r} holds no frame number")
    return one_frame_index(num, path, f"row {n}: image_id")
