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

__all__ = ["input_noise", "trust_weights", "smooth_residual", "blend_with_input", "keypoint_noise",
           "refine_keypoints"]

# Residual of a 5-frame quadratic fit to white noise has std sqrt(1 - 17/35) of the noise; the norm
# of 3-D isotropic Gaussian noise of per-axis std s has median 1.538 s.
_RESIDUAL_STD = float(np.sqrt(1 - 17 / 35))
_MAXWELL_MEDIAN = 1.5382


_QUAD5 = (-3.0, 12.0, 17.0, 12.0, -3.0)   # quadratic least-squares fit over t-2..t+2, evaluated at t (/ 35)


def _five_frame_fit(x: torch.Tensor, observed: torch.Tensor):
    """Frames with 5 consecutive observed frames around them and the quadratic fit there:
    (index of the centre frames (M,), fit (M, ...)); None when there is no such run."""
    N = len(x)
    run = torch.stack([observed[i:N - 4 + i] for i in range(5)]).all(0) if N >= 5 else torch.zeros(0, dtype=torch.bool)
    if not run.any():
        return None
    idx = torch.nonzero(run)[:, 0]                                   # window starts
    w = torch.tensor(_QUAD5, dtype=x.dtype) / 35
    fit = sum(w[i] * x[idx + i] for i in range(5))
    return idx + 2, fit


def _noise_from_residual(resid: torch.Tensor) -> torch.Tensor:
    """Per-axis noise std from the residual norms (M, K) of the 5-frame fit -> (K,)."""
    return resid.median(0).values / (_MAXWELL_MEDIAN * _RESIDUAL_STD)


def input_noise(R_in: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Per-joint noise of the observed rotations: R_in (N, J, 3, 3), observed (N,) -> (J,) radians
    (per-axis standard deviation; NaN where fewer than 5 consecutive observed frames exist)."""
    f = _five_frame_fit(R_in, observed)
    if f is None:
        return torch.full((R_in.shape[1],), float("nan"))
    centre, fit = f
    return _noise_from_residual(geodesic_distance(orthonormalize(fit), R_in[centre]))


def _inverse_variance_weights(d: torch.Tensor, observed: torch.Tensor, s2: torch.Tensor, outlier_k: float):
    """Weight of the input (N, K) from the input/estimate distances d (N, K) and the input's per-axis
    noise variance s2 (K,): ``e^2 / (e^2 + s2)`` with the estimate's error e^2 the part of the median
    disagreement the noise does not explain; 0 on unobserved frames and outliers."""
    # per-axis variances: E[d^2] = 3 (sigma^2 + e^2) for isotropic errors; medians keep outliers out
    total = (d[observed].median(0).values / _MAXWELL_MEDIAN) ** 2
    e2 = (total - s2).clamp_min(0.0)
    w = (e2 / (e2 + s2))[None].expand_as(d).clone()
    w[(d > outlier_k * _MAXWELL_MEDIAN * torch.sqrt(s2 + e2)[None]) | ~observed[:, None]] = 0.0
    return w


def trust_weights(R_in: torch.Tensor, R_out: torch.Tensor, observed: torch.Tensor, outlier_k: float = 3.0,
                  sigma_floor: float = 1e-3, sigma: torch.Tensor | None = None) -> torch.Tensor:
    """Weight of the input per frame and joint: (N, J) in [0, 1], 0 on unobserved and outlier frames.
    ``sigma``: the input's noise (J,) when already known (:func:`input_noise`)."""
    sigma = input_noise(R_in, observed) if sigma is None else sigma
    d = geodesic_distance(R_in, R_out)                               # (N, J)
    if not observed.any() or torch.isnan(sigma).all():
        return torch.zeros_like(d)
    s2 = torch.nan_to_num(sigma, nan=float("inf")).clamp_min(sigma_floor) ** 2
    return _inverse_variance_weights(d, observed, s2, outlier_k)


def _noise_frames(observed: torch.Tensor) -> int:
    """How many frames the noise estimate of :func:`input_noise` rests on (centres of 5 observed in a row)."""
    o = observed.to(torch.int32)
    return int((o.unfold(0, 5, 1).sum(-1) == 5).sum()) if len(o) >= 5 else 0


def smooth_residual(R_out: torch.Tensor, R_in: torch.Tensor, observed: torch.Tensor, windows=(5, 9, 15, 31, 61, 121),
                    outlier_k: float = 3.0, sigma_floor: float = 1e-3, sigma: torch.Tensor | None = None,
                    min_noise_frames: int = 16) -> torch.Tensor:
    """PoseBERT's rotations corrected by the temporally smoothed residual to the input, per joint,
    where that is estimated to be closer to the truth -> (N, J, 3, 3).

    Candidates per joint, for the residual ``r = log(R_out^T R_in)`` of inlier observed frames: none
    (the model's output as it is); ``lam * S_w r``, quadratic Savitzky-Golay over each of ``windows``
    shrunk by ``lam`` in {1/4, 1/2, 3/4, 1}; ``lam * mean(r)``, a constant correction (a rig's or an
    estimator's own rest pose). Each joint takes the candidate of least estimated error, Stein's
    unbiased risk estimate with the noise ``s`` of :func:`input_noise`: ``|r - f|^2 - 3 s^2 +
    6 s^2 h`` with h the weight of a frame's own residual in its correction ``f`` (0 for none,
    ``lam`` times the smoother's centre weight, ``lam / M`` for the mean over M frames). On motion the
    model knows, its output wins; on motion it never saw, its bias is the larger error and the
    smoothed input corrects it. Held-out performers, ``bench/generalize.py --sections corrupt``:
    see ``bench/results/generalize.md`` (the estimate used to charge the model's output 6 s^2 more
    and was then only trusted on low-noise input; realistic corruption 0.78x SG then, 0.70x now).
    With the noise estimated on fewer than ``min_noise_frames`` frames (half the frames dropped at
    random leaves a few runs of 5) the risk estimate is not reliable and the model's output is kept."""
    from .baselines import filled_savgol, nearest_index
    from .rotations import rotmat_to_rotvec, rotvec_to_rotmat
    if _noise_frames(observed) < min_noise_frames:
        return R_out
    sigma = input_noise(R_in, observed) if sigma is None else sigma
    if torch.isnan(sigma).all():
        return R_out
    s2 = torch.nan_to_num(sigma, nan=float("inf")).clamp_min(sigma_floor) ** 2       # (J,)
    r = rotmat_to_rotvec(R_out.transpose(-1, -2) @ R_in)                            # (N, J, 3)
    d = r.norm(dim=-1)
    scale = d[observed].median(0).values
    inl = observed[:, None] & (d <= outlier_k * scale[None])                        # (N, J)
    J = r.shape[1]

    cnt = inl.sum(0).clamp_min(1)                                                   # (J,)

    def risk(res, h):   # per joint, over its inlier frames
        return ((res ** 2).sum(-1) * inl).sum(0) / cnt - 3 * s2 + 6 * s2 * h

    best, best_risk = r.new_zeros(r.shape), risk(r, 0.0)
    # each joint's residual with its own outliers and gaps nearest-filled, then one filter call for all
    rn = r.double().numpy()
    filled = np.stack([rn[nearest_index(inl[:, j].numpy()), j] if inl[:, j].any() else np.zeros_like(rn[:, j])
                       for j in range(J)], 1)
    for w in windows:
        if w > len(r):
            continue
        full = torch.as_tensor(filled_savgol(filled, w)).to(r.dtype)
        for lam in (0.25, 0.5, 0.75, 1.0):
            sr = lam * full
            rk = risk(r - sr, lam * _sg_center_weight(w))
            take = (rk < best_risk) & inl.any(0)
            best = torch.where(take[None, :, None], sr, best)
            best_risk = torch.where(take, rk, best_risk)
    # a constant correction per joint (the mean inlier residual: a rig's or estimator's own rest pose)
    mean = (r * inl[..., None]).sum(0) / cnt[:, None]                               # (J, 3)
    for lam in (0.25, 0.5, 0.75, 1.0):
        rk = risk(r - lam * mean, lam / cnt)
        take = (rk < best_risk) & inl.any(0)
        best = torch.where(take[None, :, None], lam * mean[None].expand_as(best), best)
        best_risk = torch.where(take, rk, best_risk)
    return R_out @ rotvec_to_rotmat(best)


def blend_with_input(R_out: torch.Tensor, R_in: torch.Tensor, observed: torch.Tensor, **kw) -> torch.Tensor:
    """PoseBERT's rotations blended with the trusted inputs (see module doc) -> (N, J, 3, 3).

    The model's output is first corrected by the smoothed residual where the input is the more
    reliable (:func:`smooth_residual`); observed frames then move toward the input by their weight;
    filled frames follow the corrected motion re-anchored on the blended frames next to them."""
    from .refine import anchor_to_observed
    R_in = torch.nan_to_num(R_in.to(R_out.dtype))
    sigma = input_noise(R_in, observed)   # the input's noise, once: both steps use it
    if observed.any():
        R_out = smooth_residual(R_out, R_in, observed, sigma=sigma)
    w = trust_weights(R_in, R_out, observed, sigma=sigma, **kw)
    if not (w > 0).any():
        return R_out
    blended = slerp_rotmat(R_out, R_in, w)
    return anchor_to_observed(R_out, blended, observed)


def keypoint_noise(kp: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Per-keypoint noise of observed 3D keypoints: kp (N, K, 3) metres -> (K,) per-axis std (metres;
    NaN where fewer than 5 consecutive observed frames exist). Same estimator as :func:`input_noise`."""
    f = _five_frame_fit(kp, observed)
    if f is None:
        return torch.full((kp.shape[1],), float("nan"))
    centre, fit = f
    return _noise_from_residual((fit - kp[centre]).norm(dim=-1))


def _sg_center_weight(window: int) -> float:
    """Weight of the centre sample in a quadratic Savitzky-Golay fit over ``window`` (odd) frames."""
    m = window // 2
    return 3 * (3 * m * m + 3 * m - 1) / ((2 * m + 3) * (2 * m + 1) * (2 * m - 1))


def refine_keypoints(kp_in: torch.Tensor, kp_body: torch.Tensor, observed: torch.Tensor,
                     windows=(9, 15, 31, 61), outlier_k: float = 3.0, sigma_floor: float = 1e-4) -> torch.Tensor:
    """Refined keypoints that follow the input: (N, K, 3) metres, the input's own layout and frame.

    kp_in: the estimator's 3D keypoints (N, K, 3), read where ``observed``; kp_body: the same keypoints
    of the body PoseBERT fitted (N, K, 3), same frame. Candidates per keypoint: the body plus the
    temporally smoothed residual ``kp_in - kp_body`` (keeps the offset between the estimator's skeleton
    and the body's; the body carries the motion and fills gaps), and the input smoothed alone
    (Savitzky-Golay, quadratic, over each of ``windows`` frames). Each keypoint takes the candidate
    of least estimated error (Stein's unbiased risk estimate with the input noise of
    :func:`keypoint_noise`: no ground truth needed); observed frames are then blended with the input
    by the trust weights of the module doc (clean input comes back as given)."""
    from .baselines import savgol
    kp_in = torch.nan_to_num(kp_in.to(kp_body.dtype))
    if not observed.any():
        return kp_body.clone()
    N = len(kp_in)
    sigma = keypoint_noise(kp_in, observed)
    s2 = torch.nan_to_num(sigma, nan=float("inf")).clamp_min(sigma_floor) ** 2          # (K,)
    o = observed.numpy()
    best, best_risk = None, None
    for w in windows:
        if w > N:
            continue
        h = _sg_center_weight(w)
        for with_body in (True, False):
            ref = kp_body if with_body else torch.zeros_like(kp_body)
            cand = ref + torch.as_tensor(savgol((kp_in - ref).double().numpy(), o, window=w, order=2),
                                         dtype=kp_body.dtype)
            resid = ((kp_in - cand) ** 2).sum(-1)[observed].mean(0)                     # (K,)
            risk = resid - 3 * s2 + 6 * s2 * h if torch.isfinite(s2).all() else resid
            if best is None:
                best, best_risk = cand, risk
            else:
                take = risk < best_risk
                best = torch.where(take[None, :, None], cand, best)
                best_risk = torch.minimum(risk, best_risk)
    base = best if best is not None else kp_body
    wt = _inverse_variance_weights((kp_in - base).norm(dim=-1), observed, s2, outlier_k)
    return base + wt[..., None] * (kp_in - base)
