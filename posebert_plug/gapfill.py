"""Gap check: how far to trust PoseBERT's fill of a gap, measured on the track itself.

Inside a gap PoseBERT draws the motion its training data makes likely. On motion it knows (walks,
everyday actions) that beats interpolation; on motion it never saw (dance, martial arts) the
interpolation between the frames around the gap is often closer. Which one holds for a given track
is measured on the track, without ground truth: some observed frames are hidden (blocks as long as
the track's own gaps, inside its observed runs), the track is refilled, and the mix of PoseBERT's
fill and the interpolation that best predicts the hidden inputs is used in the real gaps. The
input's noise on the hidden frames is independent of both fills, so it adds the same amount to
every candidate's error and does not bias the choice.

Held-out performers (``bench/generalize.py --sections corrupt``): see ``bench/results/generalize.md``.

Shapes: rotations (N, J, 3, 3), observed (N,) bool; weights (J,) in [0, 1] (one per trunk, legs, arms).
"""
from __future__ import annotations

import numpy as np
import torch

from .rotations import slerp_rotmat

__all__ = ["interior_gaps", "holdout_mask", "gap_mix_weight", "mix_gaps", "MIX_GRID", "GROUPS"]

MIX_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)   # weights of the interpolation tried (0: PoseBERT's fill alone)


def _runs(mask: np.ndarray) -> list:
    """[(start, stop)] of the runs of True in a (N,) bool array."""
    m = np.r_[False, np.asarray(mask, bool), False].astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def interior_gaps(observed) -> np.ndarray:
    """(N,) bool: unobserved frames with an observed frame before and after them."""
    o = np.asarray(observed, bool)
    if not o.any():
        return np.zeros_like(o)
    idx = np.flatnonzero(o)
    inside = np.zeros_like(o)
    inside[idx[0]:idx[-1] + 1] = True
    return inside & ~o


def holdout_mask(observed, phase: int = 0, min_hidden: int = 8, max_block: int = 30):
    """Observed frames to hide for the gap check: (N,) bool, or None when the track has no interior gap
    or too few observed frames to hide ``min_hidden`` of them.

    Blocks as long as the track's median interior gap (2..``max_block`` frames), in the middle of every
    other observed run (``phase`` 0: the first, third, ...; 1: the others), keeping at least one observed
    frame on each side: the check refills gaps like the track's own, with the context the track has."""
    o = np.asarray(observed, bool)
    gaps = [b - a for a, b in _runs(interior_gaps(o))]
    if not gaps:
        return None
    L = int(np.clip(np.median(gaps), 2, max_block))
    hide = np.zeros_like(o)
    for i, (a, b) in enumerate(_runs(o)):
        n = min(L, b - a - 2)
        if i % 2 != phase % 2 or n < 1:
            continue
        s = a + (b - a - n) // 2
        hide[s:s + n] = True
    return hide if hide.sum() >= min_hidden else None


def _interpolated(R: torch.Tensor, observed: np.ndarray) -> torch.Tensor:
    from .baselines import interpolate_rotations
    return torch.as_tensor(interpolate_rotations(R.double().numpy(), observed)).to(R.dtype)


def mix_gaps(R: torch.Tensor, observed, weight) -> torch.Tensor:
    """R (N, J, 3, 3) with its interior gaps moved toward the interpolation (slerp per joint) between the
    observed frames around them by ``weight`` in [0, 1] (a float, or (J,) per joint); observed frames and
    the ends are unchanged."""
    o = np.asarray(observed, bool)
    gap = interior_gaps(o)
    w = torch.as_tensor(weight, dtype=R.dtype).expand(R.shape[1])
    if not (w > 0).any() or not gap.any():
        return R
    out = R.clone()
    g = torch.as_tensor(gap)
    out[g] = slerp_rotmat(R[g], _interpolated(R, o)[g], w[None].expand(int(g.sum()), -1))
    return out


GROUPS = ((0, 3, 6, 9, 12, 15), (1, 2, 4, 5, 7, 8, 10, 11), (13, 14, 16, 17, 18, 19, 20, 21, 22, 23))  # trunk, legs, arms


def gap_mix_weight(checks, R_in: torch.Tensor, observed, outlier_k: float = 3.0, groups=GROUPS) -> torch.Tensor:
    """Per joint, the weight of :func:`mix_gaps` that best refills the hidden frames -> (J,).

    checks: [(R_check (N, J, 3, 3), hidden (N,) bool)]: the refinement run with ``observed & ~hidden``;
    R_in (N, J, 3, 3): the input, read on the hidden frames. For each group of joints (trunk, legs,
    arms) each weight of :data:`MIX_GRID` is scored by the mean squared rotation error (radians^2, summed
    over the group's joints) to the input over all hidden frames, leaving out frames whose input is an
    outlier (error of PoseBERT's fill above ``outlier_k`` times the median). Ties and an empty check keep
    PoseBERT's fill (0)."""
    from .rotations import geodesic_distance
    J = R_in.shape[1]
    errs = []
    for R_check, hidden in checks:
        o = np.asarray(observed, bool) & ~np.asarray(hidden, bool)
        h = np.asarray(hidden, bool) & np.asarray(observed, bool)
        if not h.any():
            continue
        target = R_in[h].double()
        interp = _interpolated(R_check, o)[h].double()
        Rh = R_check[h].double()
        errs.append(torch.stack([geodesic_distance(slerp_rotmat(Rh, interp, torch.full(Rh.shape[:2], a, dtype=torch.float64)),
                                                   target) ** 2 for a in MIX_GRID]))       # (A, H, J)
    out = torch.zeros(J)
    if not errs:
        return out
    errs = torch.cat(errs, 1)
    for g in groups:
        g = [j for j in g if j < J]
        e = errs[:, :, g].sum(-1)                                                           # (A, H)
        keep = e[0] <= outlier_k ** 2 * e[0].median()
        if keep.any():   # the least weight within rounding of the best: ties keep the model's fill
            score = e[:, keep].mean(-1)
            out[g] = MIX_GRID[int(torch.nonzero(score <= score.min() * (1 + 1e-6) + 1e-12)[0, 0])]
    return out
