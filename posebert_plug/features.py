"""Per-frame input encodings of the presets (paper section 3.4.1).

All functions take batches with a trailing joint axis and return (..., D).
- SMPL: 24 x 6D local rotations (root in the camera frame) + normalised 2D of
  the 24 projected joints -> 24*6 + 24*2 = 192.
- 3D keypoints: bone-length-normalised, rotated to the canonical body frame
  (hips -> shoulders is +Y, right -> left shoulder is +X) -> 3K, plus the 6D of
  that frame's rotation (6), plus normalised 2D (2K) -> 5K + 6.
- 2D keypoints: normalised 2D (2K) and confidences (K) -> 3K; a missing
  keypoint has coordinates 0 and confidence 0.
"""
from __future__ import annotations

import torch

from .rotations import rotmat_to_6d
from .skeletons import canonical_frame_joints, get_skeleton


def smpl_features(rot6d: torch.Tensor, kp2d: torch.Tensor) -> torch.Tensor:
    """rot6d (..., 24, 6), kp2d (..., 24, 2) -> (..., 192)."""
    return torch.cat([rot6d.flatten(-2), kp2d.flatten(-2)], dim=-1)


def canonical_rotation(kp3d: torch.Tensor, layout) -> torch.Tensor:
    """(..., K, 3) keypoints -> (..., 3, 3) rotation R whose rows are the body axes, so that
    ``R @ (p - origin)`` is in the canonical frame."""
    idx = canonical_frame_joints(layout)
    origin = kp3d[..., idx["origin"], :].mean(-2)
    up = torch.nn.functional.normalize(kp3d[..., idx["up"], :].mean(-2) - origin, dim=-1)
    side = kp3d[..., idx["side_pos"], :].mean(-2) - kp3d[..., idx["side_neg"], :].mean(-2)
    x = torch.nn.functional.normalize(side - (side * up).sum(-1, keepdim=True) * up, dim=-1)
    z = torch.cross(x, up, dim=-1)
    return torch.stack([x, up, z], dim=-2)


def normalise_bones(kp3d: torch.Tensor, layout, bone_lengths: torch.Tensor) -> torch.Tensor:
    """Rescale every bone (tree of the layout) to ``bone_lengths`` (K,) (child-indexed; root ignored),
    walking from the root so directions are kept. (..., K, 3) -> (..., K, 3)."""
    s = get_skeleton(layout)
    out = [None] * s.num_joints
    for j in s.traversal.tolist():
        p = s.parents[j]
        if p < 0:
            out[j] = kp3d[..., j, :]
        else:
            d = torch.nn.functional.normalize(kp3d[..., j, :] - kp3d[..., p, :], dim=-1)
            out[j] = out[p] + bone_lengths[j] * d
    return torch.stack(out, dim=-2)


def kp3d_features(kp3d: torch.Tensor, kp2d: torch.Tensor, layout, bone_lengths: torch.Tensor) -> torch.Tensor:
    """kp3d (..., K, 3) metres (any frame), kp2d (..., K, 2) normalised -> (..., 5K + 6)."""
    R = canonical_rotation(kp3d, layout)
    idx = canonical_frame_joints(layout)
    normed = normalise_bones(kp3d, layout, bone_lengths)
    origin = normed[..., idx["origin"], :].mean(-2, keepdim=True)
    canon = ((normed - origin) @ R.transpose(-1, -2))
    return torch.cat([canon.flatten(-2), rotmat_to_6d(R.transpose(-1, -2)), kp2d.flatten(-2)], dim=-1)


def kp2d_features(kp2d: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    """kp2d (..., K, 2) normalised, conf (..., K) in [0, 1] -> (..., 3K)."""
    return torch.cat([(kp2d * (conf[..., None] > 0)).flatten(-2), conf], dim=-1)


def bone_lengths_of(kp3d_rest: torch.Tensor, layout) -> torch.Tensor:
    """(K, 3) rest keypoints -> (K,) length of the bone ending at each joint (0 for the root)."""
    s = get_skeleton(layout)
    out = torch.zeros(s.num_joints, dtype=kp3d_rest.dtype)
    for c, p in s.bones:
        out[c] = (kp3d_rest[c] - kp3d_rest[p]).norm()
    return out
