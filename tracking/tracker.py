"""Hungarian-matching multi-person tracker: per-frame detections -> identity tracks with gaps.

Per frame, every live track predicts where its person should be (constant
velocity of the box, damped over long gaps), and a cost matrix between
predictions and detections combines
- box overlap: ``1 - IoU`` (weight ``w_iou``),
- keypoint distance: confidence-weighted mean 2D distance divided by the box
  scale sqrt(area), clipped to 1 (weight ``w_kp``, OKS-like),
- root distance in 3D when both carry a translation (metres / ``root_scale``,
  clipped to 1, weight ``w_3d``),
- box height ratio ``|log(h_pred / h_det)| / log(1.5)``, clipped to 1 (weight
  ``w_size``): at a crossing the nearer person is taller, which overlap alone misses.
``scipy.optimize.linear_sum_assignment`` solves it; pairs above ``max_cost``
are refused (gating). A track is confirmed after ``n_init`` consecutive hits
(so a one-frame false positive never becomes a track), lives through gaps of
up to ``max_gap`` frames (re-identified when it reappears near its predicted
place), and tracks shorter than ``min_length`` observed frames are dropped.
At a shot cut (``cut()``, or ``cuts=[...]`` of :func:`track_detections`: frames that start
a new shot) every live track ends: nobody is matched across a cut.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from posebert_plug.types import Detection, FrameDetections, Track, VideoInfo

__all__ = ["TrackerConfig", "HungarianTracker", "track_detections", "iou_matrix"]


@dataclass
class TrackerConfig:
    w_iou: float = 1.0
    w_kp: float = 1.0
    w_3d: float = 0.5
    w_size: float = 0.5
    root_scale: float = 1.0       # metres at which the 3D term saturates
    max_cost: float = 2.0         # gating: no match above this (sum of the weighted terms)
    lost_cost_growth: float = 0.02  # the gate widens by this per missed frame (re-identification)
    n_init: int = 3               # consecutive hits before a track is confirmed
    max_gap: int = 30             # frames a track may miss before it dies
    min_length: int = 5           # observed frames a track needs to be reported
    min_score: float = 0.25       # detections below are ignored
    velocity_smoothing: float = 0.9   # EMA of the box velocity: occlusions shrink boxes and jerk a raw estimate
    velocity_damping_frames: int = 20  # extrapolate with velocity for at most this many frames


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between boxes a (N, 4) and b (M, 4), xyxy pixels -> (N, M)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: np.clip(r[:, 2] - r[:, 0], 0, None) * np.clip(r[:, 3] - r[:, 1], 0, None)
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-9)


@dataclass
class _LiveTrack:
    tid: int
    box: np.ndarray
    kp: np.ndarray | None
    conf: np.ndarray | None
    root: np.ndarray | None
    last_frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    hits: int = 1
    confirmed: bool = False
    detections: list = field(default_factory=list)

    def predicted_box(self, frame, damping):
        dt = min(frame - self.last_frame, damping)
        return self.box + self.velocity * dt


class HungarianTracker:
    """Online tracker; feed frames in order with :meth:`update`, then call :meth:`tracks`."""

    def __init__(self, config: TrackerConfig | None = None, video: VideoInfo | None = None):
        self.cfg = config or TrackerConfig()
        self.video = video
        self.live: list = []
        self.finished: list = []
        self._next_id = 0
        self._last_frame = -1

    def _cost(self, tracks, dets, frame):
        cfg = self.cfg
        pb = np.stack([t.predicted_box(frame, cfg.velocity_damping_frames) for t in tracks])
        db = np.stack([d.box for d in dets])
        cost = cfg.w_iou * (1.0 - iou_matrix(pb, db))
        hp = np.clip(pb[:, 3] - pb[:, 1], 1.0, None)
        hd = np.clip(db[:, 3] - db[:, 1], 1.0, None)
        cost += cfg.w_size * np.minimum(1.0, np.abs(np.log(hp[:, None] / hd[None])) / np.log(1.5))
        # Keypoint term, shifted by the predicted box motion.
        scale = np.sqrt(np.clip((db[:, 2] - db[:, 0]) * (db[:, 3] - db[:, 1]), 1.0, None))
        for i, t in enumerate(tracks):
            if t.kp is None:
                continue
            shift = (pb[i, :2] + pb[i, 2:]) / 2 - (t.box[:2] + t.box[2:]) / 2
            for j, d in enumerate(dets):
                if d.kp2d is None or d.kp2d.shape != t.kp.shape:
                    cost[i, j] += cfg.w_kp * 0.5
                    continue
                w = t.conf * d.kp2d_conf
                if w.sum() < 1e-6:
                    cost[i, j] += cfg.w_kp * 0.5
                    continue
                dist = np.linalg.norm(t.kp + shift - d.kp2d, axis=-1)
                cost[i, j] += cfg.w_kp * min(1.0, float((w * dist).sum() / w.sum() / scale[j]))
        for i, t in enumerate(tracks):
            if t.root is None:
                continue
            for j, d in enumerate(dets):
                if d.transl is not None:
                    cost[i, j] += cfg.w_3d * min(1.0, float(np.linalg.norm(t.root - d.transl)) / cfg.root_scale)
        # A left hand never continues a right hand's track (sides come from the estimator).
        for i, t in enumerate(tracks):
            side = t.detections[-1].side if t.detections else None
            if side is not None:
                for j, d in enumerate(dets):
                    if d.side is not None and d.side != side:
                        cost[i, j] = 1e6  # finite: linear_sum_assignment rejects inf-only rows
        gate = cfg.max_cost + cfg.lost_cost_growth * np.array([frame - t.last_frame - 1 for t in tracks])
        return cost, gate

    def cut(self) -> None:
        """A new shot starts with the next frame: end every live track (tentative ones are dropped)."""
        self.finished += [t for t in self.live if t.confirmed]
        self.live = []

    def update(self, frame_dets: FrameDetections) -> None:
        frame = int(frame_dets.frame)
        if frame <= self._last_frame:
            raise ValueError(f"frames must arrive in increasing order (got {frame} after {self._last_frame})")
        self._last_frame = frame
        dets = [d for d in frame_dets.detections if d.score >= self.cfg.min_score and d.box is not None]
        matched_t, matched_d = set(), set()
        if self.live and dets:
            cost, gate = self._cost(self.live, dets, frame)
            # Confirmed tracks first: a tentative track never steals a confirmed person.
            cost = cost + np.array([0.0 if t.confirmed else 0.3 for t in self.live])[:, None]
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if cost[r, c] <= gate[r] + (0.0 if self.live[r].confirmed else 0.3):
                    self._extend(self.live[r], dets[c], frame)
                    matched_t.add(r)
                    matched_d.add(c)
        survivors = []
        for i, t in enumerate(self.live):
            if i in matched_t:
                survivors.append(t)
            elif not t.confirmed:
                continue  # a tentative track that misses a frame is dropped (false positive)
            elif frame - t.last_frame > self.cfg.max_gap:
                self.finished.append(t)
            else:
                survivors.append(t)
        for j, d in enumerate(dets):
            if j not in matched_d:
                survivors.append(self._new(d, frame))
        self.live = survivors

    def _new(self, d: Detection, frame):
        t = _LiveTrack(self._next_id, d.box.astype(np.float64), d.kp2d, d.kp2d_conf, d.transl, frame,
                       confirmed=self.cfg.n_init <= 1, detections=[d])
        self._next_id += 1
        return t

    def _extend(self, t: _LiveTrack, d: Detection, frame):
        dt = max(1, frame - t.last_frame)
        v = (d.box - t.box) / dt
        a = self.cfg.velocity_smoothing
        t.velocity = a * t.velocity + (1 - a) * v if t.hits > 1 else v
        t.box, t.kp, t.conf, t.root = d.box.astype(np.float64), d.kp2d, d.kp2d_conf, d.transl
        t.hits = t.hits + 1 if frame - t.last_frame == 1 or t.confirmed else 1
        t.last_frame = frame
        if t.hits >= self.cfg.n_init:
            t.confirmed = True
        t.detections.append(d)

    def tracks(self, video: VideoInfo | None = None) -> list:
        """All confirmed tracks with at least ``min_length`` observed frames, as :class:`Track`s,
        numbered 0.. in order of first appearance."""
        video = video or self.video
        if video is None:
            raise ValueError("tracks() needs the VideoInfo (pass video= to the tracker or here)")
        every = [t for t in self.finished + self.live if t.confirmed and len(t.detections) >= self.cfg.min_length]
        every.sort(key=lambda t: (t.detections[0].frame, t.tid))
        out = []
        for k, t in enumerate(every):
            dets = [Detection(**{**d.__dict__, "track_id": k}) for d in t.detections]
            out.append(Track.from_detections(k, dets, video))
        return out


def track_detections(frames, video: VideoInfo, config: TrackerConfig | None = None, progress: bool = False,
                     cuts=None) -> list:
    """Track a sequence of :class:`FrameDetections` (any frames may be absent or empty) -> list of Track.

    cuts: frames that start a new shot (``posebert_plug.cuts.detect_cuts``): no track continues
    across one."""
    tr = HungarianTracker(config, video)
    cuts = sorted(int(c) for c in (cuts or ()))
    k = 0
    items = sorted(frames, key=lambda f: f.frame)
    for a, b in zip(items, items[1:]):
        if a.frame == b.frame:
            raise ValueError(f"frame {a.frame} appears twice: pass one FrameDetections per frame "
                             "(all of that frame's detections in it)")
    if progress:
        from tqdm import tqdm
        items = tqdm(items, desc="tracking", unit="frame")
    for f in items:
        while k < len(cuts) and cuts[k] <= f.frame:
            if cuts[k] > tr._last_frame:   # a cut between the previous frame fed and this one
                tr.cut()
            k += 1
        tr.update(f)
    return tr.tracks()
