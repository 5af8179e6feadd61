"""HybrIK (``scripts/demo_video.py --save-pk`` -> ``res.pk``)."""
from __future__ import annotations

import os
import re

import numpy as np

from posebert_plug.types import Detection
from .base import (Adapter, AdapterError, Notes, finish, fixed_focal_transl, frame_indices, register,
                   relative_scores, require, robust_focal, warn_dropped)
from .safe_load import safe_pickle_load


def split_frame_name(p) -> tuple:
    """``".../raw_images/clip-000012.png"`` -> (``"clip-"``, 12): the file name's last number and what
    precedes it (the prefix names the video); (name, None) when the name holds no number."""
    name = os.path.basename(str(p))
    m = list(re.finditer(r"\d+", name))
    if not m:
        return name, None
    return name[:m[-1].start()], int(m[-1].group(0))


def frames_from_names(paths, path) -> np.ndarray:
    """0-based video frames from HybrIK's ``img_path`` list (N,).

    demo_video.py extracts frames with ffmpeg ``<name>-%06d.png``, which counts from 1, so the numbers
    are 1-based unless a file numbered 0 shows the extraction counted from 0 (other tools, our tests).
    A list mixing file-name prefixes holds two videos (a reused output folder): refused."""
    parts = [split_frame_name(p) for p in paths]
    prefixes = sorted({pre for pre, _ in parts})
    if len(prefixes) > 1:
        raise AdapterError(f"{path}: img_path mixes frames of {len(prefixes)} videos (file-name prefixes "
                           f"{', '.join(repr(p) for p in prefixes[:4])}): was the output folder reused? Keep one "
                           "video's frames")
    nums = [n for _, n in parts]
    if any(n is None for n in nums):
        raise AdapterError(f"{path}: img_path {paths[nums.index(None)]!r} holds no frame number")
    nums = frame_indices(nums, path, "img_path frame number", max_frame=10_000_001)
    offset = 0 if nums.min() == 0 else 1
    return nums - offset


@register
class HybrIKAdapter(Adapter):
    name = "hybrik"
    reads = ("res.pk: a pickled dict of per-frame stacked arrays: pred_thetas (N,216) SMPL local rotation "
             "matrices (root in the camera frame), pred_betas (N,10), pred_xyz_29 (N,29,3) root-relative in units "
             "of 2.2 m, pred_uvd (N,29,3) crop coordinates in [-0.5,0.5], pred_scores (N,29) uncalibrated heatmap "
             "maxima, transl (N,3) metres, bbox (N,4) xyxy px, img_path (N,) ffmpeg frame files numbered from 1")
    skeleton = "SMPL-24 rotations; HybrIK-29 keypoints"
    units = "metres (pred_xyz_* x 2.2), pixels"
    camera = "per frame focal 1000*bw/256 px (bw = box width), principal point at the image centre"
    # Frames: img_path's numbers minus 1 (ffmpeg's -%06d counts from 1; 0-based when a file numbered 0 exists).
    # Frames before the first detection are absent. One person (track 0).

    def read(self, path, video):
        notes = Notes()
        d = safe_pickle_load(path)
        if not isinstance(d, dict):
            raise AdapterError(f"{path}: expected a dict of arrays, got {type(d).__name__}")
        thetas = require(d, "pred_thetas", path)
        N = thetas.shape[0] if thetas.ndim else 0
        if N == 0 or thetas.shape[1:] not in ((216,), (24, 3, 3)):
            raise AdapterError(f"{path}: 'pred_thetas' must be (N, 216) or (N, 24, 3, 3), got {thetas.shape}")
        R = thetas.reshape(N, 24, 3, 3)
        betas = require(d, "pred_betas", path, (N, 10))
        bbox = require(d, "bbox", path, (N, 4))
        key = "transl" if "transl" in d else "pred_cam_root"
        transl = require(d, key, path, (N, 3))
        uvd = require(d, "pred_uvd", path, (N, 29, 3))
        scores = require(d, "pred_scores", path) if "pred_scores" in d else np.ones((N, 29))
        # Heatmap maxima (0.0002-0.125 in real files), not probabilities: relative to the file's own.
        scores = relative_scores(scores.reshape(N, -1)[:, :29]) if scores.size >= N * 29 else np.ones((N, 29))
        xyz = require(d, "pred_xyz_29", path, (N, 29, 3)) * 2.2
        frames = self._frames(d.get("img_path", None), N, path)
        bw = bbox[:, 2] - bbox[:, 0]
        ok_box = np.isfinite(bbox).all(1) & (bw > 0)
        cx, cy = (bbox[:, 0] + bbox[:, 2]) / 2, (bbox[:, 1] + bbox[:, 3]) / 2
        focal = 1000.0 * bw / 256.0
        f0 = robust_focal(focal[ok_box], path)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            tr = fixed_focal_transl(transl, focal, f0)
            kp2d = np.stack([uvd[..., 0] * bw[:, None] + cx[:, None], uvd[..., 1] * bw[:, None] + cy[:, None]], -1)
        dets = []
        for i in range(N):
            if not (ok_box[i] and np.isfinite(R[i]).all() and np.isfinite(tr[i]).all()):
                continue  # a NaN frame (or a NaN/inf/empty box) is a missing frame
            dets.append(Detection(frames[i], box=bbox[i], score=1.0, kp2d=kp2d[i], kp2d_conf=scores[i],
                                  layout2d="hybrik29", kp3d=xyz[i], layout3d="hybrik29", kp3d_root_relative=True,
                                  rotmats=R[i], betas=betas[i], transl=tr[i], track_id=0, source=self.name))
        warn_dropped(path, N, len(dets), notes)
        return finish(dets, path, video, focal_px=f0, notes=notes)

    @staticmethod
    def _frames(paths, N, path):
        if paths is None:
            return np.arange(N)
        try:
            paths = [str(p) for p in np.asarray(paths, dtype=object).reshape(-1)]
        except (TypeError, ValueError):
            raise AdapterError(f"{path}: 'img_path' must be a list of file names") from None
        if len(paths) != N:
            raise AdapterError(f"{path}: 'img_path' has {len(paths)} entries but the arrays have {N} frames")
        return frames_from_names(paths, path)
