"""HybrIK (``scripts/demo_video.py --save-pk`` -> ``res.pk``)."""
from __future__ import annotations

import os
import re

import numpy as np

from posebert_plug.types import Detection
from .base import Adapter, AdapterError, fixed_focal_transl, group_by_frame, register, require, warn_dropped
from .safe_load import safe_pickle_load


def frame_index_from_path(p, fallback):
    m = re.findall(r"(\d+)", os.path.basename(str(p)))
    return int(m[-1]) if m else fallback


@register
class HybrIKAdapter(Adapter):
    name = "hybrik"
    reads = ("res.pk: a pickled dict of per-frame stacked arrays: pred_thetas (N,216) SMPL local rotation "
             "matrices (root in the camera frame), pred_betas (N,10), pred_xyz_29 (N,29,3) root-relative in units "
             "of 2.2 m, pred_uvd (N,29,3) crop coordinates in [-0.5,0.5], pred_scores (N,29), transl (N,3) metres, "
             "bbox (N,4) xyxy px, img_path (N,)")
    skeleton = "SMPL-24 rotations; HybrIK-29 keypoints"
    units = "metres (pred_xyz_* x 2.2), pixels"
    camera = "per frame focal 1000*bw/256 px (bw = box width), principal point at the image centre"
    # Frame index: from the digits of img_path's file name (frames before the first detection are absent).

    def read(self, path, video):
        d = safe_pickle_load(path)
        if not isinstance(d, dict):
            raise AdapterError(f"{path}: expected a dict of arrays, got {type(d).__name__}")
        thetas = require(d, "pred_thetas", path)
        N = thetas.shape[0]
        if thetas.shape[1:] not in ((216,), (24, 3, 3)):
            raise AdapterError(f"{path}: 'pred_thetas' must be (N, 216) or (N, 24, 3, 3), got {thetas.shape}")
        R = thetas.reshape(N, 24, 3, 3)
        betas = require(d, "pred_betas", path, (N, 10))
        bbox = require(d, "bbox", path, (N, 4))
        key = "transl" if "transl" in d else "pred_cam_root"
        transl = require(d, key, path, (N, 3))
        uvd = require(d, "pred_uvd", path, (N, 29, 3))
        scores = require(d, "pred_scores", path)
        scores = scores.reshape(N, -1)[:, :29] if scores.size >= N * 29 else np.ones((N, 29))
        xyz = require(d, "pred_xyz_29", path, (N, 29, 3)) * 2.2
        paths = d.get("img_path", None)
        frames = [frame_index_from_path(paths[i], i) if paths is not None else i for i in range(N)]
        bw = bbox[:, 2] - bbox[:, 0]
        if (bw <= 0).any():
            raise AdapterError(f"{path}: 'bbox' has non-positive widths")
        cx, cy = (bbox[:, 0] + bbox[:, 2]) / 2, (bbox[:, 1] + bbox[:, 3]) / 2
        focal = 1000.0 * bw / 256.0
        f0 = float(np.median(focal))
        video.focal_px = f0
        tr = fixed_focal_transl(transl, focal, f0)
        kp2d = np.stack([uvd[..., 0] * bw[:, None] + cx[:, None], uvd[..., 1] * bw[:, None] + cy[:, None]], -1)
        dets = []
        for i in range(N):
            if not (np.isfinite(R[i]).all() and np.isfinite(tr[i]).all()):
                continue  # a NaN frame is a missing frame
            dets.append(Detection(frames[i], box=bbox[i], score=1.0, kp2d=kp2d[i], kp2d_conf=np.clip(scores[i], 0, 1),
                                  layout2d="hybrik29", kp3d=xyz[i], layout3d="hybrik29", kp3d_root_relative=True,
                                  rotmats=R[i], betas=betas[i], transl=tr[i], track_id=0, source=self.name))
        warn_dropped(path, N, len(dets))
        return group_by_frame(dets)
