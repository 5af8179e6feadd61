"""Non-learned temporal baselines, on the same data PoseBERT refines.

Every function takes a sequence with a time axis first and an ``observed``
mask (T,) bool, and returns a complete sequence of the same shape:
- rotations (T, J, 3, 3): filtered on the rotation manifold (entries are
  smoothed, then projected back to the nearest rotation with
  ``roma.special_procrustes``; interpolation is slerp);
- vectors (T, ...): positions, translations, keypoints.

Baselines: nearest fill, linear / slerp interpolation, Savitzky-Golay
(nearest fill then SG, window 31, order 2, as in the paper), One-Euro filter;
for prediction: no-velocity (repeat the last pose) and constant-velocity
propagation.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.signal import savgol_filter

from .rotations import orthonormalize, slerp_rotmat

__all__ = ["nearest_fill", "interpolate", "savgol", "one_euro", "predict_no_velocity", "predict_velocity",
           "savgol_rotations", "interpolate_rotations", "one_euro_rotations"]


def _check(x, observed):
    observed = np.asarray(observed, bool)
    if observed.ndim != 1 or len(observed) != len(x):
        raise ValueError(f"observed must be (T,) with T = {len(x)}, got {observed.shape}")
    if not observed.any():
        raise ValueError("no observed frame: nothing to fill from")
    return observed


def nearest_index(observed) -> np.ndarray:
    """(T,) index of the nearest observed frame (ties go to the earlier one)."""
    obs_idx = np.flatnonzero(observed)
    t = np.arange(len(observed))
    pos = np.clip(np.searchsorted(obs_idx, t), 1, max(1, len(obs_idx) - 1))
    if len(obs_idx) == 1:
        return np.full(len(observed), obs_idx[0])
    left, right = obs_idx[pos - 1], obs_idx[pos]
    return np.where(np.abs(t - left) <= np.abs(right - t), left, right)


def nearest_fill(x, observed):
    """Copy the nearest observed frame into every missing frame. x (T, ...) -> (T, ...)."""
    observed = _check(x, observed)
    return np.asarray(x)[nearest_index(observed)]


def interpolate(x, observed):
    """Linear interpolation of vectors (T, ...) between observed frames; ends hold the nearest value."""
    observed = _check(x, observed)
    x = np.asarray(x, dtype=np.float64)
    t, obs = np.arange(len(x)), np.flatnonzero(observed)
    flat = x.reshape(len(x), -1)
    out = np.stack([np.interp(t, obs, flat[obs, k]) for k in range(flat.shape[1])], -1)
    return out.reshape(x.shape)


def interpolate_rotations(R, observed):
    """Slerp between observed rotations (T, J, 3, 3); ends hold the nearest value."""
    observed = _check(R, observed)
    obs = np.flatnonzero(observed)
    t = np.arange(len(R))
    pos = np.clip(np.searchsorted(obs, t, side="right"), 1, len(obs)) - 1
    nxt = np.minimum(pos + 1, len(obs) - 1)
    a, b = obs[pos], obs[nxt]
    w = np.where(b > a, (t - a) / np.maximum(b - a, 1), 0.0)
    w = np.clip(np.where(t < obs[0], 0.0, w), 0, 1)
    a = np.where(t < obs[0], obs[0], a)
    Rt = torch.as_tensor(np.asarray(R, dtype=np.float64))
    wt = torch.as_tensor(w)[:, None].expand(-1, Rt.shape[1])
    return slerp_rotmat(Rt[a], Rt[b], wt).numpy()


def savgol(x, observed, window: int = 31, order: int = 2):
    """Nearest fill, then a Savitzky-Golay filter along time. Vectors (T, ...)."""
    return filled_savgol(nearest_fill(x, observed), window, order)


def filled_savgol(filled, window: int = 31, order: int = 2):
    """A Savitzky-Golay filter along time of complete vectors (T, ...); the window shrinks to the
    longest odd length the sequence allows."""
    filled = np.asarray(filled, dtype=np.float64)
    T = len(filled)
    w = min(window, T if T % 2 == 1 else T - 1)
    if w <= order:
        return filled
    return savgol_filter(filled, w, order, axis=0, mode="interp")


def savgol_rotations(R, observed, window: int = 31, order: int = 2):
    """Savitzky-Golay on rotation matrices (T, J, 3, 3), re-orthonormalised per frame."""
    sm = savgol(R, observed, window, order)
    return orthonormalize(torch.as_tensor(sm)).numpy()


def one_euro(x, observed, fps: float = 30.0, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0):
    """One-Euro filter (Casiez et al. 2012) after nearest fill. Vectors (T, ...)."""
    filled = nearest_fill(x, observed).astype(np.float64)
    out = np.empty_like(filled)
    out[0] = filled[0]
    dx_prev = np.zeros_like(filled[0])
    te = 1.0 / fps

    def alpha(cutoff):
        r = 2 * math.pi * cutoff * te
        return r / (r + 1)

    for t in range(1, len(filled)):
        dx = (filled[t] - out[t - 1]) / te
        dx_hat = dx_prev + alpha(d_cutoff) * (dx - dx_prev)
        cutoff = min_cutoff + beta * np.abs(dx_hat)
        a = 2 * math.pi * cutoff * te
        a = a / (a + 1)
        out[t] = out[t - 1] + a * (filled[t] - out[t - 1])
        dx_prev = dx_hat
    return out


def one_euro_rotations(R, observed, **kw):
    return orthonormalize(torch.as_tensor(one_euro(R, observed, **kw))).numpy()


def predict_no_velocity(x, n: int):
    """Repeat the last frame n times: x (T, ...) -> (n, ...)."""
    return np.repeat(np.asarray(x)[-1:], n, axis=0)


def predict_velocity(x, n: int, rotations: bool = False):
    """Constant-velocity propagation of the last two frames, n frames ahead -> (n, ...).

    For rotations (T, J, 3, 3) the last relative rotation is applied repeatedly
    (constant angular velocity); for vectors the last difference is added.
    """
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return predict_no_velocity(x, n)
    if not rotations:
        v = x[-1] - x[-2]
        return x[-1] + v * np.arange(1, n + 1).reshape((n,) + (1,) * (x.ndim - 1))
    step = np.swapaxes(x[-2], -1, -2) @ x[-1]     # local increment: R_t = R_{t-1} @ step
    out, cur = [], x[-1]
    for _ in range(n):
        cur = cur @ step
        out.append(cur)
    return np.stack(out)
