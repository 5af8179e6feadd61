"""Forward kinematics and linear blend skinning on a joint tree.

Frames: body frame Y up, the body faces +Z, its left is +X; metres.
"""
from __future__ import annotations

import torch

__all__ = ["forward_kinematics", "skin", "local_to_global", "global_to_local"]


def local_to_global(rotmats: torch.Tensor, parents) -> torch.Tensor:
    """Compose local rotations (..., J, 3, 3) down the tree -> global rotations (..., J, 3, 3).

    ``parents[j] < j`` is required (true for SMPL-24, MANO-16, Hand-21).
    """
    out = [None] * len(parents)
    for j, p in enumerate(parents):
        out[j] = rotmats[..., j, :, :] if p < 0 else out[p] @ rotmats[..., j, :, :]
    return torch.stack(out, dim=-3)


def global_to_local(global_rotmats: torch.Tensor, parents) -> torch.Tensor:
    """Inverse of :func:`local_to_global`."""
    out = []
    for j, p in enumerate(parents):
        g = global_rotmats[..., j, :, :]
        out.append(g if p < 0 else global_rotmats[..., p, :, :].transpose(-1, -2) @ g)
    return torch.stack(out, dim=-3)


def forward_kinematics(rotmats: torch.Tensor, rest_joints: torch.Tensor, parents,
                       transl: torch.Tensor | None = None) -> tuple:
    """Pose a skeleton.

    rotmats: (..., J, 3, 3) local joint rotations (index 0 = global orientation).
    rest_joints: (J, 3) or (..., J, 3) joint positions of the rest pose, metres.
    transl: (..., 3) or None, added to every joint (SMPL convention: the root ends
        at ``rest_joints[0] + transl``).
    Returns (joints (..., J, 3), global rotations (..., J, 3, 3)).
    """
    G = local_to_global(rotmats, parents)
    rest = rest_joints.to(rotmats.dtype)
    pos = [None] * len(parents)
    for j, p in enumerate(parents):
        if p < 0:
            pos[j] = rest[..., j, :].expand(*rotmats.shape[:-3], 3)
        else:
            offset = (rest[..., j, :] - rest[..., p, :]).expand(*rotmats.shape[:-3], 3)
            pos[j] = pos[p] + (G[..., p, :, :] @ offset[..., None])[..., 0]
    joints = torch.stack(pos, dim=-2)
    if transl is not None:
        joints = joints + transl[..., None, :].to(joints.dtype)
    return joints, G


def skin(vertices_rest: torch.Tensor, weights: torch.Tensor, rest_joints: torch.Tensor,
         joints: torch.Tensor, global_rotmats: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning.

    vertices_rest: (V, 3) rest-pose vertices; weights: (V, J), rows sum to 1;
    rest_joints: (J, 3); joints: (..., J, 3) posed joints; global_rotmats: (..., J, 3, 3).
    Returns (..., V, 3) posed vertices.
    """
    # Per-joint affine transform: x -> G (x - rest_j) + joint_j.
    trans = joints - (global_rotmats @ rest_joints.to(joints.dtype)[..., None])[..., 0]
    A = torch.cat([global_rotmats, trans[..., None]], dim=-1)            # (..., J, 3, 4)
    # one (V, J) @ (..., J, 12) product, then a broadcast multiply: V tiny 3x3 matmuls are far slower
    blended = (weights.to(A.dtype) @ A.flatten(-2)).unflatten(-1, (3, 4))   # (..., V, 3, 4)
    v = vertices_rest.to(A.dtype)
    return (blended[..., :3] * v[:, None, :]).sum(-1) + blended[..., 3]
