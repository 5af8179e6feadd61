"""SPIN, VIBE and 4D-Humans/PHALP: SMPL estimators with weak-perspective or crop cameras."""
from __future__ import annotations

import os
import re

import numpy as np
import torch

from posebert_plug.rotations import rotvec_to_rotmat
from posebert_plug.types import Detection
from .base import Adapter, AdapterError, fixed_focal_transl, group_by_frame, register, require, warn_dropped
from .safe_load import safe_joblib_load

SPIN_FOCAL, SPIN_CROP = 5000.0, 224.0


def crop_cam_to_transl(cam, box_cx, box_cy, box_size, width, height):
    """SPIN-style crop camera [s, tx, ty] (crop of ``box_size`` px around (box_cx, box_cy), focal 5000 on
    a 224 crop) -> (camera-frame translation (N, 3) for a full-image camera with principal point at the
    image centre, focal in px (N,))."""
    cam = np.asarray(cam, dtype=np.float64)
    s = cam[:, 0]
    if (s <= 0).any():
        raise AdapterError("camera scale s must be positive")
    z = 2 * SPIN_FOCAL / (SPIN_CROP * s)
    f_img = SPIN_FOCAL * box_size / SPIN_CROP
    x = cam[:, 1] + (box_cx - width / 2) * z / f_img
    y = cam[:, 2] + (box_cy - height / 2) * z / f_img
    return np.stack([x, y, z], -1), f_img


def _fix(video, transl, focal):
    f0 = float(np.median(focal))
    video.focal_px = f0
    return fixed_focal_transl(transl, focal, f0)


@register
class SPINAdapter(Adapter):
    name = "spin"
    reads = ("an .npz of SPIN's demo outputs (SPIN writes none itself): pred_rotmat (N,24,3,3), pred_betas (N,10), "
             "pred_camera (N,3) [s,tx,ty] on the 224 crop, bbox (N,4) xyxy px of the square crop, frame_ids (N,)")
    skeleton = "SMPL-24 rotations"
    units = "metres"
    camera = "crop camera: focal 5000 px on a 224 px crop, translation [tx, ty, 2*5000/(224*s)]"

    def read(self, path, video):
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except Exception as e:
            raise AdapterError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None
        R = require(d, "pred_rotmat", path, (None, 24, 3, 3))
        N = len(R)
        betas = require(d, "pred_betas", path, (N, 10))
        cam = require(d, "pred_camera", path, (N, 3))
        bbox = require(d, "bbox", path, (N, 4))
        frames = require(d, "frame_ids", path, (N,)).astype(int) if "frame_ids" in d else np.arange(N)
        size = bbox[:, 2] - bbox[:, 0]
        tr, f = crop_cam_to_transl(cam, (bbox[:, 0] + bbox[:, 2]) / 2, (bbox[:, 1] + bbox[:, 3]) / 2, size,
                                   video.width, video.height)
        tr = _fix(video, tr, f)
        dets = [Detection(int(frames[i]), box=bbox[i], rotmats=R[i], betas=betas[i], transl=tr[i], source=self.name)
                for i in range(N) if np.isfinite(R[i]).all() and np.isfinite(tr[i]).all()]
        warn_dropped(path, N, len(dets))
        return group_by_frame(dets)


@register
class VIBEAdapter(Adapter):
    name = "vibe"
    reads = ("vibe_output.pkl (joblib): {track_id: {pose (T,72) axis-angle, betas (T,10), pred_cam (T,3) crop "
             "[s,tx,ty], bboxes (T,4) [cx,cy,w,h] px, frame_ids (T,) 0-based}}")
    skeleton = "SMPL-24 rotations"
    units = "metres"
    camera = ("pred_cam on the 224 crop of each bbox (focal 5000 on the crop), as SPIN; VIBE's known 1.1 crop scale "
              "is not applied (as in VIBE's own image-space conversion)")

    def read(self, path, video):
        d = safe_joblib_load(path)
        if not isinstance(d, dict) or not d:
            raise AdapterError(f"{path}: expected a non-empty dict keyed by track id")
        dets, total = [], 0
        for tid, tr_d in d.items():
            where = f"{path} [track {tid}]"
            pose = require(tr_d, "pose", where, (None, 72))
            T = len(pose)
            betas = require(tr_d, "betas", where, (T, 10))
            cam = require(tr_d, "pred_cam", where, (T, 3))
            bb = require(tr_d, "bboxes", where, (T, 4))
            frames = require(tr_d, "frame_ids", where, (T,)).astype(int)
            R = rotvec_to_rotmat(torch.as_tensor(pose.reshape(T, 24, 3))).numpy()
            tr, f = crop_cam_to_transl(cam, bb[:, 0], bb[:, 1], np.maximum(bb[:, 2], bb[:, 3]), video.width, video.height)
            tr = _fix(video, tr, f)
            total += T
            for i in range(T):
                if np.isfinite(R[i]).all() and np.isfinite(tr[i]).all():
                    box = [bb[i, 0] - bb[i, 2] / 2, bb[i, 1] - bb[i, 3] / 2, bb[i, 0] + bb[i, 2] / 2, bb[i, 1] + bb[i, 3] / 2]
                    dets.append(Detection(int(frames[i]), box=box, rotmats=R[i], betas=betas[i], transl=tr[i],
                                          track_id=int(tid), source=self.name))
        warn_dropped(path, total, len(dets))
        return group_by_frame(dets)


@register
class PHALPAdapter(Adapter):
    name = "4dhumans"
    aliases = ("phalp",)
    reads = ("demo_<video>.pkl (joblib): {frame_path: {tid [...], tracked_ids [...], bbox [[x,y,w,h]...], "
             "smpl [{global_orient (1,3,3), body_pose (23,3,3), betas (10,)}...], camera [(3,)...], conf [...], time}}")
    skeleton = "SMPL-24 rotations"
    units = "metres"
    camera = "translation for focal 5000*max(H,W)/256 px, principal point at the image centre"
    # Only tracks in tracked_ids are kept: PHALP also lists unmatched tracks carrying stale data.

    def read(self, path, video):
        d = safe_joblib_load(path)
        if not isinstance(d, dict) or not d:
            raise AdapterError(f"{path}: expected a non-empty dict keyed by frame path")
        focal = 5000.0 * max(video.width, video.height) / 256.0
        video.focal_px = focal
        dets = []
        for k, (fpath, fr) in enumerate(sorted(d.items(), key=lambda kv: str(kv[0]))):
            if not isinstance(fr, dict) or "tid" not in fr:
                raise AdapterError(f"{path} [{fpath}]: frame entry lacks 'tid'")
            t = fr.get("time", None)
            if t is None:
                m = re.findall(r"(\d+)", os.path.basename(str(fpath)))
                t = int(m[-1]) if m else k
            matched = set(int(x) for x in fr.get("tracked_ids", fr["tid"]))
            for i, tid in enumerate(fr["tid"]):
                if int(tid) not in matched:
                    continue
                where = f"{path} [{fpath}, track {tid}]"
                try:
                    smpl, bbox, cam = fr["smpl"][i], np.asarray(fr["bbox"][i], float), np.asarray(fr["camera"][i], float)
                except (KeyError, IndexError, TypeError):
                    raise AdapterError(f"{where}: smpl/bbox/camera lists not aligned with tid") from None
                go = require(smpl, "global_orient", where).reshape(1, 3, 3)
                bp = require(smpl, "body_pose", where).reshape(23, 3, 3)
                betas = require(smpl, "betas", where).reshape(-1)[:10]
                R = np.concatenate([go, bp])
                if bbox.shape != (4,) or cam.shape != (3,):
                    raise AdapterError(f"{where}: bbox must be (4,) [x,y,w,h] and camera (3,)")
                if not (np.isfinite(R).all() and np.isfinite(cam).all()):
                    continue
                conf = fr.get("conf", [1.0] * len(fr["tid"]))
                dets.append(Detection(int(t), box=[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]],
                                      score=float(np.clip(conf[i], 0, 1)), rotmats=R, betas=betas, transl=cam,
                                      track_id=int(tid), source=self.name))
        return group_by_frame(dets)
