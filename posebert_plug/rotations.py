"""Rotation conversions with batch dimensions, thin wrappers over `roma`.

Conventions
- rotation matrices: (..., 3, 3), acting on column vectors (``R @ v``).
- 6D: the first two columns of the matrix, shape (..., 6), laid out as the
  row-major flattening of ``R[..., :, :2]`` (Zhou et al. 2019). Decoding uses
  Gram-Schmidt (``roma.special_gramschmidt``), so any 6-vector whose two
  columns are not parallel decodes to a valid rotation.
- axis-angle (rotation vector): (..., 3), radians.
- unit quaternions: (..., 4), ``xyzw`` (roma's convention).
All functions accept torch tensors; ``numpy`` callers can wrap with
``torch.as_tensor``.
"""
from __future__ import annotations

import roma
import torch

__all__ = [
    "rotmat_to_6d", "sixd_to_rotmat", "rotvec_to_rotmat", "rotmat_to_rotvec",
    "rotvec_to_6d", "sixd_to_rotvec", "geodesic_distance", "slerp_rotmat",
    "orthonormalize", "euler_to_rotmat", "rotation_between",
]


def rotmat_to_6d(rotmat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns."""
    _check_trailing(rotmat, (3, 3), "rotmat")
    return rotmat[..., :, :2].reshape(*rotmat.shape[:-2], 6)


def sixd_to_rotmat(sixd: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt orthonormalisation."""
    _check_trailing(sixd, (6,), "6D")
    return roma.special_gramschmidt(sixd.reshape(*sixd.shape[:-1], 3, 2))


def rotvec_to_rotmat(rotvec: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle (radians) -> (..., 3, 3)."""
    _check_trailing(rotvec, (3,), "rotvec")
    return roma.rotvec_to_rotmat(rotvec)


def rotmat_to_rotvec(rotmat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) axis-angle, angle in [0, pi]."""
    _check_trailing(rotmat, (3, 3), "rotmat")
    return roma.rotmat_to_rotvec(rotmat)


def rotvec_to_6d(rotvec: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 6)."""
    return rotmat_to_6d(rotvec_to_rotmat(rotvec))


def sixd_to_rotvec(sixd: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3)."""
    return rotmat_to_rotvec(sixd_to_rotmat(sixd))


def geodesic_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle in radians between rotations (..., 3, 3) and (..., 3, 3) -> (...)."""
    return roma.rotmat_geodesic_distance(a, b)


def slerp_rotmat(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between (..., 3, 3) rotations at weights t (...) in [0, 1]."""
    qa, qb = roma.rotmat_to_unitquat(a), roma.rotmat_to_unitquat(b)
    # Take the short way round: q and -q are the same rotation.
    sign = torch.sign((qa * qb).sum(-1, keepdim=True))
    qb = qb * torch.where(sign == 0, torch.ones_like(sign), sign)
    t = t.to(qa.dtype)[..., None]
    # Normalised linear blend ("nlerp") then exact slerp via angle.
    dot = (qa * qb).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    theta = torch.acos(dot)
    small = theta < 1e-6
    sin = torch.sin(theta).clamp_min(1e-12)
    wa = torch.where(small, 1.0 - t, torch.sin((1.0 - t) * theta) / sin)
    wb = torch.where(small, t, torch.sin(t * theta) / sin)
    q = roma.quat_normalize(wa * qa + wb * qb)
    return roma.unitquat_to_rotmat(q)


def orthonormalize(m: torch.Tensor) -> torch.Tensor:
    """Nearest rotation (special Procrustes) of (..., 3, 3) matrices, e.g. after filtering entries."""
    return roma.special_procrustes(m)


def euler_to_rotmat(order: str, angles: torch.Tensor, degrees: bool = False) -> torch.Tensor:
    """Intrinsic Euler angles, e.g. order 'ZXY' (BVH channel order), angles (..., 3) -> (..., 3, 3).

    ``R = R_order[0] @ R_order[1] @ R_order[2]`` as in BVH files.
    """
    return roma.euler_to_rotmat(order.upper(), angles, degrees=degrees)


def rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Minimal rotation taking direction a (..., 3) to direction b (..., 3) -> (..., 3, 3).

    No roll about the directions is added; anti-parallel inputs rotate by pi about
    an arbitrary perpendicular axis.
    """
    a = torch.nn.functional.normalize(a, dim=-1)
    b = torch.nn.functional.normalize(b, dim=-1)
    axis = torch.cross(a, b, dim=-1)
    sin = axis.norm(dim=-1, keepdim=True)
    cos = (a * b).sum(-1, keepdim=True)
    angle = torch.atan2(sin, cos)
    # Anti-parallel: pick any axis perpendicular to a.
    helper = torch.where(a[..., :1].abs() < 0.9, torch.tensor([1.0, 0, 0], dtype=a.dtype),
                         torch.tensor([0, 1.0, 0], dtype=a.dtype))
    fallback = torch.nn.functional.normalize(torch.cross(a, helper.expand_as(a), dim=-1), dim=-1)
    unit = torch.where(sin > 1e-9, axis / sin.clamp_min(1e-12), fallback)
    return roma.rotvec_to_rotmat(unit * angle)


def _check_trailing(x: torch.Tensor, shape: tuple, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (..., {', '.join(map(str, shape))}), got {type(x).__name__}")
    if tuple(x.shape[-len(shape):]) != shape:
        raise ValueError(f"{name}: expected shape (..., {', '.join(map(str, shape))}), got {tuple(x.shape)}")
