"""SMPL estimators: SPIN, VIBE, 4D-Humans/PHALP (crop or fixed cameras), WHAM and GVHMR (full-image cameras).

Every adapter returns its translations for one focal per file (``AdapterOutput.focal_px``): per-frame or
per-track cameras are re-expressed for it by scaling depth, which keeps each root on the pixel where the
estimator put it. ``transl`` is the camera-frame pelvis; for estimators that save SMPL's ``transl``
parameter (WHAM, GVHMR) the rest pelvis of the neutral model is added (betas move it by a few cm).
"""
from __future__ import annotations

import os
import re

import numpy as np
import torch

from posebert_plug.rotations import rotvec_to_rotmat
from posebert_plug.skeletons import to_coco17
from posebert_plug.types import Detection
from .base import (Adapter, AdapterError, Notes, brief, finish, fixed_focal_transl, frame_indices, one_frame_index,
                   register, require, robust_focal, warn_dropped)
from .safe_load import safe_joblib_load

SPIN_FOCAL, SPIN_CROP = 5000.0, 224.0
# Rest pelvis (joint 0 of J_regressor @ v_template) of the neutral models, metres: SMPL's pelvis = transl + this.
SMPL_REST_PELVIS = np.array([-0.0018, -0.2233, 0.0282])
SMPLX_REST_PELVIS = np.array([0.0031, -0.3514, 0.0120])


def crop_cam_to_transl(cam, box_cx, box_cy, box_size, width, height):
    """SPIN-style crop camera [s, tx, ty] (crop of ``box_size`` px around (box_cx, box_cy), focal 5000 on
    a 224 crop) -> (camera-frame translation (N, 3) for a full-image camera with principal point at the
    image centre, focal in px (N,)). Frames with s <= 0 or a non-finite box get NaN (a missing frame)."""
    cam = np.asarray(cam, dtype=np.float64)
    s = np.where(cam[:, 0] > 0, cam[:, 0], np.nan)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        z = 2 * SPIN_FOCAL / (SPIN_CROP * s)
        f_img = SPIN_FOCAL * np.where(box_size > 0, box_size, np.nan) / SPIN_CROP
        x = cam[:, 1] + (box_cx - width / 2) * z / f_img
        y = cam[:, 2] + (box_cy - height / 2) * z / f_img
    return np.stack([x, y, z], -1), f_img


def recentre(transl, focal, cx, cy, width, height):
    """Translations (N, 3) seen by a camera with principal point (cx, cy) -> the same pixels seen by one
    with the principal point at the image centre (x, y shift by the offset times depth over focal)."""
    t = np.array(transl, dtype=np.float64)
    t[:, 0] += (cx - width / 2) * t[:, 2] / focal
    t[:, 1] += (cy - height / 2) * t[:, 2] / focal
    return t


def _rotmats_from_axis_angle(pose, where, joints=24):
    """(T, 3*joints) axis-angle -> (T, 24, 3, 3); SMPL-X's 22 body joints get identity hands (22, 23)."""
    T = len(pose)
    R = rotvec_to_rotmat(torch.as_tensor(np.nan_to_num(pose.reshape(T, joints, 3)))).numpy()
    if joints < 24:
        R = np.concatenate([R, np.tile(np.eye(3), (T, 24 - joints, 1, 1))], 1)
    R[~np.isfinite(pose).all(1)] = np.nan
    return R


def _read_npz_dict(path):
    from .base import load_npz
    return load_npz(path)


@register
class SPINAdapter(Adapter):
    name = "spin"
    reads = ("an .npz of SPIN's demo outputs (SPIN writes none itself): pred_rotmat (N,24,3,3), pred_betas (N,10), "
             "pred_camera (N,3) [s,tx,ty] on the 224 crop, bbox (N,4) xyxy px of the square crop, frame_ids (N,)")
    skeleton = "SMPL-24 rotations"
    units = "metres"
    camera = "crop camera: focal 5000 px on a 224 px crop, translation [tx, ty, 2*5000/(224*s)]"

    def read(self, path, video):
        notes = Notes()
        d = _read_npz_dict(path)
        R = require(d, "pred_rotmat", path, (None, 24, 3, 3))
        N = len(R)
        betas = require(d, "pred_betas", path, (N, 10))
        cam = require(d, "pred_camera", path, (N, 3))
        bbox = require(d, "bbox", path, (N, 4))
        frames = frame_indices(require(d, "frame_ids", path, (N,)), path, "frame_ids") if "frame_ids" in d \
            else np.arange(N)
        size = bbox[:, 2] - bbox[:, 0]
        tr, f = crop_cam_to_transl(cam, (bbox[:, 0] + bbox[:, 2]) / 2, (bbox[:, 1] + bbox[:, 3]) / 2, size,
                                   video.width, video.height)
        f0 = robust_focal(f, path)
        with np.errstate(invalid="ignore"):
            tr = fixed_focal_transl(tr, f, f0)
        dets = [Detection(int(frames[i]), box=bbox[i], rotmats=R[i], betas=betas[i], transl=tr[i], source=self.name)
                for i in range(N) if np.isfinite(R[i]).all() and np.isfinite(tr[i]).all()]
        warn_dropped(path, N, len(dets), notes)
        return finish(dets, path, video, focal_px=f0, notes=notes)


@register
class VIBEAdapter(Adapter):
    name = "vibe"
    reads = ("vibe_output.pkl (joblib): {track_id: {pose (T,72) axis-angle, betas (T,10), pred_cam (T,3) crop "
             "[s,tx,ty], bboxes (T,4) [cx,cy,w,h] px, frame_ids (T,) 0-based, joints2d_img_coord (T,49,2) px "
             "(optional; the first 25 are OpenPose BODY_25)}}")
    skeleton = "SMPL-24 rotations; COCO-17 2D from joints2d_img_coord"
    units = "metres, pixels"
    camera = ("pred_cam on the 224 crop of each track's own bbox (focal 5000 on the crop, so one focal per track "
              "and frame); all tracks re-expressed for the file's median focal. VIBE's known 1.1 crop scale "
              "is not applied (as in VIBE's own image-space conversion)")

    def read(self, path, video):
        notes = Notes()
        per_track, total = [], 0
        for tid_int, where, tr_d in _tracks_by_id(path, notes):
            pose = require(tr_d, "pose", where, (None, 72))
            T = len(pose)
            betas = require(tr_d, "betas", where, (T, 10))
            cam = require(tr_d, "pred_cam", where, (T, 3))
            bb = require(tr_d, "bboxes", where, (T, 4))
            frames = frame_indices(require(tr_d, "frame_ids", where, (T,)), where, "frame_ids")
            j2d = None
            if "joints2d_img_coord" in tr_d:
                j2d = require(tr_d, "joints2d_img_coord", where)
                if j2d.ndim != 3 or j2d.shape[0] != T or j2d.shape[1] < 25 or j2d.shape[2] < 2:
                    raise AdapterError(f"{where}: 'joints2d_img_coord' must be (T, 49, 2), got {j2d.shape}")
                j2d = j2d[:, :25, :2][:, to_coco17("body25")]
            R = _rotmats_from_axis_angle(pose, where)
            tr, f = crop_cam_to_transl(cam, bb[:, 0], bb[:, 1], np.maximum(bb[:, 2], bb[:, 3]), video.width,
                                       video.height)
            per_track.append((tid_int, frames, R, betas, tr, f, bb, j2d))
            total += T
        if not per_track:
            raise AdapterError(f"{path}: every track is empty")
        # One focal for the whole file (each track's crop camera differs): the median over all tracks' frames.
        f0 = robust_focal(np.concatenate([t[5] for t in per_track]), path)
        dets = []
        for tid, frames, R, betas, tr, f, bb, j2d in per_track:
            with np.errstate(invalid="ignore"):
                tr = fixed_focal_transl(tr, f, f0)
            for i in range(len(frames)):
                if not (np.isfinite(R[i]).all() and np.isfinite(tr[i]).all() and np.isfinite(bb[i]).all()):
                    continue
                box = [bb[i, 0] - bb[i, 2] / 2, bb[i, 1] - bb[i, 3] / 2, bb[i, 0] + bb[i, 2] / 2, bb[i, 1] + bb[i, 3] / 2]
                dets.append(Detection(int(frames[i]), box=box, rotmats=R[i], betas=betas[i], transl=tr[i],
                                      kp2d=None if j2d is None else j2d[i], layout2d=None if j2d is None else "coco17",
                                      track_id=tid, source=self.name))
        warn_dropped(path, total, len(dets), notes)
        return finish(dets, path, video, focal_px=f0, notes=notes)


@register
class PHALPAdapter(Adapter):
    name = "4dhumans"
    aliases = ("phalp",)
    reads = ("demo_<video>.pkl (joblib): {frame_path: {tid [...], tracked_ids [...], bbox [[x,y,w,h]...], "
             "smpl [{global_orient (1,3,3), body_pose (23,3,3), betas (10,)}...], camera [(3,)...], conf [...], "
             "2d_joints [(90,) in [0,1] of the padded square...], 3d_joints [(45,3) m, without translation...], "
             "time (0-based frame)}}")
    skeleton = "SMPL-24 rotations; COCO-17 2D and BODY_25 3D from the first 25 of PHALP's 45 joints"
    units = "metres, pixels"
    camera = "translation for focal 5000*max(H,W)/256 px, principal point at the image centre"
    # Only tracks in tracked_ids are kept: PHALP also lists unmatched tracks carrying stale data.

    def read(self, path, video):
        notes = Notes()
        d = safe_joblib_load(path)
        if not isinstance(d, dict) or not d:
            raise AdapterError(f"{path}: expected a non-empty dict keyed by frame path")
        W, H = video.width, video.height
        S = max(W, H)
        focal = 5000.0 * S / 256.0
        pad = np.array([(S - W) // 2, (S - H) // 2], float)   # PHALP pads each frame to a centred square
        i25 = to_coco17("body25")
        dets = []
        for k, (fpath, fr) in enumerate(sorted(d.items(), key=lambda kv: str(kv[0]))):
            where = f"{path} [{fpath}]"
            if not isinstance(fr, dict) or "tid" not in fr:
                raise AdapterError(f"{where}: frame entry lacks 'tid'")
            t = fr.get("time", None)
            if t is None:
                m = re.findall(r"(\d+)", os.path.basename(str(fpath)))
                t = int(m[-1]) if m else k
            t = one_frame_index(t, where, "time")
            tids = _int_list(fr["tid"], where, "tid")
            matched = set(_int_list(fr.get("tracked_ids", tids), where, "tracked_ids"))
            conf = fr.get("conf", [1.0] * len(tids))
            for i, tid in enumerate(tids):
                if tid not in matched:
                    continue
                w = f"{where} track {tid}"
                try:
                    smpl, bbox, cam = fr["smpl"][i], np.asarray(fr["bbox"][i], float), np.asarray(fr["camera"][i], float)
                    score = float(np.asarray(conf[i], float).reshape(-1)[0])
                except (KeyError, IndexError, TypeError, ValueError):
                    raise AdapterError(f"{w}: smpl/bbox/camera/conf lists not aligned with tid") from None
                try:
                    go = require(smpl, "global_orient", w).reshape(1, 3, 3)
                    bp = require(smpl, "body_pose", w).reshape(23, 3, 3)
                except ValueError as e:
                    if isinstance(e, AdapterError):
                        raise
                    raise AdapterError(f"{w}: global_orient must hold one and body_pose 23 rotation matrices") from None
                betas = require(smpl, "betas", w).reshape(-1)[:10]
                R = np.concatenate([go, bp])
                if bbox.shape != (4,) or cam.shape != (3,):
                    raise AdapterError(f"{w}: bbox must be (4,) [x,y,w,h] and camera (3,)")
                if not (np.isfinite(R).all() and np.isfinite(cam).all()):
                    continue
                kp2d, kp3d = self._joints(fr, i, S, pad, cam, i25, w)
                dets.append(Detection(t, box=[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]],
                                      score=float(np.clip(score, 0, 1)) if np.isfinite(score) else 0.0,
                                      rotmats=R, betas=betas, transl=cam,
                                      kp2d=kp2d, layout2d=None if kp2d is None else "coco17",
                                      kp3d=kp3d, layout3d=None if kp3d is None else "body25",
                                      track_id=tid, source=self.name))
        return finish(dets, path, video, focal_px=focal, notes=notes)

    @staticmethod
    def _joints(fr, i, S, pad, cam, i25, where):
        """PHALP's 2d_joints (90,) in [0,1] of the padded square -> COCO-17 pixels; 3d_joints (45, 3) without
        the camera translation -> BODY_25 camera-frame metres. Either is None when absent."""
        kp2d = kp3d = None
        try:
            if "2d_joints" in fr:
                j = np.asarray(fr["2d_joints"][i], float).reshape(-1, 2)
                if len(j) >= 25:
                    kp2d = (j[:25] * S - pad)[i25]
            if "3d_joints" in fr:
                j = np.asarray(fr["3d_joints"][i], float).reshape(-1, 3)
                if len(j) >= 25:
                    kp3d = j[:25] + cam
        except (IndexError, KeyError, TypeError, ValueError):
            raise AdapterError(f"{where}: 2d_joints must be (90,) and 3d_joints (45, 3) per track") from None
        return kp2d, kp3d


def _int_list(v, where, what):
    """A list of integer ids (PHALP's tid / tracked_ids), or AdapterError naming the file."""
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise AdapterError(f"{where}: {what!r} must be a flat list of integer track ids") from None
    if a.ndim != 1 or not np.isfinite(a).all() or (a != np.round(a)).any():
        raise AdapterError(f"{where}: {what!r} must be a flat list of integer track ids, got shape {a.shape}")
    return [int(x) for x in a]


@register
class WHAMAdapter(Adapter):
    name = "wham"
    reads = ("wham_output.pkl (joblib, demo.py --save_pkl): {track_id: {pose (T,72) axis-angle SMPL, root in the "
             "camera frame, trans (T,3) SMPL transl in the camera frame, pose_world (T,72), trans_world (T,3), "
             "betas (T,10), verts (T,6890,3), frame_ids (T,) 0-based}}")
    skeleton = "SMPL-24 rotations"
    units = "metres"
    camera = "full image, focal sqrt(W^2+H^2) px (WHAM's default without --calib), principal point at the centre"
    # transl = trans + the neutral SMPL rest pelvis (WHAM saves SMPL's transl parameter, not the pelvis).

    def read(self, path, video):
        notes = Notes()
        focal = float(np.hypot(video.width, video.height))
        dets, total = [], 0
        for tid, where, tr_d in _tracks_by_id(path, notes):
            pose = require(tr_d, "pose", where, (None, 72))
            T = len(pose)
            trans = require(tr_d, "trans", where)
            if trans.shape not in ((T, 3), (1, T, 3)):
                raise AdapterError(f"{where}: 'trans' must have shape ({T}, 3), got {trans.shape}")
            trans = trans.reshape(T, 3) + SMPL_REST_PELVIS
            betas = require(tr_d, "betas", where)
            betas = betas.reshape(T, -1)[:, :10] if betas.size >= T * 10 else np.zeros((T, 10))
            frames = frame_indices(require(tr_d, "frame_ids", where, (T,)), where, "frame_ids")
            R = _rotmats_from_axis_angle(pose, where)
            total += T
            for i in range(T):
                if np.isfinite(R[i]).all() and np.isfinite(trans[i]).all() and trans[i, 2] > 0:
                    dets.append(Detection(int(frames[i]), rotmats=R[i], betas=betas[i], transl=trans[i],
                                          track_id=tid, source=self.name))
        if total == 0:
            raise AdapterError(f"{path}: every track is empty")
        warn_dropped(path, total, len(dets), notes)
        return finish(dets, path, video, focal_px=focal, notes=notes)


@register
class GVHMRAdapter(Adapter):
    name = "gvhmr"
    reads = ("hmr4d_results.pt (torch.save of tools/demo/demo.py's prediction): smpl_params_incam {global_orient "
             "(L,3), body_pose (L,63) SMPL-X axis-angle, betas (L,10), transl (L,3)}, smpl_params_global, "
             "K_fullimg (L,3,3); L = every frame of the video, one person")
    skeleton = "SMPL-24 rotations (SMPL-X's 21 body joints; hands at rest)"
    units = "metres"
    camera = "K_fullimg (focal sqrt(W^2+H^2) px by default), re-expressed for a principal point at the centre"
    # Loaded with torch.load(weights_only=True): tensors and containers only. transl = SMPL-X transl + rest pelvis.

    def read(self, path, video):
        notes = Notes()
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:   # not a torch file, truncated, or a class outside the tensor allow-list
            raise AdapterError(f"{path}: not a GVHMR torch file loadable with weights_only=True ({brief(e)})") from None
        if not isinstance(d, dict) or not isinstance(d.get("smpl_params_incam"), dict):
            have = sorted(map(str, d.keys())) if isinstance(d, dict) else type(d).__name__
            raise AdapterError(f"{path}: expected a dict with 'smpl_params_incam' and 'K_fullimg' (has: {have})")
        p = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in d["smpl_params_incam"].items()}
        where = f"{path} [smpl_params_incam]"
        go = require(p, "global_orient", where, (None, 3))
        L = len(go)
        bp = require(p, "body_pose", where, (L, None))
        if bp.shape[1] not in (63, 69):
            raise AdapterError(f"{where}: 'body_pose' must be (L, 63) (SMPL-X) or (L, 69), got {bp.shape}")
        transl = require(p, "transl", where, (L, 3))
        betas = require(p, "betas", where, (L, None))[:, :10]
        K = d.get("K_fullimg")
        K = K.numpy() if isinstance(K, torch.Tensor) else K
        K = require({"K_fullimg": K}, "K_fullimg", path)
        if K.shape == (3, 3):
            K = np.broadcast_to(K, (L, 3, 3))
        if K.shape != (L, 3, 3):
            raise AdapterError(f"{path}: 'K_fullimg' must be (L, 3, 3) with L = {L}, got {K.shape}")
        pose = np.concatenate([go, bp], 1)
        R = _rotmats_from_axis_angle(pose, where, joints=pose.shape[1] // 3)
        pelvis = transl + (SMPLX_REST_PELVIS if bp.shape[1] == 63 else SMPL_REST_PELVIS)
        f = K[:, 0, 0]
        f0 = robust_focal(f, path)
        with np.errstate(invalid="ignore", divide="ignore"):
            tr = fixed_focal_transl(recentre(pelvis, f, K[:, 0, 2], K[:, 1, 2], video.width, video.height), f, f0)
        dets = [Detection(i, rotmats=R[i], betas=betas[i], transl=tr[i], track_id=0, source=self.name)
                for i in range(L) if np.isfinite(R[i]).all() and np.isfinite(tr[i]).all() and tr[i, 2] > 0]
        warn_dropped(path, L, len(dets), notes)
        return finish(dets, path, video, focal_px=f0, notes=notes)


def _tracks_by_id(path, notes):
    """Tracks of a joblib file keyed by track id (VIBE ``vibe_output.pkl``, WHAM ``wham_output.pkl``):
    yields (track id as int, "<file> [track id]" for messages, the track's dict); empty tracks are
    dropped with a note."""
    d = safe_joblib_load(path)
    if not isinstance(d, dict) or not d:
        raise AdapterError(f"{path}: expected a non-empty dict keyed by track id")
    for tid, tr_d in d.items():
        where = f"{path} [track {tid}]"
        try:
            tid_int = int(tid)
        except (TypeError, ValueError):
            raise AdapterError(f"{where}: track ids must be integers") from None
        if isinstance(tr_d, dict) and "pose" in tr_d and np.size(tr_d["pose"]) == 0:
            notes(f"{where}: an empty track (no frames) is dropped")
            continue
        yield tid_int, where, tr_d
