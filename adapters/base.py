"""Adapter registry: each estimator's output -> our per-frame detections.

An adapter documents the file it reads (or the estimator it runs), the
skeleton, units and camera model, and returns ``list[FrameDetections]``
(frame indices of the video; frames where nobody was found are simply absent
or empty). When the estimator defines a camera, ``video.focal_px`` is set to
the focal all translations are expressed for.
"""
from __future__ import annotations

import numpy as np

from posebert_plug.types import FrameDetections, VideoInfo

_REGISTRY: dict = {}


class AdapterError(ValueError):
    """An estimator file does not have the documented format; the message says what is wrong."""


class Adapter:
    name = ""
    aliases: tuple = ()
    live = False           # runs the estimator itself on video frames
    reads = ""             # what file it reads
    skeleton = ""
    units = ""
    camera = ""

    def __init__(self, **options):
        self.options = options

    def read(self, path, video: VideoInfo) -> list:
        raise NotImplementedError(f"{self.name} runs on video frames; use run()")

    def run(self, video_path, video: VideoInfo, progress: bool = True):
        raise NotImplementedError(f"{self.name} reads estimator files; use read(path)")

    @classmethod
    def describe(cls) -> str:
        return f"{cls.name}: reads {cls.reads}; skeleton {cls.skeleton}; units {cls.units}; camera {cls.camera}"


def register(cls):
    for key in (cls.name, *cls.aliases):
        _REGISTRY[key] = cls
    return cls


def available() -> list:
    return sorted(_REGISTRY)


def get(name: str):
    if name not in _REGISTRY:
        raise KeyError(f"unknown estimator {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def group_by_frame(dets) -> list:
    frames = {}
    for d in dets:
        frames.setdefault(d.frame, []).append(d)
    return [FrameDetections(f, frames[f]) for f in sorted(frames)]


def require(d, key, path, shape=None):
    """Fetch ``d[key]`` as an array with an optional shape pattern (None = any), or raise AdapterError."""
    if not isinstance(d, dict) or key not in d:
        have = sorted(map(str, d.keys())) if isinstance(d, dict) else type(d).__name__
        raise AdapterError(f"{path}: missing key {key!r} (has: {have})")
    try:
        a = np.asarray(d[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise AdapterError(f"{path}: {key!r} is not numeric") from None
    if shape is not None and (a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape))):
        pat = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise AdapterError(f"{path}: {key!r} must have shape {pat}, got {a.shape}")
    return a


def fixed_focal_transl(transl: np.ndarray, focal: np.ndarray, f0: float) -> np.ndarray:
    """Re-express camera-frame translations (N, 3) seen with per-frame focals (N,) for one focal f0.

    The root keeps its pixel position: x and y stay, depth scales by f0 / focal.
    """
    out = np.array(transl, dtype=np.float64)
    out[:, 2] *= f0 / np.asarray(focal, dtype=np.float64)
    return out


def warn_dropped(path, total, kept):
    """Frames with NaN/inf values are treated as missing: say so, loudly, and refuse a file with nothing usable."""
    import warnings
    if kept == 0 and total > 0:
        raise AdapterError(f"{path}: all {total} frames hold NaN or infinite values")
    if kept < total:
        warnings.warn(f"{path}: {total - kept} of {total} frames hold NaN or infinite values and are treated as missing")
