"""Pose metrics, batched. Inputs are joints (..., T, J, 3) or (..., J, 3) in metres;
errors are returned in millimetres (Accel in mm/frame^2), PCK in percent.

- MPJPE: mean joint distance after subtracting the root (``root`` index, or no
  alignment with ``root=None``).
- PA-MPJPE: after a similarity Procrustes alignment per pose (``roma``).
- MPVPE: MPJPE on vertices (same alignment as MPJPE, root taken from joints).
- Accel error: mean norm of the difference of second differences over time.
- PCK3D / PA-PCK3D: percentage of joints within ``threshold`` metres (15 cm).
"""
from __future__ import annotations

import roma

__all__ = ["mpjpe", "pa_mpjpe", "mpvpe", "accel_error", "pck3d", "pa_pck3d", "procrustes_align", "per_joint_error"]


def _root_align(pred, gt, root):
    if root is None:
        return pred, gt
    return pred - pred[..., root:root + 1, :], gt - gt[..., root:root + 1, :]


def per_joint_error(pred, gt, root=0):
    """(..., J, 3) x2 -> (..., J) metres, root-aligned."""
    p, g = _root_align(pred, gt, root)
    return (p - g).norm(dim=-1)


def mpjpe(pred, gt, root=0):
    """Mean per-joint position error in mm."""
    return per_joint_error(pred, gt, root).mean() * 1000.0


def procrustes_align(pred, gt):
    """Similarity-align pred (..., J, 3) onto gt (..., J, 3) -> aligned pred."""
    shape = pred.shape
    p, g = pred.reshape(-1, shape[-2], 3).double(), gt.reshape(-1, shape[-2], 3).double()
    R, t, s = roma.rigid_points_registration(p, g, compute_scaling=True)
    aligned = s[:, None, None] * (p @ R.transpose(-1, -2)) + t[:, None, :]
    return aligned.reshape(shape).to(pred.dtype)


def pa_mpjpe(pred, gt):
    return (procrustes_align(pred, gt) - gt).norm(dim=-1).mean() * 1000.0


def mpvpe(pred_verts, gt_verts, pred_root=None, gt_root=None):
    """Vertices (..., V, 3); roots (..., 3) to subtract (e.g. pelvis joints) or None."""
    if pred_root is not None:
        pred_verts = pred_verts - pred_root[..., None, :]
        gt_verts = gt_verts - gt_root[..., None, :]
    return (pred_verts - gt_verts).norm(dim=-1).mean() * 1000.0


def accel_error(pred, gt, root=0):
    """pred, gt (..., T, J, 3) -> mean |a_pred - a_gt| in mm/frame^2 (T >= 3)."""
    if pred.shape[-3] < 3:
        raise ValueError(f"accel_error needs at least 3 frames, got {pred.shape[-3]}")
    p, g = _root_align(pred, gt, root)
    acc = lambda x: x[..., 2:, :, :] - 2 * x[..., 1:-1, :, :] + x[..., :-2, :, :]
    return (acc(p) - acc(g)).norm(dim=-1).mean() * 1000.0


def pck3d(pred, gt, threshold=0.15, root=0):
    return (per_joint_error(pred, gt, root) < threshold).float().mean() * 100.0


def pa_pck3d(pred, gt, threshold=0.15):
    return ((procrustes_align(pred, gt) - gt).norm(dim=-1) < threshold).float().mean() * 100.0
