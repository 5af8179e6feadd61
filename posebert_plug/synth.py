"""Synthetic observations from mocap, and the perturbations PoseBERT trains with.

All functions are pure and seeded through an explicit ``torch.Generator``.
Camera frame: OpenCV (x right, y down, z forward), metres; the mocap world is
Y up facing +Z, turned into the camera frame by ``R_CAM`` (180 degrees about X:
a person facing +Z in the world faces the camera).
"""
from __future__ import annotations

import math

import torch

from .camera import F_NORM, project, transl_to_param
from .rotations import rotvec_to_rotmat, sixd_to_rotmat

R_CAM = torch.tensor([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])


def _u(g, shape, lo, hi):
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def place_in_camera(rotmats, transl_world, g, depth=(2.0, 20.0), u_range=(-0.6, 0.6), v_range=(-0.3, 0.5),
                    random_yaw=True, pitch=(0.0, 0.0), min_depth=1.0):
    """Random heading, camera elevation and placement in front of the canonical camera.

    pitch: range (radians) of the camera's downward tilt (0 = level; 0.5 = looking down
        about 29 degrees, as a raised surveillance camera does).

    min_depth: root depth is clamped to at least this (metres).

    rotmats (B, T, J, 3, 3) world local rotations; transl_world (B, T, 3) root, metres.
    Returns (rotmats (B, T, J, 3, 3) with the root in the camera frame, transl (B, T, 3) camera-frame root).
    """
    B = rotmats.shape[0]
    yaw = _u(g, (B,), 0.0, 2 * math.pi) if random_yaw else torch.zeros(B)
    Ry = rotvec_to_rotmat(torch.stack([torch.zeros(B), yaw, torch.zeros(B)], -1))
    tilt = _u(g, (B,), *pitch)
    Rx = rotvec_to_rotmat(torch.stack([tilt, torch.zeros(B), torch.zeros(B)], -1))
    W = Rx.to(rotmats.dtype) @ R_CAM.to(rotmats.dtype) @ Ry.to(rotmats.dtype)   # (B, 3, 3)
    out = rotmats.clone()
    out[:, :, 0] = W[:, None] @ rotmats[:, :, 0]
    rel = transl_world - transl_world[:, :1]
    rel = (W[:, None] @ rel[..., None])[..., 0]
    z0 = torch.exp(_u(g, (B,), math.log(depth[0]), math.log(depth[1])))
    start = torch.stack([_u(g, (B,), *u_range) * z0 / F_NORM, _u(g, (B,), *v_range) * z0 / F_NORM, z0], -1)
    tr = start[:, None] + rel
    tr = torch.cat([tr[..., :2], tr[..., 2:].clamp_min(min_depth)], -1)
    return out, tr.to(rotmats.dtype)


# ---- masks: True = observed ----------------------------------------------------------

def random_mask(B, T, lo, hi, g):
    """Each sample drops a ratio U(lo, hi) of its frames at random."""
    r = _u(g, (B, 1), lo, hi)
    return torch.rand((B, T), generator=g) >= r


def block_mask(B, T, ratio_lo, ratio_hi, min_len, max_len, g):
    """Drop blocks of min_len..max_len frames until a ratio U(lo, hi) of frames is dropped."""
    obs = torch.ones(B, T, dtype=torch.bool)
    target = _u(g, (B,), ratio_lo, ratio_hi)
    for b in range(B):
        want = int(target[b] * T)
        while (~obs[b]).sum() < want:
            n = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
            s = int(torch.randint(0, max(1, T - n + 1), (1,), generator=g))
            obs[b, s:s + n] = False
    return obs


def future_mask(B, T, min_len, max_len, g):
    """Hide the last k ~ U(min_len, max_len) frames (future prediction)."""
    k = torch.randint(min_len, max_len + 1, (B, 1), generator=g)
    return torch.arange(T)[None] < (T - k)


MASK_MIX = (0.2, 0.45, 0.2, 0.15)   # light, blocks, heavy, future: the shipped models' mixture


def training_mask(B, T, g, mix=MASK_MIX, max_future=None, heavy_max=0.9):
    """The mixture the shipped models train with: light random drops, 1-30 frame blocks,
    heavy random drops (50% to ``heavy_max``) and hidden futures of 1..``max_future`` frames
    (default T // 2 + 8), in proportions ``mix``; at least one frame stays observed."""
    kind = torch.rand(B, generator=g)
    light = random_mask(B, T, 0.0, 0.125, g)
    blocks = block_mask(B, T, 0.0, 0.5, 1, 30, g)
    heavy = random_mask(B, T, 0.5, heavy_max, g)
    fut = future_mask(B, T, 1, max_future or T // 2 + 8, g) & random_mask(B, T, 0.0, 0.1, g)
    c = torch.tensor(mix, dtype=torch.float32).cumsum(0) / sum(mix)
    obs = torch.where((kind < c[0])[:, None], light,
                      torch.where((kind < c[1])[:, None], blocks,
                                  torch.where((kind < c[2])[:, None], heavy, fut)))
    none = ~obs.any(1)
    obs[none, 0] = True
    return obs


# ---- noise --------------------------------------------------------------------------

def rotation_noise(rotmats, sigma, g):
    """Right-multiply each rotation (..., 3, 3) by exp(N(0, sigma^2) axis-angle); sigma (B,) or float."""
    sigma = torch.as_tensor(sigma, dtype=rotmats.dtype)
    eps = torch.randn(rotmats.shape[:-2] + (3,), generator=g, dtype=rotmats.dtype)
    eps = eps * sigma.reshape(sigma.shape + (1,) * (eps.dim() - sigma.dim()))
    return rotmats @ rotvec_to_rotmat(eps)


def replace_with_other(x, frac, g):
    """Replace a fraction ``frac`` (B,) of each sample's frames by the same frames of another
    sample of the batch (the paper's outlier poses). x (B, T, ...) -> (x', replaced (B, T) bool)."""
    B, T = x.shape[:2]
    rep = torch.rand((B, T), generator=g) < torch.as_tensor(frac).reshape(-1, 1)
    other = torch.roll(torch.arange(B), 1)
    mixed = torch.where(rep.reshape(B, T, *([1] * (x.dim() - 2))), x[other], x)
    return mixed, rep


def drop_joints(conf, frac, g):
    """Zero the confidence of a random fraction ``frac`` (B,) of joints. conf (B, T, K)."""
    drop = torch.rand(conf.shape, generator=g) < torch.as_tensor(frac).reshape(-1, 1, 1)
    return conf * (~drop)


def corrupt_rotations(rotmats, g, sigma=(0.0, 0.15), outlier=(0.0, 0.15), outlier_prob=0.5):
    """Per-sample Gaussian axis-angle noise sigma ~ U(sigma) and, for half the samples,
    outlier poses from other sequences. rotmats (B, T, 24, 3, 3)."""
    B = rotmats.shape[0]
    s = _u(g, (B,), *sigma)
    noisy = rotation_noise(rotmats, s[:, None, None], g)
    frac = _u(g, (B,), *outlier) * (torch.rand(B, generator=g) < outlier_prob)
    noisy, _ = replace_with_other(noisy, frac, g)
    return noisy
