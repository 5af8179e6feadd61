"""AMASS-format ``.npz`` reader (SMPL or SMPL-H axis-angle poses).

Keys: ``poses`` (T, 72) SMPL or (T, 156) SMPL-H axis-angle, ``trans`` (T, 3)
metres, ``mocap_framerate`` (scalar). AMASS worlds are Z up; the result is
turned to Y up. SMPL-H hands are dropped (SMPL-24 hand joints stay identity).
``transl`` here is the pelvis position: AMASS ``trans`` plus the neutral SMPL
rest pelvis offset (the true offset depends on betas; without SMPL files the
neutral mean is used, a few millimetres off).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ..rotations import rotvec_to_rotmat
from .retarget import Motion
from .skeleton_motion import MocapFormatError

# Neutral SMPL pelvis rest position (metres, SMPL axes).
SMPL_NEUTRAL_PELVIS = np.array([0.0019, -0.2230, 0.0254])
Z_UP_TO_Y_UP = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])


def read_amass(path, up: str = "z") -> Motion:
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as d:
            if "poses" not in d.files or "trans" not in d.files:
                raise MocapFormatError(path, f"not an AMASS file: needs 'poses' and 'trans', has {d.files}")
            poses, trans = d["poses"].astype(np.float64), d["trans"].astype(np.float64)
            fps = float(d["mocap_framerate"]) if "mocap_framerate" in d.files else \
                float(d["mocap_frame_rate"]) if "mocap_frame_rate" in d.files else None
    except (ValueError, OSError) as e:
        if isinstance(e, MocapFormatError):
            raise
        raise MocapFormatError(path, f"cannot read as .npz ({e})") from None
    if fps is None:
        raise MocapFormatError(path, "no 'mocap_framerate'")
    if poses.ndim != 2 or poses.shape[1] not in (72, 156, 165):
        raise MocapFormatError(path, f"'poses' must be (T, 72) SMPL or (T, 156) SMPL-H, got {poses.shape}")
    if trans.shape != (poses.shape[0], 3):
        raise MocapFormatError(path, f"'trans' must be ({poses.shape[0]}, 3), got {trans.shape}")
    if not (np.isfinite(poses).all() and np.isfinite(trans).all()):
        raise MocapFormatError(path, "NaN or infinite values in poses/trans")
    T = poses.shape[0]
    aa = np.zeros((T, 24, 3))
    if poses.shape[1] == 72:
        aa[:] = poses.reshape(T, 24, 3)
    else:  # SMPL-H / SMPL-X: 22 body joints, hands dropped
        aa[:, :22] = poses[:, :66].reshape(T, 22, 3)
    R = rotvec_to_rotmat(torch.as_tensor(aa)).numpy()
    W = Z_UP_TO_Y_UP if up == "z" else np.eye(3)
    R[:, 0] = W @ R[:, 0]
    transl = (trans + SMPL_NEUTRAL_PELVIS) @ W.T
    return Motion(R, transl, fps, path)
