"""Evidence before filling: which tracks are people, and which gaps may be filled.

A tracker output is not yet something to draw a mesh on. :func:`vet_tracks` takes
the tracks and the video's shot cuts and returns what PoseBERT should refine:

1. every track is split at shot cuts (the pieces are different shots: another
   person, or nobody);
2. *usable* frames are the observed frames the refiner would use (detection
   score >= ``min_frame_score``; with 2D keypoints, unless the track has SMPL rotations,
   at least ``min_visible_joints`` keypoints of confidence >= ``min_joint_conf`` inside
   the frame, and at least ``min_inside_fraction`` of its confident keypoints inside it; and a box at least
   ``min_height_ratio`` times the median height of the boxes of the track's nearest usable frames (two
   seconds of video): a much smaller box is not the person followed); a track is split at every run of
   more than ``max_fill_frames`` frames without a usable frame (default: one second
   of video, ``max_fill_seconds``), and each piece is trimmed to its first and last
   usable frames, so nothing is extrapolated past the evidence (and past a lone usable frame after a
   gap: a piece starts and ends on ``min_end_run`` consecutive usable frames); inside a piece, observed frames
   that are not usable are marked unobserved (the refiner fills them as it fills gaps);
3. a piece is dropped when it has fewer than ``min_observed`` usable frames
   (default: the larger of 5 and 0.2 s of video: 6 frames at 30 fps), when the median height of
   its boxes is below ``min_box_height`` of the frame height (default 3 %) or when
   its median box is more than ``max_box_aspect`` times wider than tall (default 2.5:
   a car, a motorbike, a bench, not a standing, sitting or head-and-shoulders person).
   Tracks without boxes (some 3D estimators) skip the box tests.

Every split and drop is reported (``{"id", "reason", ...}``) so that the caller can
list it (``summary.json``: ``dropped_tracks``, ``split_tracks``). The first piece of a
split track keeps its id; other pieces get new ids after the largest one.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from posebert_plug.types import Track, VideoInfo

__all__ = ["EvidenceConfig", "vet_tracks", "usable_frames"]


@dataclass
class EvidenceConfig:
    """Defaults of :func:`vet_tracks` (see the module docstring). ``None`` in a frame count
    means: derived from the video's fps (``*_seconds``)."""

    min_observed: int | None = None       # usable frames a track needs (None: max(5, min_observed_seconds * fps))
    min_observed_seconds: float = 0.2
    max_fill_frames: int | None = None    # longest gap filled (None: max_fill_seconds * fps, at least 1)
    max_fill_seconds: float = 1.0
    min_box_height: float = 0.03          # median box height / frame height
    max_box_aspect: float = 2.5           # median box width / height
    min_frame_score: float = 0.3
    min_joint_conf: float = 0.2
    min_visible_joints: int = 6
    min_inside_fraction: float = 0.5      # of a frame's keypoints of confidence >= min_joint_conf, inside the frame
    min_height_ratio: float = 0.6         # a frame's box height / the median of its track's nearest 2 s of boxes
    min_end_run: int = 2                  # a piece starts and ends on this many consecutive usable frames

    def frames_needed(self, fps: float) -> int:
        if self.min_observed is not None:
            return int(self.min_observed)
        return max(5, int(round(self.min_observed_seconds * (fps or 30.0))))

    def max_fill(self, fps: float) -> int:
        if self.max_fill_frames is not None:
            return int(self.max_fill_frames)
        return max(1, int(round(self.max_fill_seconds * (fps or 30.0))))


def usable_frames(t: Track, cfg: EvidenceConfig | None = None) -> np.ndarray:
    """(N,) bool: observed frames with enough confidence to be refined."""
    cfg = cfg or EvidenceConfig()
    ok = t.observed & (np.nan_to_num(t.scores, nan=1.0) >= cfg.min_frame_score)
    if t.kp2d is not None and t.rotmats is None:
        conf = np.nan_to_num(t.kp2d_conf) * np.isfinite(t.kp2d).all(-1)
        seen = conf >= cfg.min_joint_conf
        v = t.video
        if v is not None and v.width and v.height:   # in the image: MediaPipe places landmarks beside the
            x, y = t.kp2d[..., 0], t.kp2d[..., 1]     # frame for a person leaving it (a detection of nobody here)
            seen &= (x >= 0) & (x <= v.width) & (y >= 0) & (y <= v.height)
        ok &= seen.sum(-1) >= min(cfg.min_visible_joints, t.kp2d.shape[1])
        if v is not None and v.width and v.height and cfg.min_inside_fraction > 0:
            # most of the confident keypoints beside the frame: a person leaving it, of whom MediaPipe still
            # places a whole body (comp1: 17 landmarks of confidence >= 0.5, 4 of them in the frame)
            conf_any = conf >= cfg.min_joint_conf
            ok &= seen.sum(-1) >= cfg.min_inside_fraction * conf_any.sum(-1)
    if cfg.min_height_ratio > 0 and t.boxes is not None:
        # two seconds of neighbours: the median stays the person's height through a run of up to a second
        # of collapsed boxes (comp2: 6 frames of 78-84 px among 140 px at 10 fps passed with one second)
        k = max(8, int(round(2 * ((t.video.fps if t.video is not None else 0) or 30.0))))
        for _ in range(4):   # a collapsed box is no reference for its neighbours: repeat until none is found
            bad = _collapsed(t.boxes, ok, cfg.min_height_ratio, k)
            if not bad.any():
                break
            ok = ok & ~bad
    return ok


def _collapsed(boxes, ok, ratio: float, k: int) -> np.ndarray:
    """(N,) bool: ``ok`` frames whose box is less than ``ratio`` times the median height of the boxes of the
    track's ``k`` nearest other ``ok`` frames (two seconds of video): not the person the track follows. MediaPipe
    run on a crop where they are hidden or leaving lays a body flat across whatever is there (comp1/comp2's
    ghost frames: landmark boxes 27-72 px high among boxes of 120-140 px)."""
    b = np.asarray(boxes, np.float64)
    h = b[:, 3] - b[:, 1]
    good = np.flatnonzero(ok & np.isfinite(h))
    out = np.zeros(len(h), bool)
    if len(good) < 3:
        return out
    for i in good:
        nb = good[good != i]
        nb = nb[np.argsort(np.abs(nb - i), kind="stable")[:k]]
        out[i] = h[i] < ratio * np.median(h[nb])
    return out


def _slice(t: Track, idx, track_id) -> Track:
    from posebert_plug.refine import slice_track
    return slice_track(t, idx, track_id)


def vet_tracks(tracks, video: VideoInfo, cuts=(), config: EvidenceConfig | None = None):
    """-> (tracks to refine, dropped [{"id", "reason"}], split [{"id", "into", "reason"}])."""
    from posebert_plug.cuts import split_at_cuts
    cfg = config or EvidenceConfig()
    fps = video.fps if video is not None else 30.0
    need, max_fill = cfg.frames_needed(fps), cfg.max_fill(fps)
    next_id = max([int(t.track_id) for t in tracks], default=-1) + 1
    kept, dropped, split = [], [], []
    for t in tracks:
        ok = usable_frames(t, cfg)
        if not ok.any():
            dropped.append({"id": int(t.track_id), "reason": "no usable observation (all frames missing or below "
                            f"the confidence thresholds: score < {cfg.min_frame_score} or fewer than "
                            f"{cfg.min_visible_joints} keypoints of confidence >= {cfg.min_joint_conf} in the frame)"})
            continue
        pieces, why = [], []
        for shot_k, shot in enumerate(split_at_cuts(t.frames, cuts)):
            if shot_k and ok[shot].any():
                why.append(f"shot cut at frame {int(t.frames[shot[0]])}")
            u = shot[ok[shot]]
            if not len(u):
                continue
            breaks = np.flatnonzero(np.diff(u) - 1 > max_fill)
            for b in breaks:
                why.append(f"gap of {int(u[b + 1] - u[b] - 1)} frames after frame {int(t.frames[u[b]])} "
                           f"(longest filled: {max_fill})")
            for run in np.split(u, breaks + 1):
                run = _solid_ends(run, cfg.min_end_run)
                pieces.append(np.arange(run[0], run[-1] + 1))
        ids = [int(t.track_id)] + list(range(next_id, next_id + len(pieces) - 1))
        next_id += len(pieces) - 1
        if len(pieces) > 1:
            split.append({"id": int(t.track_id), "into": ids, "reason": "; ".join(why)})
        for tid, idx in zip(ids, pieces):
            piece = t if len(idx) == len(t) else _slice(t, idx, tid)
            use = usable_frames(piece, cfg)
            reason = _lacks_evidence(piece, use, video, cfg, need)
            if reason:
                dropped.append({"id": tid, "reason": reason})
            else:
                # frames that are not usable are not evidence: the refiner fills them like gaps (a body laid
                # flat by MediaPipe mid-track, a box collapsed onto a part of the person, landmarks beside
                # the frame), and the ghost gate measures the body against the boxes of usable frames
                kept.append(piece if use.sum() == piece.observed.sum() else replace(piece, observed=piece.observed & use))
    kept.sort(key=lambda t: (int(t.frames[0]), int(t.track_id)))
    return kept, dropped, split


def _solid_ends(run, n: int) -> np.ndarray:
    """The usable frame indices ``run`` (increasing) without isolated frames at either end: a piece starts and
    ends on ``n`` consecutive usable frames. A lone detection after a gap at a track's end is where ghosts were
    (comp1 at 960: a person leaving on the left, MediaPipe's landmarks on a box 16 px wide after two missed
    frames, the body fitted beside the frame; a box of 85 px among 131 px at the top edge after five)."""
    run = np.asarray(run)
    if n <= 1 or len(run) < n:
        return run
    solid = np.zeros(len(run), bool)
    consecutive = np.diff(run) == 1
    for k in range(len(run) - n + 1):
        if consecutive[k:k + n - 1].all():
            solid[k:k + n] = True
    if not solid.any():   # no n in a row anywhere (every other frame detected): kept whole, for the tests below
        return run
    a, b = np.flatnonzero(solid)[[0, -1]]
    return run[a:b + 1]


def _lacks_evidence(t: Track, ok, video, cfg: EvidenceConfig, need: int) -> str | None:
    n = int(ok.sum())
    if n < need:
        return f"too little evidence: {n} usable frames (at least {need} needed)"
    b = t.boxes[ok]
    b = b[np.isfinite(b).all(1)]
    if len(b) and video is not None and video.height:
        h = float(np.median(b[:, 3] - b[:, 1]))
        w = float(np.median(b[:, 2] - b[:, 0]))
        if h < cfg.min_box_height * video.height:
            return f"box too small: median height {h:.0f} px (< {cfg.min_box_height:.0%} of the frame height)"
        if w > cfg.max_box_aspect * max(h, 1e-6):
            return f"implausible box for a person: median {w:.0f} x {h:.0f} px (wider than {cfg.max_box_aspect} x its height)"
    return None
