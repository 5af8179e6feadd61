"""Do no harm: how far to trust each observed input, from the input itself.

A refiner must not make good input worse. PoseBERT's output and the estimator's input are
two estimates of the same pose; each observed rotation is blended with PoseBERT's by
inverse-variance weighting, with both variances estimated per track and per joint:

- input noise ``sigma`` (radians): the robust spread of the input around a local quadratic fit
  over 5 frames (smooth motion is fitted almost exactly at 30 fps, estimator jitter is not);
- PoseBERT's own error ``e``: the part of the input/output disagreement the input noise does not
  explain, ``e^2 = max(0, E[d^2] - sigma^2)``.

The weight on the input is ``w = e^2 / (e^2 + sigma^2)``: clean input (sigma -> 0) comes back as
given, noisy input (sigma >> e) is left to PoseBERT. A frame whose disagreement is an outlier
(``d > k sqrt(sigma^2 + e^2)``: a wrong pose, a limb swap) gets no weight. Filled frames keep
PoseBERT's motion re-anchored on the blended observed frames (``refine.anchor_to_observed``).

Shapes: rotations (N, J, 3, 3), observed (N,) bool; angles in radians.
"""
from __future__ import annotations

import numpy as np
import torch

from .rotations import geodesic_distance, orthonormalize, slerp_rotmat

__all__ = ["input_noise", "trust_weights", "blend_with_input"]

# Residual of a 5-frame quadratic fit to white noise has std sqrt(1 - 17/35) of the noise; the norm
# of 3-D isotropic Gaussian noise of per-axis std s has median 1.538 s.
_RESIDUAL_STD = float(np.sqrt(1 - 17 / 35))
_MAXWELL_MEDIAN = 1.5382


def input_noise(R_in: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Per-joint noise of the observed rotations: R_in (N, J, 3, 3), observed (N,) -> (J,) radians
    (per-axis standard deviation; NaN where fewer than 5 consecutive observed frames exist)."""
    N, J = R_in.shape[:2]
    ok = observed.clone()
    run = torch.stack([ok[i:N - 4 + i] for i in range(5)]).all(0) if N >= 5 else torch.zeros(0, dtype=torch.bool)
    if not run.any():
        return torch.full((J,), float("nan"))
    # quadratic least-squares fit over frames t-2..t+2, evaluated at t: weights (-3, 12, 17, 12, -3) / 35
    w = torch.tensor([-3.0, 12.0, 17.0, 12.0, -3.0], dtype=R_in.dtype) / 35
    idx = torch.nonzero(run)[:, 0]                                   # window starts
    win = torch.stack([R_in[idx + i] for i in range(5)])             # (5, M, J, 3, 3)
    fit = orthonormalize((w[:, None, None, None, None] * win).sum(0))
    resid = geodesic_distance(fit, R_in[idx + 2])                    # (M, J)
    return resid.median(0).values / (_MAXWELL_MEDIAN * _RESIDUAL_STD)


def trust_weights(R_in: torch.Tensor, R_out: torch.Tensor, observed: torch.Tensor, outlier_k: float = 3.0,
                  sigma_floor: float = 1e-3) -> torch.Tensor:
    """Weight of the input per frame and joint: (N, J) in [0, 1], 0 on unobserved and outlier frames."""
    sigma = input_noise(R_in, observed)
    d = geodesic_distance(R_in, R_out)                               # (N, J)
    N, J = d.shape
    if not observed.any() or torch.isnan(sigma).all():
        return torch.zeros(N, J, dtype=R_in.dtype)
    d_obs = d[observed]
    # per-axis variances: E[d^2] = 3 (sigma^2 + e^2) for isotropic errors; medians keep outliers out
    total = (d_obs.median(0).values / _MAXWELL_MEDIAN) ** 2
    s2 = torch.nan_to_num(sigma, nan=float("inf")).clamp_min(sigma_floor) ** 2
    e2 = (total - s2).clamp_min(0.0)
    w = e2 / (e2 + s2)
    w = w[None].expand(N, J).clone()
    outlier = d > outlier_k * _MAXWELL_MEDIAN * torch.sqrt(s2 + e2)[None]
    w[outlier | ~observed[:, None]] = 0.0
    return w


def blend_with_input(R_out: torch.Tensor, R_in: torch.Tensor, observed: torch.Tensor, **kw) -> torch.Tensor:
    """PoseBERT's rotations blended with the trusted inputs (see module doc) -> (N, J, 3, 3).

    Observed frames move toward the input by their weight; filled frames follow PoseBERT's motion
    re-anchored on the blended frames next to them."""
    from .refine import anchor_to_observed
    R_in = torch.nan_to_num(R_in.to(R_out.dtype))
    w = trust_weights(R_in, R_out, observed, **kw)
    if not (w > 0).any():
        return R_out
    blended = slerp_rotmat(R_out, R_in, w)
    return anchor_to_observed(R_out, blended, observed)
