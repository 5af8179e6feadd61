"""The canonical camera PoseBERT is trained with, and conversions to real cameras.

Camera frame: OpenCV (x right, y down, z forward), metres. Normalised image
coordinates: ``u = (x_px - cx) / s``, ``v = (y_px - cy) / s`` with
``s = max(W, H) / 2``, so the frame spans about [-1, 1] and the centre is 0.
The canonical camera has focal ``F_NORM`` in these units (the paper fixes one
focal and the principal point at the centre). A real camera with focal
``f_px`` has ``f_norm = f_px / s``; the same 2D input then means a person
``f_norm / F_NORM`` times farther away, which :func:`to_real_depth` applies.
"""
from __future__ import annotations

import numpy as np
import torch

F_NORM = 2.5  # canonical focal, in half-image units (a 2*atan(1/2.5) = 44 degree field of view)
# The camera frame (y down, z forward) <-> a Y-up world facing the camera (180 degrees about X).
R_CAM = np.diag([1.0, -1.0, -1.0])
# Reflection of X (left-right): a left hand as the mirrored right hand, a mirrored body.
MIRROR_X = np.diag([-1.0, 1.0, 1.0])


def project_px(points, focal_px, centre):
    """(..., 3) camera-frame points (metres) -> (..., 2) pixels of a pinhole camera with focal
    ``focal_px`` and principal point ``centre`` (cx, cy); depths below 1 mm are clamped."""
    p = np.asarray(points, np.float64)
    z = np.clip(p[..., 2:3], 1e-3, None)
    return np.concatenate([focal_px * p[..., :1] / z + centre[0], focal_px * p[..., 1:2] / z + centre[1]], -1)


def project(points: torch.Tensor, f_norm: float = F_NORM) -> torch.Tensor:
    """(..., 3) camera-frame points -> (..., 2) normalised image coordinates."""
    z = points[..., 2:3].clamp_min(1e-3)
    return f_norm * points[..., :2] / z


def transl_to_param(transl: torch.Tensor, f_norm: float = F_NORM) -> torch.Tensor:
    """(..., 3) camera-frame root position -> (..., 3) (u, v, nearness = log(1/z))."""
    z = transl[..., 2:3].clamp_min(1e-3)
    return torch.cat([f_norm * transl[..., :2] / z, -torch.log(z)], dim=-1)


def param_to_transl(param: torch.Tensor, f_norm: float = F_NORM) -> torch.Tensor:
    """Inverse of :func:`transl_to_param`: (..., 3) -> (..., 3) camera-frame position."""
    z = torch.exp(-param[..., 2:3])
    return torch.cat([param[..., :2] * z / f_norm, z], dim=-1)


def pixels_to_norm(xy: torch.Tensor, width: int, height: int, cx=None, cy=None) -> torch.Tensor:
    """(..., 2) pixels -> normalised coordinates of an image of size (width, height)."""
    cx = width / 2 if cx is None else cx
    cy = height / 2 if cy is None else cy
    s = max(width, height) / 2
    return torch.stack([(xy[..., 0] - cx) / s, (xy[..., 1] - cy) / s], dim=-1)


def norm_to_pixels(uv: torch.Tensor, width: int, height: int, cx=None, cy=None) -> torch.Tensor:
    cx = width / 2 if cx is None else cx
    cy = height / 2 if cy is None else cy
    s = max(width, height) / 2
    return torch.stack([uv[..., 0] * s + cx, uv[..., 1] * s + cy], dim=-1)


def to_real_camera(param: torch.Tensor, f_norm_real: float) -> torch.Tensor:
    """Canonical (u, v, nearness) (..., 3) -> camera-frame position (..., 3) for a real camera.

    The same normalised 2D seen through focal ``f_norm_real`` instead of ``F_NORM``
    means depth scaled by ``f_norm_real / F_NORM``; x and y are unchanged.
    """
    t = param_to_transl(param)
    return torch.cat([t[..., :2], t[..., 2:] * (f_norm_real / F_NORM)], dim=-1)


def focal_norm(focal_px, width: int, height: int) -> float:
    """Focal in normalised units; ``None`` means the canonical focal."""
    return F_NORM if focal_px is None else float(focal_px) / (max(width, height) / 2)
