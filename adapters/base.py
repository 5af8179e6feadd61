"""Adapter registry: each estimator's output -> our per-frame detections.

An adapter documents the file it reads (or the estimator it runs), the
skeleton, units and camera model, and returns ``list[FrameDetections]``
(frame indices of the video; frames where nobody was found are simply absent
or empty). File adapters return an :class:`AdapterOutput`: that list plus the
camera the estimator defines (``focal_px``, the one focal every translation of
the file is expressed for, principal point at the image centre) and the
warnings raised while reading. The caller's ``VideoInfo`` is never modified:
``output.video(video)`` gives a copy with the focal set.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
import zipfile

import numpy as np

from posebert_plug.errors import AdapterError, brief  # noqa: F401  (re-exported: adapters.base.brief)
from posebert_plug.types import FrameDetections, VideoInfo

_REGISTRY: dict = {}


class AdapterWarning(UserWarning):
    """Something in an estimator file is suspect but usable (dropped frames, another video's frames, ...)."""


# A frame index beyond this is not a video frame but a corrupt number (10 million frames = 4 days at 30 fps);
# refusing it keeps one bad entry from allocating gigabytes of per-frame arrays downstream.
MAX_FRAME = 10_000_000
MAX_JSON_BYTES = 1 << 30        # a JSON text expands about 10x in Python objects
MAX_ARRAY_BYTES = 1 << 31       # one array in an .npz, checked from its header before it is read


class AdapterOutput(list):
    """``list[FrameDetections]`` plus what the file defines beyond detections.

    focal_px: the focal (px) every ``Detection.transl`` of this output is expressed for, principal
        point at the image centre; None when the estimator defines no camera (2D keypoints,
        root-relative 3D). warnings: the messages issued while reading (also sent as
        :class:`AdapterWarning`).
    """

    def __init__(self, frames=(), focal_px=None, warnings=()):
        super().__init__(frames)
        self.focal_px = None if focal_px is None else float(focal_px)
        self.warnings = list(warnings)

    def video(self, video):
        """A copy of ``video`` (VideoInfo) with this output's focal, for tracks and refinement."""
        return dataclasses.replace(video, focal_px=self.focal_px) if self.focal_px else video


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


class Notes:
    """Collects an adapter's warnings: each is sent as an AdapterWarning and kept for the output."""

    def __init__(self):
        self.messages = []

    def __call__(self, message: str):
        self.messages.append(message)
        warnings.warn(message, AdapterWarning, stacklevel=3)


def frame_indices(values, path, what="frame index", max_frame=MAX_FRAME) -> np.ndarray:
    """Validate frame numbers before they size anything: (N,) finite, whole, in 0..max_frame -> int64.

    A NaN would otherwise become -9223372036854775808 and a 10**12 a terabyte allocation."""
    try:
        a = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise AdapterError(f"{path}: {what} values are not numbers") from None
    bad = ~np.isfinite(a)
    if bad.any():
        raise AdapterError(f"{path}: {what} {a[bad][0]} at entry {int(np.argmax(bad))} is not a frame number")
    bad = (a < 0) | (a != np.round(a)) | (a > max_frame)
    if bad.any():
        i = int(np.argmax(bad))
        raise AdapterError(f"{path}: {what} {a[i]:g} at entry {i} is not a frame number in 0..{max_frame}")
    return a.astype(np.int64)


def one_frame_index(value, path, what="frame index") -> int:
    a = frame_indices([value], path, what)
    if a.size != 1:   # [] or [1, 2] where one number belongs
        raise AdapterError(f"{path}: {what} must be one number, got {a.size}")
    return int(a[0])


def robust_focal(focal, path="") -> float:
    """One focal (px) for a file from per-detection focals (N,): the median of the finite, positive ones
    (one inf box must not poison every frame)."""
    f = np.asarray(focal, dtype=np.float64).reshape(-1)
    f = f[np.isfinite(f) & (f > 0)]
    if not len(f):
        raise AdapterError(f"{path}: no finite, positive box size to derive the camera focal from")
    return float(np.median(f))


def relative_scores(scores, floor=0.0):
    """Uncalibrated scores (heatmap or SimCC maxima, pose-NMS proposal scores) -> [0, 1].

    Divided by the file's 95th percentile when that is above ``floor`` (floor 1: only scores running
    above 1 are scaled; floor 0: always, e.g. HybrIK's 0.0002-0.125), so a file's typical keypoint
    gets about 1 and only keypoints much weaker than the file's own are masked by confidence thresholds."""
    s = np.asarray(scores, dtype=np.float64)
    fin = s[np.isfinite(s)]
    ref = float(np.percentile(fin, 95)) if fin.size else 1.0
    if ref > floor and ref > 0:
        s = s / ref
    return np.clip(np.nan_to_num(s, nan=0.0), 0.0, 1.0)


def load_json(path, max_bytes=MAX_JSON_BYTES):
    """Parse a JSON file, refusing huge files and deep nesting (Python's parser recurses per level)."""
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise AdapterError(f"{path}: {size / 2**30:.1f} GiB of JSON is more than the {max_bytes / 2**30:.0f} GiB "
                               "an estimator file is expected to hold")
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise AdapterError(f"{path}: not readable ({e.strerror})") from None
    try:
        return json.loads(raw.decode("utf-8", errors="replace"))
    except RecursionError:   # the C parser recurses once per level and stops cleanly at the limit
        raise AdapterError(f"{path}: JSON nested too deeply to be an estimator file") from None
    except ValueError as e:
        raise AdapterError(f"{path}: not readable JSON ({brief(e)})") from None


def load_npz(path, keys=None, max_bytes=MAX_ARRAY_BYTES) -> dict:
    """An .npz's arrays (only ``keys`` when given) as a dict, without pickles; each array's size is
    checked from its header before it is read, and any unreadable or truncated file is an AdapterError."""
    try:
        with zipfile.ZipFile(path) as zf:
            out = {}
            for name in zf.namelist():
                key = name[:-4] if name.endswith(".npy") else name
                if keys is not None and key not in keys:
                    continue
                with zf.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0(f))
                    nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                    if nbytes > max_bytes:
                        raise AdapterError(f"{path}: array {key!r} of shape {shape} would take "
                                           f"{nbytes / 2**30:.1f} GiB")
                    if dtype.hasobject:
                        raise AdapterError(f"{path}: array {key!r} holds Python objects (pickles are not loaded)")
                with zf.open(name) as f:
                    out[key] = np.lib.format.read_array(f, allow_pickle=False)
            return out
    except AdapterError:
        raise
    except FileNotFoundError:
        raise AdapterError(f"{path}: no such file") from None
    except Exception as e:   # BadZipFile, truncated member (EOFError, zlib.error), bad header (ValueError), ...
        raise AdapterError(f"{path}: not a readable .npz ({brief(e)})") from None


def finish(dets, path, video, focal_px=None, notes=None) -> AdapterOutput:
    """Common last step of every file adapter: frames checked against the video, duplicates removed,
    plausibility warnings, grouped by frame.

    - detections at frames >= ``video.num_frames`` (when known) are dropped with a warning: they are
      another video's, and keeping them would size tracks by a corrupt number; when the container declares
      no frame count, ``video.duration_frames`` (set by ``adapters.video.probe``: the duration times the
      frame rate, plus a second) bounds them the same way;
    - a second detection of one track in one frame is dropped (the first is kept) with a warning;
    - a warning when most people lie well outside the frame (wrong video or resolution) or the video
      has a single frame (an image renamed as a video).
    """
    notes = notes if notes is not None else Notes()
    n = int(getattr(video, "num_frames", 0) or 0)
    if n == 1:
        notes(f"the video has a single frame (an image?) but {path} has detections in "
              f"{len({d.frame for d in dets})} frames: is it the output for this video?")
    if n > 0:
        late = [d for d in dets if d.frame >= n]
        if late:
            notes(f"{path} has detections up to frame {max(d.frame for d in late)}, but the video declares {n} "
                  f"frames: is it the output for this video? {len(late)} detections past its end are dropped")
            dets = [d for d in dets if d.frame < n]
    bound = int(getattr(video, "duration_frames", 0) or 0) if n == 0 else 0
    if bound > 0:   # no declared frame count (MKV, WebM, MPEG-TS): the video's duration bounds the frames
        late = [d for d in dets if d.frame >= bound]
        if late:
            notes(f"{path} has detections up to frame {max(d.frame for d in late)}, but the video lasts under "
                  f"{bound} frames: is it the output for this video? {len(late)} detections past its end are dropped")
            dets = [d for d in dets if d.frame < bound]
    dets = _one_layout(dets, path, notes)
    seen, kept, dup = set(), [], []
    for d in dets:
        key = (d.track_id, d.side, d.frame)
        if d.track_id is not None and key in seen:
            dup.append(d.frame)
            continue
        seen.add(key)
        kept.append(d)
    if dup:
        notes(f"{path}: {len(dup)} detections repeat a track's frame (frames {sorted(set(dup))[:5]}); the first of "
              "each is kept")
    far = sum(_far_outside(d, video, focal_px) for d in kept)
    if kept and far > max(1, len(kept) // 10):
        notes(f"{path}: {far} of {len(kept)} detections lie well outside the {video.width}x{video.height} frame: "
              "another video, or keypoints at another resolution?")
    return AdapterOutput(group_by_frame(kept), focal_px=focal_px, warnings=notes.messages)


def _one_layout(dets, path, notes) -> list:
    """The detections of one file share one 2D and one 3D keypoint layout, since tracks stack them:
    a detection without keypoints of a layout the others have gets them as missing (NaN 3D; 2D at
    confidence 0), and detections in a minority layout are dropped with a warning."""
    from posebert_plug.skeletons import get_skeleton
    for kp, layout, dim in (("kp2d", "layout2d", 2), ("kp3d", "layout3d", 3)):
        have = [getattr(d, layout) for d in dets if getattr(d, layout) is not None]
        if not have:
            continue
        main = max(sorted(set(have)), key=have.count)
        odd = [d for d in dets if getattr(d, layout) not in (None, main)]
        if odd:
            notes(f"{path}: {len(odd)} detections have {dim}D keypoints in another layout than the {main!r} of the "
                  f"rest (frames {sorted({d.frame for d in odd})[:5]}) and are dropped")
            dets = [d for d in dets if getattr(d, layout) in (None, main)]
        K = get_skeleton(main).num_joints
        for d in dets:
            if getattr(d, layout) is None:
                if dim == 2:
                    d.kp2d, d.kp2d_conf = np.zeros((K, 2), np.float32), np.zeros(K, np.float32)
                else:
                    d.kp3d = np.full((K, 3), np.nan, np.float32)
                setattr(d, layout, main)
    return dets


def _far_outside(det, video, focal_px=None) -> bool:
    """True when a detection's box centre (or, without a box, its projected root) lies more than half a
    frame outside the image."""
    W, H = video.width, video.height
    if not W or not H:
        return False
    if det.box is not None:
        cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
    elif det.transl is not None and focal_px and det.transl[2] > 0:
        from posebert_plug.camera import project_px
        cx, cy = project_px(det.transl, focal_px, (W / 2, H / 2))
    else:
        return False
    return bool(cx < -W / 2 or cx > 1.5 * W or cy < -H / 2 or cy > 1.5 * H)


def require(d, key, path, shape=None):
    """Fetch ``d[key]`` as an array with an optional shape pattern (None = any), or raise AdapterError."""
    if not isinstance(d, dict) or key not in d:
        have = sorted(map(str, d.keys())) if isinstance(d, dict) else type(d).__name__
        raise AdapterError(f"{path}: missing key {key!r} (has: {have})")
    a = numeric(d[key], path, repr(key))
    if shape is not None and (a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape))):
        pat = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise AdapterError(f"{path}: {key!r} must have shape {pat}, got {a.shape}")
    return a


def numeric(value, path, what) -> np.ndarray:
    """``value`` as a float64 array, or AdapterError naming the file when it is not numbers (strings,
    ragged lists, objects)."""
    try:
        a = np.asarray(value)
        if a.dtype.kind == "c":
            raise AdapterError(f"{path}: {what} holds complex numbers")
        return a.astype(np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        if isinstance(e, AdapterError):
            raise
        raise AdapterError(f"{path}: {what} is not numeric") from None


def fixed_focal_transl(transl: np.ndarray, focal: np.ndarray, f0: float) -> np.ndarray:
    """Re-express camera-frame translations (N, 3) seen with per-frame focals (N,) for one focal f0.

    The root keeps its pixel position: x and y stay, depth scales by f0 / focal.
    """
    out = np.array(transl, dtype=np.float64)
    out[:, 2] *= f0 / np.asarray(focal, dtype=np.float64)
    return out


def warn_dropped(path, total, kept, notes=None):
    """Frames with NaN/inf values are treated as missing: say so, loudly, and refuse a file with nothing usable."""
    if kept == 0 and total > 0:
        raise AdapterError(f"{path}: all {total} frames hold NaN or infinite values")
    if kept < total:
        (notes or Notes())(f"{path}: {total - kept} of {total} frames hold NaN or infinite values and are treated "
                           "as missing")
