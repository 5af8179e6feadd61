"""Core data types shared by adapters, tracker, model and renderer.

Units and frames
- pixels: image coordinates, origin top-left, x right, y down.
- camera frame: OpenCV (x right, y down, z forward), metres.
- SMPL rotations: (24, 3, 3) local rotation matrices in SMPL-24 order, index 0
  the global orientation in the camera frame; ``transl`` the camera-frame
  pelvis position, metres.
- frame indices: 0-based indices of video frames; missing frames stay missing.
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field, fields

import numpy as np

from .skeletons import get_skeleton

__all__ = ["Detection", "FrameDetections", "VideoInfo", "Track", "RefinedTrack", "RefinedHandTrack", "save_tracks",
           "load_tracks"]


def _arr(x, shape, name, dtype=np.float32):
    """Validate an optional array against a shape pattern (None = any size in that axis)."""
    if x is None:
        return None
    a = np.asarray(x, dtype=dtype)
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        pattern = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {pattern}, got {a.shape}")
    return a


@dataclass
class VideoInfo:
    """width, height in pixels; fps; num_frames (may be 0 when unknown); focal_px: the
    camera focal length in pixels when the estimator defines one, else None."""

    width: int
    height: int
    fps: float = 30.0
    num_frames: int = 0
    focal_px: float | None = None

    def to_dict(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Detection:
    """One person in one frame, as an estimator saw it.

    frame: 0-based frame index. box: (4,) xyxy pixels (corners in either order; a non-finite box counts
        as missing and, like a missing one, is derived from the visible 2D keypoints when given).
    score: detection confidence in [0, 1].
    kp2d: (K, 2) pixels in layout ``layout2d``; kp2d_conf: (K,) in [0, 1] (0 = missing).
    kp3d: (K3, 3) metres in layout ``layout3d``, camera frame (or root-relative if
        ``kp3d_root_relative``).
    rotmats: (24, 3, 3) SMPL local rotations, root in the camera frame; betas: (10,);
    transl: (3,) camera-frame pelvis position, metres.
    track_id: identity given by the estimator, if any. source: estimator name.
    side: "left" / "right" for a hand (as seen in the unmirrored image), None for a body.
    Hands: kp2d/kp3d in layout ``hand21``; no rotmats (hand poses come out of PoseBERT).
    """

    frame: int
    box: np.ndarray | None = None
    score: float = 1.0
    kp2d: np.ndarray | None = None
    kp2d_conf: np.ndarray | None = None
    layout2d: str | None = None
    kp3d: np.ndarray | None = None
    layout3d: str | None = None
    kp3d_root_relative: bool = False
    rotmats: np.ndarray | None = None
    betas: np.ndarray | None = None
    transl: np.ndarray | None = None
    track_id: int | None = None
    source: str = ""
    side: str | None = None

    def __post_init__(self):
        self.frame = int(self.frame)
        if self.side not in (None, "left", "right"):
            raise ValueError(f"side must be 'left', 'right' or None, got {self.side!r}")
        if self.frame < 0:
            raise ValueError(f"frame index must be >= 0, got {self.frame}")
        self.box = _arr(self.box, (4,), "box")
        if self.box is not None and not np.isfinite(self.box).all():
            self.box = None   # a NaN box is a missing box: derived from the keypoints below when there are some
        elif self.box is not None:   # corners given in either order
            self.box = np.concatenate([np.minimum(self.box[:2], self.box[2:]),
                                       np.maximum(self.box[:2], self.box[2:])]).astype(self.box.dtype)
        if self.kp2d is not None:
            if self.layout2d is None:
                raise ValueError("kp2d given without layout2d (e.g. 'coco17')")
            K = get_skeleton(self.layout2d).num_joints
            self.kp2d = _arr(self.kp2d, (K, 2), f"kp2d ({self.layout2d})")
            self.kp2d_conf = np.ones(K, np.float32) if self.kp2d_conf is None else _arr(self.kp2d_conf, (K,), "kp2d_conf")
            bad = ~np.isfinite(self.kp2d).all(-1)
            if bad.any():  # NaN keypoints are missing keypoints
                self.kp2d = np.where(bad[:, None], 0.0, self.kp2d).astype(np.float32)
                self.kp2d_conf = np.where(bad, 0.0, self.kp2d_conf).astype(np.float32)
        if self.kp3d is not None:
            if self.layout3d is None:
                raise ValueError("kp3d given without layout3d (e.g. 'h36m17')")
            K = get_skeleton(self.layout3d).num_joints
            self.kp3d = _arr(self.kp3d, (K, 3), f"kp3d ({self.layout3d})")
        self.rotmats = _arr(self.rotmats, (24, 3, 3), "rotmats")
        self.betas = _arr(self.betas, (None,), "betas")
        self.transl = _arr(self.transl, (3,), "transl")
        if self.box is None and self.kp2d is not None:
            vis = self.kp2d_conf > 0
            if vis.any():
                p = self.kp2d[vis]
                self.box = np.array([*p.min(0), *p.max(0)], np.float32)

    @property
    def xyxy(self):
        return self.box

    @property
    def xywh(self):
        b = self.box
        return None if b is None else np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]])

    def to_dict(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


@dataclass
class FrameDetections:
    """All detections of one frame (possibly none)."""

    frame: int
    detections: list = field(default_factory=list)

    def __len__(self):
        return len(self.detections)

    def __iter__(self):
        return iter(self.detections)

    @property
    def xyxy(self) -> np.ndarray:
        """(N, 4) boxes, pixels."""
        return np.stack([d.box for d in self.detections]) if self.detections else np.zeros((0, 4), np.float32)


def _jsonable(v, decimals: int | None = None, arrays: str = "lists"):
    """``v`` as JSON-ready Python values. Float arrays: with ``arrays="base64"``, the object
    ``{"dtype", "shape", "base64"}`` of their exact little-endian bytes (:data:`JSON_ARRAYS`); as
    lists, rounded to ``decimals`` decimals when given (``-0.0`` written as ``0.0``), so that each
    number is written with only its significant digits. Other arrays: lists."""
    if isinstance(v, np.ndarray):
        if v.dtype.kind == "f" and arrays == "base64":
            dt = np.dtype(v.dtype).newbyteorder("<")
            return {"dtype": dt.name, "shape": list(v.shape),
                    "base64": base64.b64encode(np.ascontiguousarray(v, dt).tobytes()).decode("ascii")}
        if decimals is not None and v.dtype.kind == "f":
            return (np.round(v.astype(np.float64), decimals) + 0.0).tolist()
        return v.tolist()
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def _from_json(v):
    """The inverse of :func:`_jsonable` for one field: a ``{"dtype", "shape", "base64"}`` object
    becomes its array (bit-exact); anything else (lists, numbers, strings) is returned as is."""
    if isinstance(v, dict) and "base64" in v:
        dt = np.dtype(str(v["dtype"])).newbyteorder("<")
        if dt.kind != "f":
            raise ValueError(f"base64 array of dtype {v['dtype']!r}: only float arrays are written this way")
        shape = tuple(int(s) for s in v["shape"])
        a = np.frombuffer(base64.b64decode(v["base64"], validate=True), dt)
        if a.size != int(np.prod(shape)):
            raise ValueError(f"base64 array: {a.size} values for shape {shape}")
        return a.reshape(shape).astype(dt.newbyteorder("="))
    return v


# results.json, how arrays are written (``save_tracks(..., json_arrays=...)``, ``posebert-refine
# --json-arrays``):
# - "base64" (default): each float array is {"dtype": "float32", "shape": [...], "base64": "..."}, its
#   exact values as little-endian bytes (those of results.npz): 1.33x their float32 payload;
# - "lists": nested JSON lists, floats to JSON_DECIMALS decimals (rotation-matrix entries to 1e-5, metres
#   to 0.01 mm), readable by eye: 2.3x their float32 payload (Python's 17-digit repr costs 5.4x; decimal
#   text cannot get near 1x: even 2 decimals, 1 cm, cost 1.5x).
# Integer and boolean arrays (frames, observed) are JSON lists either way.
JSON_ARRAYS = ("base64", "lists")
JSON_DECIMALS = 5


def json_arrays_meta(json_arrays: str = "base64") -> dict:
    """What results.json's ``meta["json_arrays"]`` says about how its arrays are written: enough to
    decode them with ``json``, ``base64`` and ``numpy`` only."""
    if json_arrays == "base64":
        return {"encoding": "base64",
                "float_arrays": 'each float array field (rotmats, transl, joints, betas, keypoints) is an object '
                                '{"dtype": "float32", "shape": [...], "base64": "..."}: the standard base64 (RFC 4648, '
                                'padded) of the values as little-endian IEEE-754 numbers of that dtype, in row-major '
                                '(C) order; the exact values of results.npz (NaN kept)',
                "decode": "numpy.frombuffer(base64.b64decode(a['base64']), numpy.dtype(a['dtype']).newbyteorder('<'))"
                          ".reshape(a['shape'])",
                "other_arrays": "integer and boolean arrays (frames, observed) are JSON lists"}
    if json_arrays == "lists":
        return {"encoding": "lists",
                "float_arrays": f"nested JSON lists of numbers rounded to {JSON_DECIMALS} decimals (NaN where not "
                                "finite); the exact float32 values are in results.npz",
                "decode": "numpy.array(a)",
                "other_arrays": "integer and boolean arrays (frames, observed) are JSON lists"}
    raise ValueError(f"json_arrays must be one of {', '.join(JSON_ARRAYS)}; got {json_arrays!r}")


@dataclass
class Track:
    """One identity over time: frames from first to last appearance, gaps marked.

    frames (N,) int, consecutive; observed (N,) bool. Per-frame arrays hold NaN
    where not observed: kp2d (N, K, 2) pixels, kp2d_conf (N, K), kp3d (N, K3, 3)
    metres, rotmats (N, 24, 3, 3), transl (N, 3) metres, boxes (N, 4) pixels,
    scores (N,). betas (10,) or None. video: the :class:`VideoInfo`.
    side: "left" / "right" for a hand track (majority of its detections), else None.
    """

    track_id: int
    frames: np.ndarray
    observed: np.ndarray
    video: VideoInfo
    boxes: np.ndarray
    scores: np.ndarray
    kp2d: np.ndarray | None = None
    kp2d_conf: np.ndarray | None = None
    layout2d: str | None = None
    kp3d: np.ndarray | None = None
    layout3d: str | None = None
    kp3d_root_relative: bool = False
    rotmats: np.ndarray | None = None
    transl: np.ndarray | None = None
    betas: np.ndarray | None = None
    side: str | None = None

    def __len__(self):
        return int(len(self.frames))

    @property
    def num_observed(self) -> int:
        return int(self.observed.sum())

    def padded(self, first: int, last: int) -> "Track":
        """The same track over frames first..last (which must contain its span); added frames are unobserved."""
        if first > self.frames[0] or last < self.frames[-1]:
            raise ValueError(f"padding span {first}..{last} does not contain frames {self.frames[0]}..{self.frames[-1]}")
        if first == self.frames[0] and last == self.frames[-1]:
            return self
        N, a0 = last - first + 1, self.frames[0] - first

        def pad(a, fill=np.nan):
            if a is None:
                return None
            out = np.full((N,) + a.shape[1:], fill, a.dtype)
            out[a0:a0 + len(self)] = a
            return out

        return Track(self.track_id, np.arange(first, last + 1), pad(self.observed, False), self.video, pad(self.boxes),
                     pad(self.scores), kp2d=pad(self.kp2d), kp2d_conf=pad(self.kp2d_conf, 0.0), layout2d=self.layout2d,
                     kp3d=pad(self.kp3d), layout3d=self.layout3d, kp3d_root_relative=self.kp3d_root_relative,
                     rotmats=pad(self.rotmats), transl=pad(self.transl), betas=self.betas, side=self.side)

    @classmethod
    def from_detections(cls, track_id: int, detections: list, video: VideoInfo) -> "Track":
        """Build a track from detections of one identity (any frame order, one per frame)."""
        if not detections:
            raise ValueError(f"track {track_id}: no detections")
        dets = sorted(detections, key=lambda d: d.frame)
        fr = [d.frame for d in dets]
        if len(set(fr)) != len(fr):
            twice = sorted(set(f for f in fr if fr.count(f) > 1))[:5]
            raise ValueError(f"track {track_id}: two detections in one frame ({twice})")
        first, last = fr[0], fr[-1]
        N = last - first + 1
        idx = np.array(fr) - first
        obs = np.zeros(N, bool)
        obs[idx] = True

        def stack(attr, shape):
            vals = [getattr(d, attr) for d in dets]
            if all(v is None for v in vals):
                return None
            out = np.full((N,) + shape, np.nan, np.float32)
            for i, v in zip(idx, vals):
                if v is not None:
                    out[i] = v
            return out

        d0 = dets[0]
        K2 = get_skeleton(d0.layout2d).num_joints if d0.layout2d else 0
        K3 = get_skeleton(d0.layout3d).num_joints if d0.layout3d else 0
        for d in dets:
            if d.layout2d != d0.layout2d or d.layout3d != d0.layout3d:
                raise ValueError(f"track {track_id}: mixed keypoint layouts ({d0.layout2d}/{d0.layout3d} vs "
                                 f"{d.layout2d}/{d.layout3d} at frame {d.frame})")
        conf = stack("kp2d_conf", (K2,)) if K2 else None
        if conf is not None:
            conf = np.nan_to_num(conf, nan=0.0)
        betas = [d.betas for d in dets if d.betas is not None]
        sides = [d.side for d in dets if d.side is not None]
        side = max(set(sides), key=sides.count) if sides else None
        scores = np.full(N, np.nan, np.float32)
        scores[idx] = [d.score for d in dets]
        return cls(track_id, np.arange(first, last + 1), obs, video,
                   boxes=stack("box", (4,)) if any(d.box is not None for d in dets) else np.full((N, 4), np.nan, np.float32),
                   scores=scores, kp2d=stack("kp2d", (K2, 2)) if K2 else None, kp2d_conf=conf, layout2d=d0.layout2d,
                   kp3d=stack("kp3d", (K3, 3)) if K3 else None, layout3d=d0.layout3d,
                   kp3d_root_relative=d0.kp3d_root_relative, rotmats=stack("rotmats", (24, 3, 3)),
                   transl=stack("transl", (3,)),
                   betas=np.median(np.stack(betas), 0).astype(np.float32) if betas else None, side=side)


@dataclass
class RefinedTrack:
    """PoseBERT's output for one track.

    frames (N,) int; rotmats (N, 24, 3, 3) SMPL local rotations (root in the camera
    frame); transl (N, 3) camera-frame pelvis, metres; joints (N, 24, 3) camera-frame
    SMPL-24 joints, metres; observed (N,) bool (False = filled by the model);
    betas (10,) (from the input when given, else zeros); preset: the model used.
    Hands (``side`` set): rotmats (N, 16, 3, 3) MANO-order local rotations (wrist in the
    camera frame; a left hand's in the mirrored frame of the left model), transl (N, 3)
    camera-frame wrist, joints (N, 21, 3) OpenPose hand keypoints, metres.
    3D-keypoint presets also give ``keypoints`` (N, K, 3): the input's own keypoints refined
    (layout ``keypoint_layout``, the input's frame and units: camera frame or root-relative,
    metres), which follow the input where it is good (``trust.refine_keypoints``).
    """

    track_id: int
    frames: np.ndarray
    rotmats: np.ndarray
    transl: np.ndarray
    joints: np.ndarray
    observed: np.ndarray
    betas: np.ndarray
    preset: str
    video: VideoInfo | None = None
    side: str | None = None
    keypoints: np.ndarray | None = None
    keypoint_layout: str | None = None

    def __len__(self):
        return int(len(self.frames))

    @property
    def filled(self) -> np.ndarray:
        return ~self.observed

    def to_dict(self) -> dict:
        d = {"track_id": int(self.track_id), "frames": self.frames.astype(np.int64), "rotmats": self.rotmats,
             "transl": self.transl, "joints": self.joints, "observed": self.observed, "betas": self.betas,
             "preset": self.preset, "side": self.side or ""}
        if self.keypoints is not None:
            d.update(keypoints=self.keypoints, keypoint_layout=self.keypoint_layout or "")
        return d

    def to_json(self) -> str:
        return json.dumps({k: _jsonable(v) for k, v in self.to_dict().items()})


@dataclass
class RefinedHandTrack(RefinedTrack):
    """PoseBERT's output for one hand (a :class:`RefinedTrack` with ``side`` "left" or "right"), as
    smplx's ``MANOOutput`` is to ``SMPLOutput``: rotmats (N, 16, 3, 3) MANO-order local rotations (wrist
    in the camera frame; a left hand's in the mirrored frame of the left model), transl (N, 3)
    camera-frame wrist, joints (N, 21, 3) OpenPose hand keypoints, metres."""


def refined_track_type(side=None, hand: bool | None = None) -> type:
    """The result type of a track: :class:`RefinedHandTrack` for a hand (``hand``, or a ``side`` of
    "left"/"right" when ``hand`` is not given), else :class:`RefinedTrack`."""
    return RefinedHandTrack if (hand if hand is not None else side in ("left", "right")) else RefinedTrack


def save_tracks(path, tracks: list, video: VideoInfo | None = None, meta: dict | None = None,
                json_arrays: str = "base64") -> None:
    """Write RefinedTracks to ``.npz`` (keys ``track<i>_<field>``, exact float32) or ``.json`` (one
    track per line), atomically. ``json_arrays`` (JSON only, :data:`JSON_ARRAYS`): ``"base64"``
    (default) writes each float array as ``{"dtype", "shape", "base64"}``, its exact values
    (1.33x their float32 size); ``"lists"`` as nested lists rounded to :data:`JSON_DECIMALS`
    decimals (1e-5 for rotation entries, 0.01 mm for metres; 2.3x). ``meta``: a JSON-able dict
    describing the file (written first in the JSON, as the JSON string ``meta`` in the npz); the
    JSON's meta also gets ``json_arrays`` (:func:`json_arrays_meta`: how to decode its arrays)."""
    path = os.fspath(path)
    tmp = path + ".part"
    if path.endswith(".json"):
        meta = {**(meta or {}), "json_arrays": json_arrays_meta(json_arrays)}
        decimals = JSON_DECIMALS if json_arrays == "lists" else None
        # One track at a time: the whole result as Python lists would cost GBs on long videos.
        with open(tmp, "w") as f:
            f.write('{"meta": ' + json.dumps(meta) + ', "video": ' + json.dumps(video.to_dict() if video else None) +
                    ', "tracks": [')
            for i, t in enumerate(tracks):
                f.write((",\n" if i else "") + json.dumps({k: _jsonable(v, decimals, json_arrays)
                                                           for k, v in t.to_dict().items()}, separators=(",", ":")))
            f.write("]}")
    else:
        arrays = {"num_tracks": np.array(len(tracks))}
        if video is not None:
            arrays["video"] = np.array(json.dumps(video.to_dict()))
        if meta is not None:
            arrays["meta"] = np.array(json.dumps(meta))
        for i, t in enumerate(tracks):
            for k, v in t.to_dict().items():
                arrays[f"track{i}_{k}"] = np.asarray(v)
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def load_tracks(path) -> list:
    """Read RefinedTracks written by :func:`save_tracks` (``.npz``, or ``.json`` with its arrays as
    base64 objects or lists, including files from before base64); no pickles."""
    path = os.fspath(path)
    if path.endswith(".json"):
        with open(path) as f:
            d = json.load(f)
        items = [{k: _from_json(v) for k, v in it.items()} for it in d["tracks"]]
    else:
        with np.load(path, allow_pickle=False) as z:
            n = int(z["num_tracks"])
            items = [{k: z[f"track{i}_{k}"] for k in ("track_id", "frames", "rotmats", "transl", "joints", "observed",
                                                       "betas", "preset", "side", "keypoints", "keypoint_layout")
                      if f"track{i}_{k}" in z}
                     for i in range(n)]
    out = []
    for it in items:
        side = str(np.asarray(it.get("side", ""))) or None
        out.append(refined_track_type(side)(int(np.asarray(it["track_id"])), np.asarray(it["frames"], np.int64),
                                np.asarray(it["rotmats"], np.float32), np.asarray(it["transl"], np.float32),
                                np.asarray(it["joints"], np.float32), np.asarray(it["observed"], bool),
                                np.asarray(it["betas"], np.float32), str(np.asarray(it["preset"])),
                                side=side,
                                keypoints=np.asarray(it["keypoints"], np.float32) if "keypoints" in it else None,
                                keypoint_layout=str(np.asarray(it["keypoint_layout"])) if "keypoint_layout" in it
                                else None))
    return out
