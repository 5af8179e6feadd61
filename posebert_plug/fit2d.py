"""Image-aligned bodies: fit pose and translation to the observed 2D keypoints.

PoseBERT's output is a plausible, smooth motion, but it is predicted from a
canonical camera and a mean body: projected into the image, its limbs and its
root miss the person by tens of pixels. :func:`fit_to_keypoints` fits, for every
frame of a track at once (one batch, a few dozen Adam steps), a rotation
correction per joint and a translation correction so that the body's keypoints
project onto the confident observed 2D keypoints, with

- data: pseudo-Huber reprojection error in pixels, weighted by the keypoint
  confidences (``scale_px``: pixels at which an error stops counting quadratically,
  so that a swapped or wrong keypoint pulls little);
- prior: squared rotation corrections (radians; PoseBERT's pose is the prior, and
  the joints no keypoint sees, as well as depth ambiguities, stay as it says);
- smoothness: the corrections are piecewise linear in time between knots
  ``knot_seconds`` apart (filled frames follow their neighbours; the output keeps
  PoseBERT's motion and adds only slow corrections), with a penalty on their second
  difference at the knots; afterwards the correction is scaled down while the fitted
  keypoints would accelerate more than the observed ones (never jerkier than the input).

Weights (``FitOptions``) were set on vtest.avi / the demo clip so that the
median reprojection error drops to the detector's noise level while the output
acceleration stays below the input's (``bench/realvideo.py`` prints both).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["FitOptions", "fit_to_keypoints", "reprojection_error_px", "acceleration_px"]


@dataclass
class FitOptions:
    iters: int = 40
    lr: float = 0.03
    scale_px: float = 8.0        # pseudo-Huber scale of the reprojection error (pixels)
    w_prior: float = 1.0         # rotation correction (per radian^2, per joint)
    knot_seconds: float = 0.15   # corrections are piecewise linear between knots this far apart (at least 2 frames)
    w_smooth: float = 10.0       # second difference of the corrections at the knots (per radian^2 / per m^2)
    min_conf: float = 0.2        # keypoints below are not fitted
    min_keypoints: int = 6       # frames with fewer confident keypoints have no data term
    fixed_joints: tuple = (10, 11, 22, 23)   # feet ends and hands: no COCO keypoint sees them
    # After the fit, the correction is scaled down (halved, down to none) while the fitted keypoints
    # accelerate more than the observed ones: the output is never jerkier than its input.
    limit_acceleration: bool = True
    fps: float = 30.0            # the track's frame rate (sets the knot spacing in frames)


def _rotvec_to_rotmat(v):
    import roma
    return roma.rotvec_to_rotmat(v)


def _hat_basis(N: int, step: int) -> torch.Tensor:
    """(N, M) linear interpolation from M knots (frames 0, step, ..., N - 1) to N frames."""
    knots = np.unique(np.r_[np.arange(0, N, step), N - 1])
    B = np.zeros((N, len(knots)))
    t = np.arange(N)
    k = np.clip(np.searchsorted(knots, t, side="right") - 1, 0, len(knots) - 1)
    nxt = np.minimum(k + 1, len(knots) - 1)
    span = np.maximum(knots[nxt] - knots[k], 1)
    w = np.where(nxt > k, (t - knots[k]) / span, 0.0)
    B[t, k] += 1 - w
    B[t, nxt] += w
    return torch.as_tensor(B)


def fit_to_keypoints(R, transl, uv_px, conf, observed, body, layout, focal_px, centre,
                     options: FitOptions | None = None):
    """R (N, J, 3, 3), transl (N, 3) (PoseBERT's output, camera frame, metres); uv_px (N, K, 2) the
    observed keypoints in pixels in ``layout`` (rows of unobserved frames ignored), conf (N, K),
    observed (N,) bool; body: a body model with ``pose_keypoints``; focal_px; centre (cx, cy).
    Returns (R, transl) fitted (same shapes and dtype)."""
    o = options or FitOptions()
    dtype = R.dtype
    R0 = R.detach().double()
    t0 = transl.detach().double()
    N, J = R0.shape[:2]
    uv = torch.as_tensor(np.nan_to_num(np.asarray(uv_px, np.float64)))
    c = torch.as_tensor(np.nan_to_num(np.asarray(conf, np.float64)))
    c = torch.where(c >= o.min_conf, c, torch.zeros_like(c))
    obs = torch.as_tensor(np.asarray(observed, bool))
    obs = obs & ((c > 0).sum(-1) >= o.min_keypoints)
    c = c * obs[:, None]
    if not obs.any() or N < 1:
        return R, transl
    cx, cy = float(centre[0]), float(centre[1])
    f = float(focal_px)
    free = torch.ones(J, 1, dtype=torch.float64)
    free[[j for j in o.fixed_joints if j < J]] = 0
    B = _hat_basis(N, max(2, int(round(o.knot_seconds * (o.fps or 30.0)))) if o.w_smooth > 0 or o.knot_seconds > 0 else 1)
    M = B.shape[1]
    cv = torch.zeros(M, J, 3, dtype=torch.float64, requires_grad=True)
    ct = torch.zeros(M, 3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([cv, ct], lr=o.lr)
    csum = c.sum().clamp_min(1.0)

    def pose(cv, ct):
        dv = torch.einsum("nm,mjc->njc", B, cv) * free
        return R0 @ _rotvec_to_rotmat(dv), t0 + B @ ct, dv

    with torch.enable_grad():
        for it in range(o.iters):
            opt.zero_grad()
            Rf, tf, dv = pose(cv, ct)
            kp = body.pose_keypoints(Rf.float(), tf.float(), layout).double()
            z = kp[..., 2].clamp_min(0.05)
            proj = torch.stack([f * kp[..., 0] / z + cx, f * kp[..., 1] / z + cy], -1)
            r2 = ((proj - uv) ** 2).sum(-1) / o.scale_px ** 2
            loss = (c * (torch.sqrt(1 + r2) - 1)).sum() / csum + o.w_prior * (dv ** 2).sum() / (N * J)
            if M >= 3 and o.w_smooth > 0:
                loss = loss + o.w_smooth * (((cv[2:] - 2 * cv[1:-1] + cv[:-2]) ** 2).sum() / ((M - 2) * J) +
                                            ((ct[2:] - 2 * ct[1:-1] + ct[:-2]) ** 2).sum() / (M - 2))
            loss.backward()
            opt.step()
            for g in opt.param_groups:   # a short cosine decay: the last steps settle
                g["lr"] = o.lr * 0.5 * (1 + np.cos(np.pi * (it + 1) / o.iters))
    # Never jerkier than the input: if the fitted keypoints accelerate more than the observed ones
    # (px/frame^2 over keypoints seen three frames in a row), the correction is scaled down
    # (1/2, 1/4, ... none) until they do not.
    with torch.no_grad():
        valid = (c >= 0.5).numpy() & obs.numpy()[:, None]
        a_in = acceleration_px(uv.numpy(), valid)
        for alpha in (1.0, 0.5, 0.25, 0.125, 0.0):
            Rf, tf, _ = pose(cv * alpha, ct * alpha)
            if not o.limit_acceleration or not np.isfinite(a_in) or alpha == 0.0:
                break
            kp = body.pose_keypoints(Rf.float(), tf.float(), layout).double().numpy()
            if acceleration_px(project_px(kp, f, (cx, cy)), valid) <= a_in:
                break
    return Rf.to(dtype), tf.to(transl.dtype)


def project_px(points, focal_px, centre):
    """(..., 3) camera-frame points -> (..., 2) pixels."""
    p = np.asarray(points, np.float64)
    z = np.clip(p[..., 2:3], 1e-3, None)
    return np.concatenate([focal_px * p[..., :1] / z + centre[0], focal_px * p[..., 1:2] / z + centre[1]], -1)


def reprojection_error_px(kp_px, uv_px, conf, observed, min_conf: float = 0.5) -> np.ndarray:
    """Per observed frame: the median distance (px) between projected and observed keypoints with
    confidence >= min_conf (NaN where none) -> (N,)."""
    d = np.linalg.norm(np.asarray(kp_px) - np.asarray(uv_px), axis=-1)
    ok = (np.nan_to_num(conf) >= min_conf) & np.asarray(observed, bool)[:, None] & np.isfinite(d)
    out = np.full(len(d), np.nan)
    for i in np.flatnonzero(ok.any(1)):
        out[i] = np.median(d[i, ok[i]])
    return out


def acceleration_px(kp_px, valid) -> float:
    """Mean 2D acceleration (px/frame^2) over keypoints valid (N, K) bool at three consecutive frames."""
    kp = np.asarray(kp_px, np.float64)
    v = np.asarray(valid, bool)
    if len(kp) < 3:
        return float("nan")
    a = np.linalg.norm(kp[2:] - 2 * kp[1:-1] + kp[:-2], axis=-1)
    ok = v[2:] & v[1:-1] & v[:-2] & np.isfinite(a)
    return float(a[ok].mean()) if ok.any() else float("nan")
