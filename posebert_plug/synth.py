"""Synthetic observations from mocap, and the perturbations PoseBERT trains with.

All functions are pure and seeded through an explicit ``torch.Generator``.
Camera frame: OpenCV (x right, y down, z forward), metres; the mocap world is
Y up facing +Z, turned into the camera frame by ``R_CAM`` (180 degrees about X:
a person facing +Z in the world faces the camera).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import camera
from .camera import F_NORM
from .rotations import rotvec_to_rotmat, sixd_to_rotmat

R_CAM = torch.as_tensor(camera.R_CAM, dtype=torch.float32)   # torch copies of camera.py's


def _u(g, shape, lo, hi):
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def place_in_camera(rotmats, transl_world, g, depth=(2.0, 20.0), u_range=(-0.6, 0.6), v_range=(-0.3, 0.5),
                    random_yaw=True, pitch=(0.0, 0.0), min_depth=1.0, roll=0.0):
    """Random heading, camera elevation and placement in front of the canonical camera.

    pitch: range (radians) of the camera's downward tilt (0 = level; 0.5 = looking down
        about 29 degrees, as a raised surveillance camera does).

    min_depth: root depth is clamped to at least this (metres).

    roll: largest camera roll (radians, uniform in +-roll): a handheld or mounted camera is rarely level.

    rotmats (B, T, J, 3, 3) world local rotations; transl_world (B, T, 3) root, metres.
    Returns (rotmats (B, T, J, 3, 3) with the root in the camera frame, transl (B, T, 3) camera-frame root).
    """
    B = rotmats.shape[0]
    yaw = _u(g, (B,), 0.0, 2 * math.pi) if random_yaw else torch.zeros(B)
    Ry = rotvec_to_rotmat(torch.stack([torch.zeros(B), yaw, torch.zeros(B)], -1))
    tilt = _u(g, (B,), *pitch)
    Rx = rotvec_to_rotmat(torch.stack([tilt, torch.zeros(B), torch.zeros(B)], -1))
    W = Rx.to(rotmats.dtype) @ R_CAM.to(rotmats.dtype) @ Ry.to(rotmats.dtype)   # (B, 3, 3)
    if roll:
        rz = _u(g, (B,), -roll, roll)
        W = rotvec_to_rotmat(torch.stack([torch.zeros(B), torch.zeros(B), rz], -1)).to(rotmats.dtype) @ W
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


def training_mask(B, T, g, mix=MASK_MIX, max_future=None, heavy_max=0.9, block_max=0.5, block_len=30):
    """The mixture the shipped models train with: light random drops, blocks of 1..``block_len`` frames
    (up to ``block_max`` of the window), heavy random drops (50% to ``heavy_max``) and hidden futures of
    1..``max_future`` frames (default T // 2 + 8), in proportions ``mix``; at least one frame stays observed.
    Occlusions and missed detections on real video last up to a second or two: ``block_len`` 40 and
    ``block_max`` 0.7 cover them at 30 fps (the defaults are the shipped models' mixture)."""
    kind = torch.rand(B, generator=g)
    light = random_mask(B, T, 0.0, 0.125, g)
    blocks = block_mask(B, T, 0.0, block_max, 1, block_len, g)
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


# ---- augmentations for what differs between training and use (issue: generalisation) --------

@dataclass(frozen=True)
class Augment:
    """What ``posebert-train`` varies beyond the mocap itself (each a ``posebert-train`` option).

    mirror: probability of the left-right mirror image of a window.
    speed: play-rate range (log-uniform; 0.5-2x: slow and fast performers, other frame rates).
    rig_deg: largest constant rest-rotation offset at collars, shoulders, wrists, hips, ankles
        and feet, on half the windows (other rigs and estimators define those joints differently).
    pitch: camera tilt range (radians, positive looks down; 1.05 = 60 degrees, a raised camera).
    roll_deg: largest camera roll (degrees).
    depth: root distance range (metres).
    clean_frac: fraction of windows with exactly clean input (no noise, outliers or swaps): a
        refiner must learn to leave good input alone.
    heavy_frac: fraction of noisy windows whose noise is Student-t (heavy-tailed) not Gaussian.
    swap_frac: largest fraction of frames with left/right arms or legs swapped, on a third of
        the noisy windows.
    depth_jitter: 3D keypoint presets: largest relative error of the keypoints' depth scale.
    proportions: body proportions of the observed person: bone lengths scaled by a global factor in
        1 +- 1.5 p (height) times one factor in 1 +- p per limb group (legs, arms, trunk); the
        targets stay on the model's own body, so the model learns to map other bodies onto it.
    """
    mirror: float = 0.5
    speed: tuple = (0.5, 2.0)
    rig_deg: float = 25.0
    pitch: tuple = (-0.1, 1.05)
    roll_deg: float = 10.0
    depth: tuple = (2.0, 25.0)
    clean_frac: float = 0.05
    heavy_frac: float = 0.3
    swap_frac: float = 0.1
    depth_jitter: float = 0.15
    proportions: float = 0.1

    @classmethod
    def none(cls) -> "Augment":
        """The shipped models' training distribution before these augmentations (for comparisons)."""
        return cls(mirror=0.0, speed=(1.0, 1.0), rig_deg=0.0, pitch=(-0.1, 0.6), roll_deg=0.0, depth=(2.0, 20.0),
                   clean_frac=0.0, heavy_frac=0.0, swap_frac=0.0, depth_jitter=0.0, proportions=0.0)


MIRROR_X = torch.as_tensor(camera.MIRROR_X, dtype=torch.float32)   # reflection of the body frame's X (its left-right)
# SMPL-24 joints whose rest orientation rigs and estimators define differently: collars, shoulders,
# wrists, hips, ankles, feet
RIG_JOINTS = (13, 14, 16, 17, 20, 21, 1, 2, 7, 8, 10, 11)
# left/right SMPL-24 limb joints: (left, right) pairs of arms and legs, swapped by estimator failures
ARM_PAIRS = ((13, 14), (16, 17), (18, 19), (20, 21), (22, 23))
LEG_PAIRS = ((1, 2), (4, 5), (7, 8), (10, 11))


BONE_GROUPS = {"legs": (1, 2, 4, 5, 7, 8, 10, 11), "arms": (13, 14, 16, 17, 18, 19, 20, 21, 22, 23),
               "trunk": (3, 6, 9, 12, 15)}


def bone_scales(g, B: int, p: float) -> torch.Tensor:
    """Per-window SMPL-24 bone-length factors (B, 1, 24) for ``DefaultBodyModel.pose_keypoints``
    (see ``Augment.proportions``); ones when p == 0."""
    s = _u(g, (B, 1), 1 - 1.5 * p, 1 + 1.5 * p).expand(B, 24).clone()
    for joints in BONE_GROUPS.values():
        s[:, list(joints)] *= _u(g, (B, 1), 1 - p, 1 + p)
    return s[:, None]


def smpl_flip_index() -> torch.Tensor:
    """(24,) index of each SMPL-24 joint's mirror image."""
    from .skeletons import get_skeleton
    return torch.as_tensor(get_skeleton("smpl24").flip_map, dtype=torch.long)


def mirror_rotmats(R: torch.Tensor) -> torch.Tensor:
    """The left-right mirror image of SMPL-24 poses: (..., 24, 3, 3) -> (..., 24, 3, 3), left and right
    joints exchanged and every rotation conjugated by the reflection of X (the rest skeleton is
    symmetric, so this is a valid pose of the same body; applied twice it is the identity)."""
    M = MIRROR_X.to(R.dtype)
    return M @ R[..., smpl_flip_index(), :, :] @ M


def mirror_motion(rot6d: torch.Tensor, transl: torch.Tensor, which: torch.Tensor) -> tuple:
    """Left-right mirror image of world motion for the samples where ``which`` (B,) is True.

    rot6d (B, T, 24, 6) local rotations (world: Y up, the body's left +X), transl (B, T, 3) metres.
    Mirroring X swaps left and right joints and conjugates every local rotation by the
    reflection (the rest skeleton is symmetric), so the result is a valid motion of the same body.
    """
    from .rotations import rotmat_to_6d
    if not which.any():
        return rot6d, transl
    r6 = rot6d.clone()
    r6[which] = rotmat_to_6d(mirror_rotmats(sixd_to_rotmat(rot6d[which])))
    tr = transl.clone()
    tr[which, :, 0] = -tr[which, :, 0]
    return r6, tr


def time_warp(rot6d: torch.Tensor, transl: torch.Tensor, speed: torch.Tensor, T: int) -> tuple:
    """Play windows at ``speed`` (B,) times their rate: (B, N, J, 6), (B, N, 3) -> (B, T, J, 6), (B, T, 3).

    Frame t of the output samples the source at ``t * speed`` (linear interpolation; 6D is
    re-orthonormalised downstream by ``sixd_to_rotmat``); N must cover ``(T - 1) * max(speed) + 1``.
    """
    B, N = rot6d.shape[:2]
    pos = torch.arange(T, dtype=torch.float32)[None] * speed[:, None].float()       # (B, T)
    pos = pos.clamp(max=N - 1)
    i0 = pos.floor().long().clamp(max=N - 1)
    i1 = (i0 + 1).clamp(max=N - 1)
    w = (pos - i0.float())
    b = torch.arange(B)[:, None]
    r = rot6d[b, i0] * (1 - w)[..., None, None] + rot6d[b, i1] * w[..., None, None]
    t = transl[b, i0] * (1 - w)[..., None] + transl[b, i1] * w[..., None]
    return r, t


def rig_offsets(rot6d: torch.Tensor, g, max_deg: float, joints=RIG_JOINTS) -> torch.Tensor:
    """Another rig's convention: constant per-joint rest-rotation offsets ``O_j`` (angle up to
    ``max_deg``, a random axis, fixed over each sample) on the global rotations, ``G_j <- G_j O_j``,
    expressed back in local rotations. rot6d (B, T, 24, 6) -> (B, T, 24, 6)."""
    from .kinematics import global_to_local, local_to_global
    from .rotations import rotmat_to_6d
    from .skeletons import get_skeleton
    if max_deg <= 0:
        return rot6d
    B = rot6d.shape[0]
    parents = get_skeleton("smpl24").parents
    axis = torch.nn.functional.normalize(torch.randn(B, len(joints), 3, generator=g), dim=-1)
    ang = _u(g, (B, len(joints), 1), 0.0, math.radians(max_deg))
    O = torch.eye(3).repeat(B, 24, 1, 1)
    O[:, list(joints)] = rotvec_to_rotmat(axis * ang)
    G = local_to_global(sixd_to_rotmat(rot6d), parents) @ O[:, None].to(rot6d.dtype)
    return rotmat_to_6d(global_to_local(G, parents))


def swap_limbs(x: torch.Tensor, frac, g, pairs=ARM_PAIRS + LEG_PAIRS, conj=None) -> torch.Tensor:
    """Estimator left/right confusions: on a fraction ``frac`` (B,) of frames, swap the arms or
    the legs (one of the two, at random) of x (B, T, J, ...) along the joint axis.

    ``conj``: optional (3, 3) reflection applied as ``M X M`` to swapped rotations (x (..., 3, 3)),
    so a swapped limb keeps its own side's orientation convention."""
    B, T = x.shape[:2]
    hit = torch.rand((B, T), generator=g) < torch.as_tensor(frac, dtype=torch.float32).reshape(-1, 1)
    if not hit.any():
        return x
    arms = torch.rand((B, T), generator=g) < 0.5
    out = x.clone()
    for group, sel in ((ARM_PAIRS, hit & arms), (LEG_PAIRS, hit & ~arms)):
        for a, b in group:
            if (a, b) not in pairs:
                continue
            xa, xb = x[:, :, a], x[:, :, b]
            if conj is not None:
                M = conj.to(x.dtype)
                xa, xb = M @ xa @ M, M @ xb @ M
            out[:, :, a] = torch.where(sel.reshape(B, T, *([1] * (x.dim() - 3))), xb, out[:, :, a])
            out[:, :, b] = torch.where(sel.reshape(B, T, *([1] * (x.dim() - 3))), xa, out[:, :, b])
    return out


def heavy_tailed(shape, g, dof: int = 3) -> torch.Tensor:
    """Student-t samples (``dof`` degrees of freedom, integer so the chi-square is a sum of
    seeded squared normals): estimator errors are mostly small with occasional large misses,
    which a Gaussian never draws."""
    z = torch.randn(shape, generator=g)
    chi2 = (torch.randn((dof,) + tuple(shape), generator=g) ** 2).sum(0)
    return z * torch.sqrt(dof / chi2.clamp_min(1e-6))


def noise_level(g, B: int, clean_frac: float) -> torch.Tensor:
    """Per-window noise switch (B,): 0 (exactly clean input) for a fraction ``clean_frac``, else 1
    (the preset's own noise range, drawn per window as before). Low-noise input is also handled at
    inference by ``trust`` (it blends good input back in), so the model's capacity goes to noisy input."""
    return (torch.rand(B, generator=g) >= clean_frac).float()
