"""refine_tracks and the tasks PoseBERT does without fine-tuning.

- :func:`refine_tracks`: denoise and fill every track (any length, any gaps).
- :func:`predict_future`: extend a track by n frames (mask tokens after the end).
- :func:`complete_motion`: in-betweening between given key poses.
- :class:`OnlineRefiner`: one frame at a time per identity, last N frames kept,
  optional k-frame-ahead prediction.

Long tracks are cut into overlapping windows (``window`` frames, every
``stride``); each window's outputs are blended with triangular weights (6D
rotations and (x2d, y2d, nearness) averaged, then Gram-Schmidt), so there are
no seams. Windows of all tracks run together in batches. Frames that no
window with an observation covers (gaps longer than a window) are filled by
slerp between the refined neighbours.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .camera import MIRROR_X, focal_norm, pixels_to_norm, to_real_camera
from .gapfill import gap_mix_weight, holdout_mask, mix_gaps
from .presets import bone_lengths, get_preset, load_model, trained_window
from .rotations import sixd_to_rotmat, slerp_rotmat
from .skeletons import get_skeleton, mapping
from .types import Detection, FrameDetections, RefinedTrack, Track, VideoInfo, refined_track_type

__all__ = ["ConfidencePolicy", "RefineOptions", "refine_tracks", "refine_group", "refined_track", "predict_future",
           "complete_motion", "OnlineRefiner",
           "choose_preset", "Refiner", "anchor_to_observed", "damp_prediction"]


@dataclass
class ConfidencePolicy:
    """What is too unreliable to trust (masked instead of fed to the model).

    min_frame_score: frames whose detection score is below are masked (0.3).
    min_joint_conf: 2D keypoints below this confidence are dropped (0.2).
    min_visible_joints: frames with fewer kept 2D keypoints are masked (6).
    bone_outlier_ratio: 3D frames whose median bone-length ratio to the track's
        median differs by more than this are masked (0.35).
    """

    min_frame_score: float = 0.3
    min_joint_conf: float = 0.2
    min_visible_joints: int = 6
    bone_outlier_ratio: float = 0.35


def choose_preset(track: Track) -> str:
    """The first shipped preset whose input the track carries (:meth:`Preset.accepts`), SMPL rotations >
    3D keypoints > 2D keypoints: a new preset takes part once its weights ship."""
    from .presets import PRESETS, shipped_presets
    shipped = [PRESETS[n] for n in shipped_presets() if n in PRESETS]
    if (track.layout3d == "hand21" or track.layout2d == "hand21") and track.kp3d is None:
        raise ValueError(f"track {track.track_id}: hand tracks need 3D keypoints (hand21, e.g. MediaPipe Hands "
                         "world landmarks); 2D-only hands have no preset")
    for kind in ("smpl", "kp3d", "kp2d"):
        for p in shipped:
            if p.kind == kind and p.accepts(track):
                return p.name
    raise ValueError(f"track {track.track_id}: no input PoseBERT can use (needs SMPL rotations, 3D keypoints in "
                     f"a layout of {', '.join(p.layout for p in shipped if p.kind == 'kp3d')}, or 2D keypoints "
                     f"containing COCO-17; got 2D layout {track.layout2d}, 3D layout {track.layout3d})")


def encode_track(track: Track, preset, body, policy: ConfidencePolicy, bones=None) -> tuple:
    """Track -> (x (N, D) float32 tensor, observed (N,) bool tensor, f_norm of the camera).

    The preset encodes its input (:meth:`Preset.encode`); frames below the policy's score, or whose
    input is incomplete or implausible, are not observed. ``body``: the preset's prior body (a hand
    model for hand presets); ``bones``: its bone lengths in the preset's layout (computed from ``body``
    when None). Left hands are mirrored in X (3D and 2D) into right hands, the only hand the models
    are trained on."""
    p = get_preset(preset)
    v = track.video
    fn = focal_norm(v.focal_px, v.width, v.height)
    obs = track.observed.copy()
    obs &= np.nan_to_num(track.scores, nan=1.0) >= policy.min_frame_score
    x, ok = p.encode(track, body, policy, fn, bones)
    x = x.float()
    obs &= np.asarray(ok, bool) & torch.isfinite(x).all(-1).numpy()
    return x, torch.as_tensor(obs), fn


def _window_starts(N, T, stride):
    if N <= T:
        return [0]
    starts = list(range(0, N - T + 1, stride))
    if starts[-1] != N - T:
        starts.append(N - T)
    return starts


class Refiner:
    """What a refinement runs with: the PoseBERT models (loaded on first use and kept), the body
    models and the device. Create one and pass it to :func:`refine_tracks` / :class:`OnlineRefiner`
    to reuse loaded models across calls; without one, each call builds its own.

    device: ``"auto"`` (GPU when present), ``"cpu"``, ``"cuda[:N]"``.
    bodies: the output body/hand models (:class:`~posebert_plug.bodies.BodyModels`: free models by
        default, SMPL/MANO with their folders); they give :attr:`RefinedTrack.joints`. Inputs are
        encoded and fitted with the *prior* bodies the models were trained with (free body, free
        right hand), whatever the output models are.
    """

    def __init__(self, device="auto", bodies=None):
        from .bodies import BodyModels
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.bodies = bodies if bodies is not None else BodyModels()
        self.models = {}
        self._priors = {}
        self._bones = {}

    @property
    def body(self):
        """The prior body (free SMPL-24 model the body presets were trained with)."""
        return self.prior("smpl")

    def prior(self, preset, side=None):
        """The free model a preset was trained with: the body, or the hand of ``side`` (the models are
        trained on right hands; a left hand's output is mirrored back onto the left model)."""
        p = get_preset(preset)
        key = "body" if p.body != "hand" else side or "right"
        if key not in self._priors:
            if key == "body" or key == "right":
                self._priors[key] = p.make_body()
            else:
                from .hand_model import DefaultHandModel
                self._priors[key] = DefaultHandModel(key)
        return self._priors[key]

    def output_body(self, preset, side=None):
        """The output model of a preset's results: the body, or the hand of ``side`` (right by default)."""
        return self.bodies.hand(side or "right") if get_preset(preset).body == "hand" else self.bodies.body

    def bone_lengths(self, preset):
        """Bone lengths (K,) of a preset's layout on its prior body's rest pose (kp3d features)."""
        p = get_preset(preset)
        if p.name not in self._bones:
            self._bones[p.name] = bone_lengths(self.prior(p), p.layout)
        return self._bones[p.name]

    def model(self, preset):
        if isinstance(preset, torch.nn.Module):
            return preset
        name = get_preset(preset).name
        if name not in self.models:
            self.models[name] = load_model(name, device=self.device)
        return self.models[name]

    @torch.inference_mode()
    def run(self, items, model, window=64, stride=16, batch_size=256, progress=False):
        """items: list of (x (N, D), observed (N,)) -> list of (pose6d (N, J*6), param (N, 3), covered (N,))."""
        T = window
        jobs = []  # (item, start, length)
        for i, (x, obs) in enumerate(items):
            for s in _window_starts(len(x), T, stride):
                jobs.append((i, s, min(T, len(x) - s)))
        P = model.num_joints * 6
        acc = [(torch.zeros(len(x), P), torch.zeros(len(x), 3), torch.zeros(len(x))) for x, _ in items]
        tri = torch.minimum(torch.arange(1, T + 1), torch.arange(T, 0, -1)).float()
        D = items[0][0].shape[-1] if items else 0
        from tqdm import tqdm
        bar = tqdm(total=sum(n for _, _, n in jobs), desc="refine", unit="frame", disable=not progress)
        for b in range(0, len(jobs), batch_size):
            chunk = jobs[b:b + batch_size]
            bar.update(sum(n for _, _, n in chunk))
            X = torch.zeros(len(chunk), T, D)
            M = torch.zeros(len(chunk), T, dtype=torch.bool)
            for k, (i, s, n) in enumerate(chunk):
                X[k, :n] = items[i][0][s:s + n]
                M[k, :n] = items[i][1][s:s + n]
            pose6d, param = model(X.to(self.device), M.to(self.device))
            pose6d, param = pose6d.float().cpu(), param.float().cpu()
            for k, (i, s, n) in enumerate(chunk):
                if not M[k].any():
                    continue  # a window with nothing observed carries no information
                w = tri[:n].clone()
                if s == 0:
                    w[: n // 2] = w.max()  # the track's first frames have only this window
                if s + n == len(items[i][0]):
                    w[n // 2:] = w.max()
                p6, pr, ws = acc[i]
                p6[s:s + n] += w[:, None] * pose6d[k, :n]
                pr[s:s + n] += w[:, None] * param[k, :n]
                ws[s:s + n] += w
        bar.close()
        out = []
        for p6, pr, ws in acc:
            covered = ws > 0
            d = ws.clamp_min(1e-8)[:, None]
            out.append((p6 / d, pr / d, covered))
        return out


def _as_tracks(detections, video, tracker=None):
    if isinstance(detections, Track):
        return [detections]
    if isinstance(detections, (str, bytes)) or not hasattr(detections, "__iter__"):
        raise TypeError(f"refine_tracks takes a list of Tracks, FrameDetections or Detections, "
                        f"got {type(detections).__name__}")
    items = list(detections)
    if not items:
        return []
    if all(isinstance(t, Track) for t in items):
        return items
    dets = []
    for it in items:
        if isinstance(it, FrameDetections):
            dets.extend(it.detections)
        elif isinstance(it, Detection):
            dets.append(it)
        else:
            raise TypeError(f"refine_tracks takes Tracks, FrameDetections or Detections, got {type(it).__name__}")
    if video is None:
        raise ValueError("refine_tracks on raw detections needs video=VideoInfo(width, height, fps)")
    if dets and all(d.track_id is not None for d in dets):
        groups = {}
        for d in dets:
            groups.setdefault(d.track_id, []).append(d)
        return [Track.from_detections(tid, g, video) for tid, g in sorted(groups.items())]
    if tracker is None:   # the core does not track: posebert_plug.refine_tracks passes tracking's tracker
        raise ValueError("detections without track ids need tracking first: use posebert_plug.refine_tracks "
                         "(tracks them with tracking.track_detections) or give every detection a track_id")
    return tracker(items if isinstance(items[0], FrameDetections) else _by_frame(dets), video)


def _by_frame(dets):
    frames = {}
    for d in dets:
        frames.setdefault(d.frame, []).append(d)
    return [FrameDetections(f, frames[f]) for f in sorted(frames)]


def _fill_uncovered(R, param, covered):
    """Slerp rotations / interpolate params over frames no informative window covered."""
    if covered.all() or not covered.any():
        return R, param
    from .baselines import interpolate, interpolate_rotations
    R = torch.as_tensor(interpolate_rotations(R.double().numpy(), covered.numpy())).float()
    param = torch.as_tensor(interpolate(param.double().numpy(), covered.numpy())).float()
    return R, param


def refine_tracks(detections, model="auto", device="auto", window: int | None = None, stride: int | None = None,
                  policy: ConfidencePolicy | None = None, video: VideoInfo | None = None,
                  batch_size: int = 256, extra_frames: int = 0, model_fps: float = 30.0,
                  align_2d: bool = True, keep_observed: bool = False, trust_input: bool = True,
                  progress: bool = False, cuts=None, dropped: list | None = None, fit_2d: bool = True,
                  fit_options: dict | None = None, refiner: "Refiner | None" = None, tracker=None,
                  predict_hold_s: float = 1.0, mirror_average: bool = True, gap_check: bool = True) -> list:
    """Refine tracks with PoseBERT.

    detections: Tracks, or FrameDetections/Detections (grouped by ``track_id`` when every detection
        has one, else tracked by ``tracker(frames, video) -> [Track]``; ``video`` is needed then).
        ``posebert_plug.refine_tracks`` passes :func:`tracking.track_detections` as the tracker.
    model: ``"auto"`` (pick from the inputs: SMPL > 3D > 2D), a preset name, or a loaded model.
    device: ``"auto"`` (GPU when present), ``"cpu"``, ``"cuda"``.
    window/stride: window length (default and maximum: the window the model was trained on, its
        position embeddings past that being untrained) and hop between windows (1..window; default
        window // 4).
    extra_frames: mask tokens appended after each track (future prediction).
    predict_hold_s: predicted poses are drawn toward the last refined one as the horizon grows, half way
        ``predict_hold_s`` seconds ahead (:func:`damp_prediction`); 0 returns PoseBERT's prediction alone.
    model_fps: the models are trained at 30 fps; a video at 30/k fps (k integer >= 2, e.g. 10 or 15 fps)
        is refined at 30 fps with k-1 masked frames between its frames, then sampled back.
    align_2d: for 2D-keypoint inputs, and 3D-keypoint inputs with 2D the body regresses (MediaPipe's world
        and image landmarks: aligned on observed frames, interpolated across filled ones, since PoseBERT
        reads their translation off the 2D extent), re-fit the root translation so that the refined body's
        keypoints reproject onto the observed 2D keypoints (weighted least squares per observed
        frame, then smoothed; filled frames keep PoseBERT's translation shifted by the interpolated
        correction). ``False`` returns PoseBERT's own (x2d, y2d, nearness) translation.
    keep_observed: SMPL inputs only, for exact inputs (mocap, key poses): observed frames are
        returned as given, and every other frame is PoseBERT's output re-anchored onto them
        (see :func:`anchor_to_observed`); with noisy inputs this keeps the noise, so it is off by default.
    trust_input: SMPL inputs: blend each observed rotation with PoseBERT's by how much the input can
        be trusted, estimated from the track itself (:mod:`posebert_plug.trust`: clean input comes back
        nearly as given, noisy input is left to PoseBERT, outlier frames are replaced); ``False``
        returns PoseBERT's output alone.
    mirror_average: SMPL inputs: the model also refines the left-right mirror image of each motion, and the
        two outputs are averaged (its left/right biases cancel; held-out performers: realistic corruption
        54.0 -> 53.0 mm, long gaps 71.5 -> 70.5 mm). Twice the model's work.
    gap_check: SMPL inputs with gaps: how far PoseBERT's fill of the gaps is trusted against the
        interpolation between the frames around them is measured on the track itself, by refilling
        observed frames hidden in gap-sized blocks (:mod:`posebert_plug.gapfill`; per trunk, legs and
        arms). Motion the model knows keeps its fill, motion it never saw leans on interpolation. Two
        more model runs per track with interior gaps.
    progress: show a progress bar (window-frames per second) over the model batches.
    cuts: video frames that start a new shot (``posebert_plug.cuts.detect_cuts``): a track spanning a
        cut is split there (the first piece keeps its id, the others get new ids after the largest
        one) and nothing is filled across it.
    dropped: a list to collect the tracks that cannot be refined instead of raising: each is appended
        as ``{"id": track_id, "reason": "..."}`` and left out of the result (``posebert-refine`` uses it,
        so that one bad track never ends a run).
    fit_2d: for inputs with 2D keypoints (``kp2d`` presets), fit pose and translation so that the
        body's keypoints reproject onto the confident observed keypoints
        (:func:`posebert_plug.fit2d.fit_to_keypoints`, PoseBERT's output as the prior, its temporal
        smoothness kept); ``fit_options`` are passed to it. ``False`` keeps PoseBERT's pose (with
        ``align_2d``'s translation).
    refiner: a :class:`Refiner` (models, body models, device) to use and keep loaded models in; by
        default one is built for this call on ``device``.
    Returns one :class:`RefinedTrack` per input track (empty list for no tracks), or per piece with
    ``cuts``. An all-missing track raises ValueError naming it (or is listed in ``dropped``).
    """
    options = RefineOptions(window=window, stride=stride, policy=policy or ConfidencePolicy(), batch_size=batch_size,
                            extra_frames=extra_frames, model_fps=model_fps, align_2d=align_2d,
                            keep_observed=keep_observed, trust_input=trust_input, fit_2d=fit_2d,
                            fit_options=fit_options, progress=progress, predict_hold_s=predict_hold_s,
                            mirror_average=mirror_average, gap_check=gap_check)
    tracks = _as_tracks(detections, video, tracker)
    if cuts is not None and len(tracks):
        tracks = split_tracks_at(tracks, cuts)
    if not tracks:
        return []
    ref = refiner if refiner is not None else Refiner(device)

    def give_up(t, reason):
        if dropped is None:
            raise ValueError(reason)
        dropped.append({"id": int(t.track_id), "reason": reason})

    groups = {}
    for t in tracks:
        try:
            if len(t) == 0:
                raise ValueError(f"track {t.track_id} is empty")
            preset = choose_preset(t) if model == "auto" else \
                (model.preset.name if isinstance(model, torch.nn.Module) else model)
        except ValueError as e:
            give_up(t, str(e))
            continue
        groups.setdefault(preset, []).append(t)
    results = {}
    for preset, ts in groups.items():
        net = ref.model(model if isinstance(model, torch.nn.Module) else preset)
        results.update(refine_group(ref, net, ts, options, give_up))
    return [results[id(t)] for t in tracks if id(t) in results]


@dataclass(frozen=True)
class RefineOptions:
    """How tracks are refined: the options of :func:`refine_tracks` (see there), one object shared by
    offline refinement and :class:`OnlineRefiner`, so that both run the same steps."""

    window: int | None = None
    stride: int | None = None
    policy: ConfidencePolicy = field(default_factory=ConfidencePolicy)
    batch_size: int = 256
    extra_frames: int = 0
    model_fps: float = 30.0
    align_2d: bool = True
    keep_observed: bool = False
    trust_input: bool = True
    fit_2d: bool = True
    fit_options: dict | None = None
    progress: bool = False
    predict_hold_s: float = 1.0
    mirror_average: bool = True
    gap_check: bool = True


def refine_group(ref: Refiner, net, tracks: list, o: RefineOptions, give_up) -> dict:
    """Refine tracks of one preset with the loaded model ``net``: encode, run the windows, decode,
    trust the input, align and fit to 2D, build the results. The one path of offline and streaming
    refinement. ``give_up(track, reason)`` is called for a track that cannot be refined (it may raise).
    Returns {id(track): RefinedTrack}."""
    preset = net.preset
    W = trained_window(net)
    win = W if o.window is None else o.window
    hop = max(1, win // 4) if o.stride is None else o.stride
    if not 1 <= win <= W or not 1 <= hop <= win:
        raise ValueError(f"window must lie in 1..{W} (the window the {preset.name!r} model was trained on; longer "
                         f"tracks are cut into overlapping windows) and stride in 1..window (a longer hop "
                         f"would leave frames between windows unrefined); got window {win}, stride {hop}")
    extra = o.extra_frames
    if extra < 0:
        raise ValueError(f"extra_frames must be >= 0, got {extra}")
    if extra >= win:
        raise ValueError(f"frames to predict ({extra}) must be smaller than the window ({win}): "
                         "a window needs observed frames to predict from")
    encoded, ts = [], []
    for t in tracks:
        try:
            enc = encode_track(t, preset, ref.prior(preset), o.policy,
                               ref.bone_lengths(preset) if preset.kind == "kp3d" else None)
            if not enc[1].any():
                raise ValueError(f"track {t.track_id}: no usable observation (all frames missing, NaN or below "
                                 "the confidence thresholds)")
        except ValueError as e:
            give_up(t, str(e))
            continue
        encoded.append(enc)
        ts.append(t)
    if not ts:
        return {}
    def model_item(t, x, obs):   # prediction frames appended, upsampled to the model's frame rate
        if extra:
            x = torch.cat([x, torch.zeros(extra, x.shape[-1])])
            obs = torch.cat([obs, torch.zeros(extra, dtype=torch.bool)])
        k = _upsample_factor(t.video, o.model_fps)
        if k > 1:  # interleave k-1 masked frames: the model runs at its own frame rate
            xu = torch.zeros(len(x) * k, x.shape[-1])
            ou = torch.zeros(len(x) * k, dtype=torch.bool)
            xu[::k], ou[::k] = x, obs
            x, obs = xu, ou
        return x, obs

    # SMPL inputs: the model also refines the mirror image of each motion (averaged back: the model's
    # left/right biases cancel), and tracks with interior gaps are refilled with some observed frames
    # hidden, to measure how far to trust PoseBERT's fill against interpolation (gapfill)
    mirror = o.mirror_average and preset.kind == "smpl"
    check = o.gap_check and preset.kind == "smpl" and o.trust_input and not o.keep_observed
    masks = []   # per track: its observed frames, then those of each gap check (observed & ~hidden)
    for t, (_, obs, _) in zip(ts, encoded):
        hidden = [holdout_mask(obs.numpy(), phase) for phase in (0, 1)] if check and t.rotmats is not None else []
        masks.append([obs] + [obs & ~torch.as_tensor(h) for h in hidden if h is not None])
    jobs = [(i, k, m) for i in range(len(ts)) for k in range(len(masks[i])) for m in ((False, True) if mirror else (False,))]
    xs = [(x, encode_track(mirror_smpl_track(t), preset, ref.prior(preset), o.policy)[0] if mirror else None)
          for t, (x, _, _) in zip(ts, encoded)]
    items = [model_item(ts[i], xs[i][m], masks[i][k]) for i, k, m in jobs]
    outs = ref.run(items, net, window=win, stride=hop, batch_size=o.batch_size, progress=o.progress)
    runs = {}   # (track, mask) -> [(R (N', J, 3, 3), param (N', 3))] of the plain and the mirrored run
    for (i, k, m), (p6, param, covered) in zip(jobs, outs):
        R = sixd_to_rotmat(p6.reshape(-1, net.num_joints, 6))
        R, param = _fill_uncovered(R, param, covered)
        u = _upsample_factor(ts[i].video, o.model_fps)
        if u > 1:
            R, param = R[::u], param[::u]
        runs.setdefault((i, k), []).append(mirror_smpl_output(R, param) if m else (R, param))

    def output(i, k):   # the model's output for track i under mask k, mirror runs averaged in
        (R, p), *rest = runs[i, k]
        for Rm, pm in rest:
            R, p = slerp_rotmat(R, Rm, torch.full(R.shape[:-2], 0.5)), (p + pm) / 2
        return R, p

    def padded(obs):    # predicted frames are not observed
        return torch.cat([obs, torch.zeros(extra, dtype=torch.bool)]) if extra else obs

    poses = []
    for i, (t, (_, _, fn)) in enumerate(zip(ts, encoded)):
        obs = padded(masks[i][0])
        R, param = output(i, 0)
        transl = to_real_camera(param, fn)
        if o.keep_observed:
            R, transl = _keep_observed(t, R, transl, obs)
        elif o.trust_input and t.rotmats is not None and preset.kind == "smpl":
            R = _trust_input(t, R, obs)
            if len(masks[i]) > 1:   # the gap check: refilled with observed frames hidden
                n, seen = len(t), masks[i][0]
                checks = [(_trust_input(t, output(i, k)[0], padded(masks[i][k]))[:n], (seen & ~masks[i][k]).numpy())
                          for k in range(1, len(masks[i]))]
                wgt = gap_mix_weight(checks, torch.as_tensor(np.nan_to_num(t.rotmats), dtype=R.dtype), seen.numpy())
                R = torch.cat([mix_gaps(R[:n], seen.numpy(), wgt), R[n:]])
        if extra and o.predict_hold_s > 0:
            R = damp_prediction(R, len(t), (t.video.fps if t.video is not None else 0) or o.model_fps,
                                o.predict_hold_s)
        if o.align_2d and not extra and preset.kind in ("kp2d", "kp3d"):
            # 3D keypoints with 2D (MediaPipe): PoseBERT reads the translation of root-relative keypoints
            # off the 2D extent, which jumps with a half-hidden person's landmarks (comp2: 1 m in 3
            # frames, the body drawn 100 px beside him): aligned on observed frames, interpolated in gaps
            lay = preset.layout if preset.kind == "kp2d" else fit_layout_2d(t, ref.prior(preset))
            if lay is not None:
                transl = align_translation_2d(R, transl, t, obs.numpy(), ref.prior(preset), fn, lay,
                                              gaps="prior" if preset.kind == "kp2d" else "interpolate")
        poses.append([R, transl, obs, fn])
    if o.fit_2d and preset.body == "body" and not extra and not o.keep_observed:
        # every track with 2D keypoints the prior body can regress (kp2d, MediaPipe, SMPL estimators' 2D
        # joints; after the trust blend), in one batch per layout; other 2D layouts are not fitted
        jobs = {}
        for k, t in enumerate(ts):
            lay = preset.layout if preset.kind == "kp2d" else fit_layout_2d(t, ref.prior(preset))
            if lay is not None:
                jobs.setdefault(lay, []).append(k)
        for lay, ks in jobs.items():
            fitted = fit_tracks_2d([(ts[k], poses[k][0], poses[k][1], poses[k][2].numpy(), poses[k][3]) for k in ks],
                                   ref.prior(preset), lay, o.fit_options)
            for k, (R, transl) in zip(ks, fitted):
                poses[k][0], poses[k][1] = R, transl
    results = {}
    for t, (R, transl, obs, _) in zip(ts, poses):
        if t.side == "left":
            R, transl = mirror_x(R, transl)
        results[id(t)] = refined_track(ref, preset, t, R, transl, obs)
    return results


def damp_prediction(R: torch.Tensor, n: int, fps: float, hold_s: float) -> torch.Tensor:
    """Predicted poses drawn toward the last refined one as the horizon grows.

    R (N', J, 3, 3): refined poses whose frames from ``n`` on are predicted; frame ``n - 1 + h`` becomes
    ``slerp(R[n - 1], R[n - 1 + h], 1 / (1 + h / (hold_s * fps)))``: PoseBERT's motion near the present, half
    of it ``hold_s`` seconds ahead. Why: past a few hundred ms the future is as likely to stay as to follow
    the predicted motion; blending the two is better than either (held-out performers, 15 frames in, 0.05
    rad: 95.8 / 110.5 / 137.2 mm at h = 10 / 15 / 30 against PoseBERT alone's 97.6 / 112.4 / 143.5 and the
    last frame held's 109.2 / 123.2 / 141.6; ``bench/generalize.py --sections predict``)."""
    if len(R) <= n or n < 1 or hold_s <= 0:
        return R
    h = torch.arange(1, len(R) - n + 1, dtype=torch.float64)
    w = (1.0 / (1.0 + h / (hold_s * fps))).to(R.dtype)
    tail = slerp_rotmat(R[n - 1].expand(len(h), *R.shape[1:]), R[n:], w[:, None].expand(len(h), R.shape[1]))
    return torch.cat([R[:n], tail.to(R.dtype)])


def refined_track(ref: Refiner, preset, track: Track, R, transl, observed) -> RefinedTrack:
    """The one place a :class:`RefinedTrack` is built (offline, streaming, pipeline).

    R (N, J, 3, 3) and transl (N, 3): the refined poses in the camera frame (N >= len(track): frames
    past the track's end are predicted); observed (N,) bool: frames refined from an observation.
    Joints come from the refiner's output body (``ref.bodies``) with the track's betas; a kp3d
    preset also returns the input's keypoints refined, in the input's layout and frame."""
    preset = get_preset(preset)
    R, transl = torch.as_tensor(R).float(), torch.as_tensor(transl).float()
    observed = torch.as_tensor(np.asarray(observed, bool))
    n = len(R)
    betas = track.betas if track.betas is not None else np.zeros(10, np.float32)
    body = ref.output_body(preset, track.side)
    joints = body.pose_keypoints(R, transl, preset.loss_layout,
                                 betas=None if track.betas is None else torch.as_tensor(betas))
    kp = _refined_keypoints(track, R, transl, observed, ref.prior(preset, track.side)) \
        if preset.kind == "kp3d" else None
    kind = refined_track_type(hand=preset.body == "hand")
    return kind(track.track_id, np.arange(track.frames[0], track.frames[0] + n), R.numpy(), transl.numpy(),
                joints.detach().float().numpy(), observed.numpy(), np.asarray(betas, np.float32), preset.name,
                track.video, side=track.side, keypoints=kp, keypoint_layout=track.layout3d if kp is not None else None)


def split_tracks_at(tracks, cuts) -> list:
    """Tracks split at shot cuts (frames starting a new shot): each piece is trimmed to its observed
    frames; the first piece of a track keeps its id, the others get new ids after the largest one."""
    from .cuts import split_at_cuts
    cuts = sorted(int(c) for c in cuts)
    next_id = max([int(t.track_id) for t in tracks], default=-1) + 1
    out = []
    for t in tracks:
        pieces = [p for p in split_at_cuts(t.frames, cuts) if t.observed[p].any()]
        if len(pieces) <= 1 and (not pieces or len(pieces[0]) == len(t)):
            out.append(t)
            continue
        for k, idx in enumerate(pieces):
            o = np.flatnonzero(t.observed[idx])
            idx = idx[o[0]:o[-1] + 1]
            out.append(slice_track(t, idx, t.track_id if k == 0 else next_id))
            next_id += k > 0
    return out


def slice_track(t: Track, idx, track_id=None) -> Track:
    """Frames ``idx`` (consecutive indices into the track) of a track as a new Track."""
    idx = np.asarray(idx)
    g = lambda a: None if a is None else a[idx]
    return Track(t.track_id if track_id is None else track_id, t.frames[idx], t.observed[idx], t.video,
                 t.boxes[idx], t.scores[idx], kp2d=g(t.kp2d), kp2d_conf=g(t.kp2d_conf), layout2d=t.layout2d,
                 kp3d=g(t.kp3d), layout3d=t.layout3d, kp3d_root_relative=t.kp3d_root_relative,
                 rotmats=g(t.rotmats), transl=g(t.transl), betas=t.betas, side=t.side)


def _refined_keypoints(track: Track, R, transl, obs, body):
    """The input's 3D keypoints refined (``trust.refine_keypoints``), in the input's frame: (N, K, 3)."""
    from .skeletons import canonical_frame_joints
    from .trust import refine_keypoints
    n = len(track)
    kp_body = body.pose_keypoints(R, transl, track.layout3d)
    kp_in = torch.zeros_like(kp_body)
    kp_in[:n] = torch.as_tensor(np.nan_to_num(track.kp3d), dtype=kp_body.dtype)
    o = obs.clone()
    o[n:] = False
    if track.kp3d_root_relative:   # compare shapes only: the body's root sits where its translation puts it
        origin = canonical_frame_joints(track.layout3d)["origin"]
        kp_body = kp_body - kp_body[:, origin].mean(1, keepdim=True)
        kp_in = kp_in - kp_in[:, origin].mean(1, keepdim=True)
    return refine_keypoints(kp_in, kp_body, o).numpy().astype(np.float32)


def _trust_input(track: Track, R, obs):
    """Blend observed SMPL inputs into the output by their estimated trust (``trust.blend_with_input``)."""
    from .trust import blend_with_input
    n = len(track)
    R_in = torch.eye(3, dtype=R.dtype).expand_as(R).clone()
    R_in[:n] = torch.as_tensor(np.nan_to_num(track.rotmats), dtype=R.dtype)
    o = obs.clone()
    o[n:] = False                                     # predicted frames beyond the track
    return blend_with_input(R, R_in, o)


def _keep_observed(track: Track, R, transl, obs):
    if track.rotmats is None:
        raise ValueError(f"keep_observed needs SMPL rotation inputs; track {track.track_id} has none")
    n = len(track)
    obs = obs.clone()
    obs[n:] = False                                   # predicted frames beyond the track
    R_in = torch.eye(3).expand_as(R).clone()
    R_in[:n] = torch.as_tensor(np.nan_to_num(track.rotmats), dtype=R.dtype)
    if track.transl is not None:
        t_in = transl.clone()
        t_in[:n] = torch.as_tensor(np.nan_to_num(track.transl), dtype=transl.dtype)
        ok = obs & torch.isfinite(t_in).all(-1)
        if ok.any():
            from .baselines import interpolate
            d = interpolate((t_in - transl).double().numpy(), ok.numpy())
            transl = transl + torch.as_tensor(d, dtype=transl.dtype)
    return anchor_to_observed(R, R_in, obs), transl


def anchor_to_observed(R, R_in, observed):
    """Re-anchor refined rotations onto trusted inputs.

    R (N, J, 3, 3): model output; R_in (N, J, 3, 3): inputs, read where ``observed`` (N,) bool.
    Returns (N, J, 3, 3): ``R_in`` on observed frames; elsewhere ``C(t) @ R[t]``, with the
    per-joint correction C = R_in R^T slerped between the previous and next observed frames
    (held before the first and after the last). Keeps PoseBERT's motion between exact key poses:
    in-betweening clean keys 20 frames apart, 24.7 mm on the filled frames vs 31.5 without and
    27.6 for slerp (validation split).
    """
    if not observed.any():
        return R
    from .baselines import interpolate_rotations
    C = R_in.double() @ R.double().transpose(-1, -2)
    Ct = torch.as_tensor(interpolate_rotations(C.numpy(), observed.numpy()))
    out = (Ct @ R.double()).to(R.dtype)
    out[observed] = R_in[observed].to(R.dtype)
    return out




def mirror_smpl_track(track: Track) -> Track:
    """The left-right mirror image of a track's SMPL motion (camera X reflected): rotations by
    :func:`~posebert_plug.synth.mirror_rotmats`, translations with x negated. Only the SMPL fields,
    which are all the ``smpl`` preset reads."""
    from .synth import mirror_rotmats
    R, tr = track.rotmats, track.transl
    return replace(track, rotmats=None if R is None else mirror_rotmats(torch.as_tensor(R)).numpy(),
                   transl=None if tr is None else tr * np.asarray([-1, 1, 1], tr.dtype))


def mirror_smpl_output(R, param):
    """Undo :func:`mirror_smpl_track` on the model's output: R (N, 24, 3, 3), param (N, 3) canonical
    (u, v, nearness)."""
    from .synth import mirror_rotmats
    return mirror_rotmats(R), param * torch.tensor([-1.0, 1.0, 1.0], dtype=param.dtype)


def mirror_x(R, transl):
    """Mirror poses in the camera's X: rotations (..., J, 3, 3) -> M R M, translations (..., 3) -> M t.
    A right-hand pose mirrored this way is the left model's pose of the mirrored hand."""
    M = torch.as_tensor(MIRROR_X, dtype=R.dtype)
    return M @ R @ M, transl * M.diagonal().to(transl.dtype)


def align_translation_2d(R, transl, track: Track, observed, body, f_norm, layout, smooth: int = 9,
                         min_conf: float = 0.0, order: int = 1, gaps: str = "prior"):
    """Root translation (N, 3) whose body keypoints reproject onto the track's 2D keypoints.

    Per observed frame, solves f (X_i + tx) - u_i (Z_i + tz) = 0 (and the same for v) in the
    confidence-weighted least-squares sense over the keypoints of confidence > 0 and >= ``min_conf``, with
    (X_i, Y_i, Z_i) the keypoints of the refined pose relative to the root. The root is then tracked
    as the image sees it, image position (x/z, y/z) and log depth: the image position is these per-frame
    solutions on observed frames (PoseBERT's motion shifted onto them across filled frames), smoothed
    over time (Savitzky-Golay, ``smooth`` frames, ``order``); the depth, which 2D keypoints say little
    about, is PoseBERT's with the smoothed correction. (Smoothing the correction of the image position
    kept PoseBERT's own frame-to-frame jumps, and smoothing a correction in metres mixed a frame's lateral
    offset with its neighbours' depth: at a frame edge, where clipped keypoints bunch up, that put a
    body beside the frame: comp2's ghost frame in bench/realvideo.py.) ``gaps="interpolate"``: across
    filled frames the aligned root (image position and log depth) is interpolated between observed frames
    instead of following PoseBERT's motion: for translations PoseBERT cannot be trusted with (root-relative
    3D keypoints, whose translation it reads off the 2D extent).
    """
    from .baselines import filled_savgol, interpolate
    src, dst = mapping(track.layout2d, layout)
    v = track.video
    n = len(track)
    uv = np.zeros((n, get_skeleton(layout).num_joints, 2), np.float32)
    c = np.zeros(uv.shape[:2], np.float32)
    uv[:, dst] = pixels_to_norm(torch.as_tensor(np.nan_to_num(track.kp2d[:, src])), v.width, v.height).numpy()
    c[:, dst] = np.nan_to_num(track.kp2d_conf[:, src]) * np.isfinite(track.kp2d[:, src]).all(-1)
    rel = body.pose_keypoints(R[:n], None, layout).double().numpy()          # root at rest-joint origin
    t0 = transl[:n].double().numpy()
    corr = np.full((n, 3), np.nan)
    for i in np.flatnonzero(np.asarray(observed[:n], bool)):
        w = (c[i] > 0) & (c[i] >= min_conf)
        if w.sum() < 4 or t0[i, 2] <= 0:
            continue
        P, u, wt = rel[i, w], uv[i, w].astype(np.float64), np.sqrt(c[i, w]).astype(np.float64)
        rows = [np.column_stack([np.full(len(P), f_norm), np.zeros(len(P)), -u[:, 0]]),
                np.column_stack([np.zeros(len(P)), np.full(len(P), f_norm), -u[:, 1]])]
        rhs = [u[:, 0] * P[:, 2] - f_norm * P[:, 0], u[:, 1] * P[:, 2] - f_norm * P[:, 1]]
        A = np.concatenate(rows) * np.concatenate([wt, wt])[:, None]
        b = np.concatenate(rhs) * np.concatenate([wt, wt])
        sol, *_ = np.linalg.lstsq(A, b, rcond=None)
        if np.isfinite(sol).all() and sol[2] > 0.3:
            corr[i] = [sol[0] / sol[2] - t0[i, 0] / t0[i, 2], sol[1] / sol[2] - t0[i, 1] / t0[i, 2],
                       np.log(sol[2] / t0[i, 2])]
    ok = np.isfinite(corr).all(1)
    if not ok.any():
        return transl
    # image position: the root seen frame by frame (in gaps, PoseBERT's motion shifted onto it), smoothed;
    # depth, which 2D sees poorly: PoseBERT's motion with the smoothed correction
    good = t0[:, 2] > 0
    pb = np.column_stack([t0[:, :2] / np.where(good, t0[:, 2], 1.0)[:, None], np.log(np.where(good, t0[:, 2], 1.0))])
    w = min(smooth, max(3, ok.sum() // 2 * 2 - 1)) if ok.sum() >= 3 else 0   # 0: too few frames to smooth
    if gaps == "interpolate":   # the aligned root itself, interpolated and smoothed: no PoseBERT motion in it
        root = interpolate(np.where(ok[:, None], pb + np.nan_to_num(corr), 0.0), ok)
        if w:
            root = filled_savgol(root, window=w, order=order)
    else:
        corr = interpolate(corr, ok)
        if w:
            corr[:, 2] = filled_savgol(corr[:, 2:], window=w, order=order)[:, 0]
        root = pb + corr
        if w:
            root[:, :2] = filled_savgol(root[:, :2], window=w, order=order)
    out = transl.clone()
    z = np.exp(root[:, 2])
    xy = root[:, :2] * z[:, None]
    out[:n][good] = torch.as_tensor(np.column_stack([xy, z])[good], dtype=transl.dtype)
    return out


# 2D layouts the body cannot regress but which extend SMPL-24 (HybrIK's 29 joints) are fitted on those joints.
def fit_layout_2d(track: Track, body) -> str | None:
    """The layout a track's 2D keypoints are fitted in (:func:`fit_tracks_2d`): the track's own when the
    prior ``body`` regresses it (coco17, h36m17, mediapipe33, smpl24), ``smpl24`` for a layout holding
    every SMPL-24 joint (hybrik29); None (not fitted) for no 2D or any other layout (a hand, a layout the
    body does not know)."""
    if track.kp2d is None or track.layout2d is None or track.kp2d_conf is None:
        return None
    try:
        sk = get_skeleton(track.layout2d)
    except (KeyError, ValueError):
        return None
    for lay in (sk.name, "smpl24"):
        if lay != sk.name and not set(get_skeleton(lay).joints) <= set(sk.joints):
            continue
        try:
            body.pose_keypoints(torch.eye(3).expand(1, len(body.parents), 3, 3), None, lay)
        except (KeyError, ValueError, RuntimeError, TypeError):
            continue
        return lay
    return None


def fit_tracks_2d(jobs, body, layout, options=None) -> list:
    """:func:`posebert_plug.fit2d.fit_many` on tracks' own 2D keypoints (pixels), all in one batch.
    jobs: [(track, R (N, J, 3, 3), transl (N, 3), observed (N,), f_norm)] -> [(R, transl)]; the tracks'
    2D keypoints are taken into ``layout`` by joint name (:func:`~posebert_plug.skeletons.mapping`), so
    tracks of several 2D layouts may share a batch. ``options``: a
    :class:`~posebert_plug.fit2d.FitOptions` or a dict of its fields (fps: the track's)."""
    from .fit2d import FitOptions, fit_many
    if not jobs:
        return []
    if isinstance(options, dict) or options is None:
        options = FitOptions(**{"fps": jobs[0][0].video.fps or 30.0, **(options or {})})
    K = get_skeleton(layout).num_joints
    items = []
    for track, R, transl, observed, f_norm in jobs:
        src, dst = mapping(track.layout2d, layout)
        n = len(track)
        uv = np.zeros((len(R), K, 2))
        c = np.zeros((len(R), K))
        uv[:n, dst] = np.nan_to_num(track.kp2d[:, src])
        c[:n, dst] = np.nan_to_num(track.kp2d_conf[:, src]) * np.isfinite(track.kp2d[:, src]).all(-1)
        o = np.zeros(len(R), bool)
        o[:n] = np.asarray(observed[:n], bool)
        v = track.video
        seen = np.zeros(len(R), bool)
        seen[:n] = track.observed
        items.append((R, transl, uv, c, o, f_norm * max(v.width, v.height) / 2, (v.width / 2, v.height / 2), seen))
    return fit_many(items, body, layout, options)


def canonical_video() -> VideoInfo:
    """The video assumed when none is given: 1024 x 1024 at 30 fps, the canonical focal."""
    return VideoInfo(1024, 1024, 30.0)


def _upsample_factor(video, model_fps):
    if video is None or not video.fps:
        return 1
    k = model_fps / video.fps
    return int(round(k)) if k >= 1.5 and abs(k - round(k)) < 0.05 else 1


def predict_future(track: Track, n_frames: int, model="auto", device="auto", window: int | None = None,
                   keep_observed: bool = False, predict_hold_s: float = 1.0) -> RefinedTrack:
    """Refine a track and extend it ``n_frames`` beyond its last frame (returned track has N + n frames).

    window: default the model's trained window (64 for the shipped weights); ``n_frames`` must be smaller.
    ``keep_observed`` (SMPL inputs): for exact inputs, return the observed frames as given and
    continue PoseBERT's predicted motion from the last of them (see :func:`refine_tracks`).
    ``predict_hold_s``: see :func:`damp_prediction` (0: PoseBERT's prediction alone)."""
    if n_frames < 0:
        raise ValueError("n_frames must be >= 0")
    return refine_tracks([track], model=model, device=device, window=window, extra_frames=n_frames,
                         keep_observed=keep_observed, predict_hold_s=predict_hold_s)[0]


def complete_motion(key_rotmats: dict, num_frames: int, key_transl: dict | None = None, video: VideoInfo | None = None,
                    model="smpl", device="auto", exact_keys: bool = True) -> RefinedTrack:
    """In-betweening: key poses at some frames -> a complete motion of ``num_frames`` frames.

    key_rotmats: {frame: (24, 3, 3)}; key_transl: {frame: (3,)} camera-frame metres (optional).
    exact_keys: return the key poses as given and PoseBERT's motion re-anchored onto them
        (``keep_observed`` of :func:`refine_tracks`); ``False`` returns PoseBERT's outputs,
        which treat the keys as noisy observations.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not key_rotmats:
        raise ValueError("complete_motion needs at least one key pose")
    if max(key_rotmats) >= num_frames or min(key_rotmats) < 0:
        raise ValueError(f"key frames must lie in 0..{num_frames - 1}")
    video = video or canonical_video()
    dets = [Detection(f, rotmats=R, transl=None if key_transl is None else key_transl.get(f))
            for f, R in sorted(key_rotmats.items())]
    tr = Track.from_detections(0, dets, video).padded(0, num_frames - 1)
    return refine_tracks([tr], model=model, device=device, keep_observed=exact_keys)[0]


class OnlineRefiner:
    """Streaming refinement: ``step(track_id, detection)`` once per frame per identity.

    A ring buffer per identity over the offline path: each step refines the identity's last
    ``context`` frames (from the first observed one in the buffer) with :func:`refine_group`, the
    function :func:`refine_tracks` runs, so the same masks, frame-rate handling, trust weighting and
    2D fit apply, and frame t streamed equals frame t of ``refine_tracks`` on the same frames.
    ``context``: the input frames one model window holds (``history``, at most the trained window
    over the frame-rate factor, minus ``predict_ahead``).

    ``step`` returns ``(current, ahead)``: the refined pose of the newest frame and, when
    ``predict_ahead`` > 0, the pose ``predict_ahead`` frames later; each ``(rotmats (J, 3, 3),
    transl (3,))`` (J = 24 body, 16 hand; camera frame, metres). Pass ``detection=None`` for a frame
    where the person was not seen. :attr:`last` holds each identity's last refined window
    (a :class:`RefinedTrack`, frames counted per identity from its first step).
    ``refiner``: a :class:`Refiner` to share loaded models with (built on ``device`` otherwise);
    other keywords are :class:`RefineOptions` fields (``fit_2d``, ``trust_input``, ...). ``gap_check`` is
    off by default here: it only changes frames inside gaps, which lie behind the newest frame (the
    current and predicted poses are the same either way), and it triples the model's work per step
    (94 -> 37 ms per step on a 2-core CPU with a third of the frames missing); pass ``gap_check=True`` for
    :attr:`last` windows filled as :func:`refine_tracks` fills them.
    """

    def __init__(self, preset="smpl", video: VideoInfo | None = None, history: int = 64, predict_ahead: int = 0,
                 device="auto", policy: ConfidencePolicy | None = None, refiner: Refiner | None = None, **options):
        self.ref = refiner if refiner is not None else Refiner(device)
        self.net = self.ref.model(preset)
        self.preset = self.net.preset.name
        self.video = video or canonical_video()
        self.options = RefineOptions(policy=policy or ConfidencePolicy(), extra_frames=predict_ahead,
                                     **{"gap_check": False, **options})
        k = _upsample_factor(self.video, self.options.model_fps)
        span = trained_window(self.net) // k      # input frames in one model window
        if not 0 <= predict_ahead < span:
            raise ValueError(f"predict_ahead must lie in 0..{span - 1} (the model's window is {span} frames "
                             f"at {self.video.fps:g} fps)")
        if history < 1:
            raise ValueError("history must be >= 1")
        self.history, self.ahead = history, predict_ahead
        self.context = min(history, span - predict_ahead)
        self.buffers = {}   # track_id -> deque of (frame, Detection | None), the last `context` frames
        self.last = {}

    def reset(self, track_id=None):
        if track_id is None:
            self.buffers.clear()
            self.last.clear()
        else:
            self.buffers.pop(track_id, None)
            self.last.pop(track_id, None)

    def window(self, track_id) -> Track | None:
        """The identity's buffered frames as a Track (from its first observed frame), or None."""
        buf = self.buffers.get(track_id)
        seen = [d for _, d in buf if d is not None] if buf else []
        if not seen:
            return None
        return Track.from_detections(track_id, seen, self.video).padded(seen[0].frame, buf[-1][0])

    def push(self, track_id, detection: Detection | None) -> int:
        """Add a frame to an identity's buffer without refining (when no output is needed for it);
        returns the frame's index in the identity's stream."""
        if detection is not None and not isinstance(detection, Detection):
            raise TypeError(f"step takes a Detection (or None for an unseen frame), got {type(detection).__name__}")
        buf = self.buffers.setdefault(track_id, deque(maxlen=self.context))
        frame = buf[-1][0] + 1 if buf else 0
        buf.append((frame, None if detection is None else replace(detection, frame=frame)))
        return frame

    def step(self, track_id, detection: Detection | None):
        """Add a frame and refine: -> (current, ahead) (see the class)."""
        self.push(track_id, detection)
        track = self.window(track_id)
        if track is None:  # not seen yet, or only longer ago than the model's context reaches
            self.last.pop(track_id, None)
            return None, None
        out = refine_group(self.ref, self.net, [track], self.options, lambda t, reason: None)
        if id(track) not in out:   # nothing usable in the window (e.g. only low-score frames)
            self.last.pop(track_id, None)
            return None, None
        r = self.last[track_id] = out[id(track)]
        n = len(track)
        cur = (r.rotmats[n - 1], r.transl[n - 1])
        ahead = (r.rotmats[n - 1 + self.ahead], r.transl[n - 1 + self.ahead]) if self.ahead else None
        return cur, ahead
