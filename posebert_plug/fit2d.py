"""Image-aligned bodies: fit pose and translation to the observed 2D keypoints.

PoseBERT's output is a plausible, smooth motion, but it is predicted from a
canonical camera and a mean body: projected into the image, its limbs and its
root miss the person by tens of pixels. :func:`fit_to_keypoints` fits, for every
frame of a track at once (one batch of Adam steps), a rotation
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
  keypoints would accelerate more than the observed ones, and where even PoseBERT's own
  output would, the fit is smoothed (Savitzky-Golay, windows 5-31, then a straight line in time
  through the track, then a constant pose) until it does not: never jerkier than the input, on
  tracks of any length (3 frames too; tracks with no fitted frame are guarded the same way).

Weights (``FitOptions``): knots every 2 frames, a light prior and the depth fitted, so that bodies seen
from raised cameras come out upright (held-out mocap from 30-60 degrees above: torso pitch error 2-6
degrees, ``bench/generalize.py --sections kp2d``; vtest.avi's pedestrians) while the output acceleration
stays below the input's (``bench/realvideo.py`` prints reprojection error and acceleration);
:data:`FIT_PRESETS` names the alternatives.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .camera import project_px  # noqa: F401  (re-exported: fit2d.project_px)

__all__ = ["FitOptions", "FIT_PRESETS", "fit_to_keypoints", "fit_many", "reprojection_error_px", "acceleration_px"]


@dataclass
class FitOptions:
    # The defaults follow the keypoints closely (knots every 2 frames, a light prior, depth fitted): from
    # raised cameras PoseBERT's pose leans forward, and the fit must undo it (issue 17, item 4; vtest.avi's
    # pedestrians; bench/results/generalize.md). "loose" in FIT_PRESETS is the earlier, PoseBERT-bound fit.
    iters: int = 300
    lr: float = 0.03
    scale_px: float = 8.0        # pseudo-Huber scale of the reprojection error (pixels)
    w_prior: float = 0.3         # rotation correction (per radian^2, per joint)
    knot_seconds: float = 0.067  # corrections are piecewise linear between knots this far apart (0: every frame)
    w_smooth: float = 10.0       # second difference of the corrections at the knots (per radian^2 / per m^2)
    min_conf: float = 0.2        # keypoints below are not fitted
    min_keypoints: int = 6       # frames with fewer confident keypoints have no data term
    fixed_joints: tuple = (10, 11, 22, 23)   # feet ends and hands: no COCO keypoint sees them
    # After the fit, the correction is scaled down (halved, down to none) while the fitted keypoints
    # accelerate more than the observed ones: the output is never jerkier than its input.
    limit_acceleration: bool = True
    fit_depth: bool = True       # False: the depth (z) of the translation stays as aligned before the fit
    fps: float = 30.0            # the track's frame rate (sets the knot spacing in frames)


# Named fit strengths (``posebert-refine --fit``, ``Pipeline.fit``): FitOptions fields over the defaults.
# "close": a ten times lighter prior, closer still to the keypoints; "loose": the fit
# before the eleventh session (PoseBERT's pose nudged: strong prior, knots every 0.15 s, depth kept), whose
# 3D error was lowest on bench/e2e.py's rendered scenes but which draws raised cameras' pedestrians bent
# forward. Tables: bench/results/generalize.md.
FIT_PRESETS = {"default": {}, "close": {"w_prior": 0.03},
               "loose": {"iters": 40, "w_prior": 1.0, "knot_seconds": 0.15, "fit_depth": False}}


def _rotvec_to_rotmat(v):
    import roma
    return roma.rotvec_to_rotmat(v)


def _hat_basis(N: int, step: int) -> tuple:
    """Linear interpolation from M knots (frames 0, step, ..., N - 1) to N frames, as the two knots
    around each frame and the second one's weight: (k0 (N,) long, k1 (N,) long, w (N,) float64), with
    frame t = (1 - w[t]) * knot k0[t] + w[t] * knot k1[t]; and M. Two knots per frame instead of a dense
    (N, M) matrix: the fit's cost stays linear in the frames (a dense basis over a batch of long tracks
    with knots every 2 frames made each step quadratic in them)."""
    knots = np.unique(np.r_[np.arange(0, N, step), N - 1])
    t = np.arange(N)
    k = np.clip(np.searchsorted(knots, t, side="right") - 1, 0, len(knots) - 1)
    nxt = np.minimum(k + 1, len(knots) - 1)
    span = np.maximum(knots[nxt] - knots[k], 1)
    w = np.where(nxt > k, (t - knots[k]) / span, 0.0)
    return torch.as_tensor(k), torch.as_tensor(nxt), torch.as_tensor(w), len(knots)


def fit_to_keypoints(R, transl, uv_px, conf, observed, body, layout, focal_px, centre,
                     options: FitOptions | None = None):
    """R (N, J, 3, 3), transl (N, 3) (PoseBERT's output, camera frame, metres); uv_px (N, K, 2) the
    observed keypoints in pixels in ``layout`` (rows of unobserved frames ignored), conf (N, K),
    observed (N,) bool; body: a body model with ``pose_keypoints``; focal_px; centre (cx, cy).
    Returns (R, transl) fitted (same shapes and dtype)."""
    return fit_many([(R, transl, uv_px, conf, observed, focal_px, centre)], body, layout, options)[0]


def fit_many(items, body, layout, options: FitOptions | None = None) -> list:
    """:func:`fit_to_keypoints` for several tracks in one batch (one forward per step for all of them):
    items [(R, transl, uv_px, conf, observed, focal_px, centre[, seen])] -> [(R, transl)]; ``seen`` (N,) bool:
    the frames the acceleration guard compares on (default ``observed``; the estimator's detections,
    where ``observed`` may leave out frames the refiner did not trust)."""
    o = options or FitOptions()
    step = max(1, int(round(o.knot_seconds * (o.fps or 30.0))))
    Rs, ts, uvs, cs, obss, fs, cxy, bases, seen = [], [], [], [], [], [], [], [], []
    for k, (R, transl, uv_px, conf, observed, focal_px, centre, *rest) in enumerate(items):
        N = len(R)
        c = torch.as_tensor(np.nan_to_num(np.asarray(conf, np.float64)))
        # keypoints the acceleration guard compares on (confidence >= 0.5 in an observed frame)
        seen.append((c >= 0.5).numpy() & np.asarray(rest[0] if rest else observed, bool)[:, None])
        c = torch.where(c >= o.min_conf, c, torch.zeros_like(c))
        obs = torch.as_tensor(np.asarray(observed, bool)) & ((c > 0).sum(-1) >= o.min_keypoints)
        Rs.append(R.detach().double())
        ts.append(transl.detach().double())
        uvs.append(torch.as_tensor(np.nan_to_num(np.asarray(uv_px, np.float64))))
        cs.append(c * obs[:, None])
        obss.append(obs)
        fs.append(torch.full((N,), float(focal_px), dtype=torch.float64))
        cxy.append(torch.tensor([float(centre[0]), float(centre[1])], dtype=torch.float64).expand(N, 2))
        bases.append(_hat_basis(N, step) if N else None)
    out = [(it[0], it[1]) for it in items]
    todo = [k for k in range(len(items)) if len(items[k][0]) and obss[k].any()]
    if o.limit_acceleration:   # tracks without a fitted frame: PoseBERT's output, under the same guarantee
        for k in range(len(items)):
            if k not in todo and len(items[k][0]) >= 3:
                out[k] = _limit_acceleration([(Rs[k], ts[k], None)], uvs[k].numpy(), seen[k], body, layout,
                                             fs[k][0].item(), tuple(cxy[k][0].tolist()), items[k], check_first=True)
    if not todo:
        return out
    R0, t0 = torch.cat([Rs[k] for k in todo]), torch.cat([ts[k] for k in todo])
    uv, c = torch.cat([uvs[k] for k in todo]), torch.cat([cs[k] for k in todo])
    f, cx, cy = torch.cat([fs[k] for k in todo]), torch.cat([cxy[k] for k in todo])[:, 0], torch.cat([cxy[k] for k in todo])[:, 1]
    sizes_n = [len(Rs[k]) for k in todo]
    sizes_m = [bases[k][3] for k in todo]
    # every frame's two knots, numbered over the batch (each track's knots after the previous track's)
    offs = np.cumsum([0] + sizes_m[:-1])
    k0 = torch.cat([bases[k][0] + off for k, off in zip(todo, offs)])
    k1 = torch.cat([bases[k][1] + off for k, off in zip(todo, offs)])
    wk = torch.cat([bases[k][2] for k in todo])
    # second differences of knots within a track only
    inner = np.concatenate([np.arange(s0 + 1, s0 + m - 1) for s0, m in zip(offs, sizes_m)]
                           ) if sum(max(0, m - 2) for m in sizes_m) else np.zeros(0, int)
    inner = torch.as_tensor(inner, dtype=torch.long)
    N, J = R0.shape[:2]
    M = sum(sizes_m)
    free = torch.ones(J, 1, dtype=torch.float64)
    free[[j for j in o.fixed_joints if j < J]] = 0
    cv = torch.zeros(M, J, 3, dtype=torch.float64, requires_grad=True)
    ct = torch.zeros(M, 3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([cv, ct], lr=o.lr)
    csum = c.sum().clamp_min(1.0)

    tmask = torch.tensor([1.0, 1.0, 1.0 if o.fit_depth else 0.0], dtype=torch.float64)

    def at_frames(x):   # (M, ...) knot values -> (N, ...) frame values
        w = wk.reshape(-1, *([1] * (x.dim() - 1)))
        return (1 - w) * x[k0] + w * x[k1]

    def pose(cv, ct):
        dv = at_frames(cv) * free
        return R0 @ _rotvec_to_rotmat(dv), t0 + at_frames(ct) * tmask, dv

    def project(kp):
        z = kp[..., 2].clamp_min(0.05)
        return torch.stack([f[:, None] * kp[..., 0] / z + cx[:, None], f[:, None] * kp[..., 1] / z + cy[:, None]], -1)

    with torch.enable_grad():
        for it in range(o.iters):
            opt.zero_grad()
            Rf, tf, dv = pose(cv, ct)
            proj = project(body.pose_keypoints(Rf.float(), tf.float(), layout).double())
            r2 = ((proj - uv) ** 2).sum(-1) / o.scale_px ** 2
            loss = (c * (torch.sqrt(1 + r2) - 1)).sum() / csum + o.w_prior * (dv ** 2).sum() / (N * J)
            if len(inner) and o.w_smooth > 0:
                a_v = cv[inner + 1] - 2 * cv[inner] + cv[inner - 1]
                a_t = ct[inner + 1] - 2 * ct[inner] + ct[inner - 1]
                loss = loss + o.w_smooth * ((a_v ** 2).sum() / (len(inner) * J) + (a_t ** 2).sum() / len(inner))
            loss.backward()
            opt.step()
            for g in opt.param_groups:   # a short cosine decay: the last steps settle
                g["lr"] = o.lr * 0.5 * (1 + np.cos(np.pi * (it + 1) / o.iters))
    # Never jerkier than the input: per track, if the fitted keypoints accelerate more than the
    # observed ones (px/frame^2 over keypoints seen three frames in a row), the correction is scaled
    # down (1/2, 1/4, ... none) until they do not; failing that, the output is smoothed
    # (:func:`_smooth_until`), down to a constant pose on the shortest tracks.
    with torch.no_grad():
        alphas = (1.0, 0.5, 0.25, 0.125, 0.0) if o.limit_acceleration else (1.0,)
        cand = []
        for alpha in alphas:
            Rf, tf, _ = pose(cv * alpha, ct * alpha)
            kp = project(body.pose_keypoints(Rf.float(), tf.float(), layout).double()).numpy() \
                if len(alphas) > 1 else None
            cand.append((Rf, tf, kp))
        starts = np.cumsum([0] + sizes_n)
        for j, k in enumerate(todo):
            a, b = starts[j], starts[j + 1]
            out[k] = _limit_acceleration(
                [(Rf[a:b], tf[a:b], None if kp is None else kp[a:b]) for Rf, tf, kp in cand],
                uv[a:b].numpy(), seen[k], body, layout, f[a].item(), (cx[a].item(), cy[a].item()), items[k])
    return out


def _limit_acceleration(cands, uv, valid, body, layout, focal, centre, item, check_first=False):
    """The first of ``cands`` [(R, t, projected keypoints or None)] (fitted, then less and less corrected)
    whose projected keypoints accelerate no more than the observed ``uv`` (on ``valid`` keypoints); when
    none does, the first candidate smoothed by :func:`_smooth_until`. A candidate without keypoints is
    taken as it is (no guard), unless ``check_first``. Returns (R, t) in the item's dtypes."""
    def accel(R_, t_):
        return acceleration_px(project_px(body.pose_keypoints(R_.float(), t_.float(), layout).double().numpy(),
                                          focal, centre), valid)
    a_in = acceleration_px(uv, valid)
    pick = None
    for Rf, tf, kp in cands:
        if not np.isfinite(a_in) or (kp is None and not check_first):
            pick = (Rf, tf)
            break
        if (acceleration_px(kp, valid) if kp is not None else accel(Rf, tf)) <= a_in:
            pick = (Rf, tf)
            break
    if pick is None:   # even PoseBERT's own output is jerkier than the input here: smooth the fit until it is not
        pick = _smooth_until(cands[0][0], cands[0][1], lambda R_, t_: accel(R_, t_) <= a_in)
    R, t = pick
    return torch.as_tensor(R).to(item[0].dtype), torch.as_tensor(t).to(item[1].dtype)


def _poly_in_time(x, order: int):
    """Least-squares polynomial of ``order`` in time through all frames of x (T, ...) (order 0: the mean)."""
    x = np.asarray(x, np.float64)
    T = len(x)
    tt = np.linspace(-1.0, 1.0, T) if T > 1 else np.zeros(1)
    V = np.vander(tt, order + 1)
    coef, *_ = np.linalg.lstsq(V, x.reshape(T, -1), rcond=None)
    return (V @ coef).reshape(x.shape)


def _smooth_until(R, t, good, windows=(5, 9, 15, 31)):
    """Smooth rotations (T, J, 3, 3) and translation (T, 3) until ``good(R, t)``: Savitzky-Golay (order 2)
    with growing windows, then a straight line in time through the whole track with its slope scaled
    down (1, 1/2, 1/4, 0), the last being a constant pose, whose projection does not move at all: every
    track, whatever its length (3 frames too), ends no jerkier than ``good`` asks for any input.
    Returns the first that is good (the constant pose when none before it is)."""
    from .baselines import savgol, savgol_rotations
    from .rotations import orthonormalize
    N = len(R)
    every = np.ones(N, bool)
    R = torch.as_tensor(R).double()
    t = torch.as_tensor(t).double()
    tried = set()
    for w in windows:
        w = min(w, N if N % 2 else N - 1)
        if w < 5 or w in tried:
            continue
        tried.add(w)
        Rs = torch.as_tensor(savgol_rotations(R.numpy(), every, window=w, order=2))
        ts = torch.as_tensor(savgol(t.numpy(), every, window=w, order=2))
        if good(Rs, ts):
            return Rs, ts
    R0, t0 = _poly_in_time(R.numpy(), 0), _poly_in_time(t.numpy(), 0)
    R1, t1 = _poly_in_time(R.numpy(), 1), _poly_in_time(t.numpy(), 1)
    for s in (1.0, 0.5, 0.25):
        Rs = orthonormalize(torch.as_tensor(R0 + s * (R1 - R0)))
        ts = torch.as_tensor(t0 + s * (t1 - t0))
        if good(Rs, ts):
            return Rs, ts
    return orthonormalize(torch.as_tensor(R0)), torch.as_tensor(t0)


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
