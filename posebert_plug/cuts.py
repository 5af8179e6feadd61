"""Hard shot cuts in a video, found on its decoded frames.

A track must never continue across a cut: on the other side is another shot, so
another person (or nobody) stands where the tracker would keep looking, and a
filled frame would fly a mesh through a shot where nobody is.

``detect_cuts(path)`` returns the frames that **start** a new shot (frame ``c``
is a cut when frames ``c - 1`` and ``c`` belong to different shots). The score
per frame is PySceneDetect's ContentDetector score (the mean absolute
difference of the H, S and V channels of consecutive frames, 0-255 scale),
computed here on frames decoded and scaled to ``SIZE`` (64 px on the long
side); a frame is a cut when its score is both above
``min_score`` and ``ratio`` times the median score of the ``2 * context``
frames around it (PySceneDetect's AdaptiveDetector rule: a fast pan or a
flash lifts the neighbours too, a cut does not). Defaults (``MIN_SCORE``
= 8, ``RATIO`` = 3, ``CONTEXT`` = 3) were chosen on compilations cut from
real clips (``bench/realvideo.py``: vtest.avi segments, plain, mirrored,
zoomed and reversed, and the hand clip): cuts between different views score
56-70, a jump in time within the same raised camera view (the demo clip then
vtest.avi 500-599 reversed) 9.5 at 6x its neighbours; inside a shot frames
score up to 10 (zoomed, mirrored vtest), always under 3x their neighbours (the
full vtest.avi: at most 4.9, the hand clip 2.1).

PySceneDetect (``scenedetect`` 0.6.7, ContentDetector, threshold 27), measured
on the same compilation, finds the same cuts (120, 180, 300) and none in
vtest.avi, at 3.7 ms/frame against 6.6-8.5 ms/frame here (PyAV decode and
resize dominate; the CPU was shared with other jobs); both are small beside the
detector (> 50 ms/frame), so the package is not a dependency. Cuts from
elsewhere (an editing list) are passed as ``cuts=[...]`` to
:func:`tracking.track_detections`, :func:`posebert_plug.refine_tracks` and
:class:`posebert_plug.pipeline.Pipeline`.
"""
from __future__ import annotations

import numpy as np

__all__ = ["detect_cuts", "cut_scores", "cuts_from_scores", "split_at_cuts",
           "MIN_SCORE", "RATIO", "CONTEXT"]

SIZE = 64          # long side of the frames the score is computed on (pixels)
MIN_SCORE = 8.0    # a cut changes the mean H/S/V of the frame by at least this (0-255)
RATIO = 3.0        # ... and by this many times the local median change
CONTEXT = 3        # frames on each side for the local median


def _hsv(rgb: np.ndarray) -> np.ndarray:
    import cv2
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV_FULL).astype(np.float32)


def cut_scores(path, stop: int | None = None) -> np.ndarray:
    """(N,) ContentDetector score of every frame vs the previous decoded one (score[0] = 0), frames
    numbered as :func:`adapters.video.iter_frames` numbers them (a corrupt packet's frame scores 0)."""
    import av
    scores, prev, idx = [], None, -1
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        w, h = s.codec_context.width, s.codec_context.height
        scale = SIZE / max(w, h)
        sw, sh = max(8, int(round(w * scale))), max(8, int(round(h * scale)))
        for packet in c.demux(s):
            try:
                frames = packet.decode()
            except Exception:
                idx += 1
                scores.append(0.0)
                continue
            for frame in frames:
                idx += 1
                if stop is not None and idx >= stop:
                    return np.asarray(scores, np.float64)
                cur = _hsv(frame.to_ndarray(format="rgb24", width=sw, height=sh))
                scores.append(0.0 if prev is None else float(np.abs(cur - prev).mean()))
                prev = cur
    return np.asarray(scores, np.float64)


def cuts_from_scores(scores, min_score: float = MIN_SCORE, ratio: float = RATIO, context: int = CONTEXT) -> list:
    """Frames starting a new shot from per-frame scores (see the module docstring)."""
    scores = np.asarray(scores, np.float64)
    out = []
    for i in range(1, len(scores)):
        if scores[i] < min_score:
            continue
        around = np.concatenate([scores[max(1, i - context):i], scores[i + 1:i + 1 + context]])
        base = float(np.median(around)) if len(around) else 0.0
        if scores[i] >= ratio * max(base, 1.0):
            out.append(i)
    return out


def detect_cuts(path, stop: int | None = None, min_score: float = MIN_SCORE, ratio: float = RATIO,
                context: int = CONTEXT) -> list:
    """Sorted frames of ``path`` that start a new shot (hard cuts), among its first ``stop`` frames."""
    return cuts_from_scores(cut_scores(path, stop), min_score, ratio, context)


def split_at_cuts(frames, cuts) -> list:
    """Consecutive frame numbers ``frames`` (N,) -> list of index arrays, one per shot they span."""
    frames = np.asarray(frames)
    cuts = np.asarray(sorted(int(c) for c in (cuts or ())), np.int64)
    if len(frames) == 0:
        return []
    shot = np.searchsorted(cuts, frames, side="right")
    edges = np.flatnonzero(np.diff(shot)) + 1
    return np.split(np.arange(len(frames)), edges)
