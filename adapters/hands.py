"""Hand estimators: MediaPipe Hands (live, offline models) and 21-keypoint hand files.

Output per hand and frame: ``Detection`` with ``kp2d`` (21, 2) pixels and ``kp3d``
(21, 3) metres in the OpenPose hand-21 order (wrist; thumb cmc/mcp/ip/tip; index,
middle, ring, pinky mcp/pip/dip/tip, the order MediaPipe and mmpose use), ``side``
("left"/"right" as seen in the unmirrored image) and ``layout2d = layout3d = "hand21"``.
"""
from __future__ import annotations

import os

import numpy as np

from posebert_plug.types import Detection, FrameDetections
from .base import (Adapter, AdapterError, Notes, finish, frame_indices, load_json, load_npz, numeric, one_frame_index,
                   register)


@register
class MediaPipeHandsAdapter(Adapter):
    name = "mediapipe-hands"
    live = True
    reads = "video frames (runs MediaPipe Hands, model_complexity=1, up to max_hands=2 hands)"
    skeleton = "hand-21 (OpenPose order), 2D pixels + world 3D"
    units = "pixels; world landmarks metres, centred on the hand"
    camera = "none for 2D; world landmarks hand-relative, camera-aligned axes"

    def run(self, video_path, video, progress=True):
        """``mirrored``: set True for selfie-style (already mirrored) video; MediaPipe's handedness
        assumes a mirrored image, so for ordinary video its labels are swapped back."""
        try:
            import mediapipe as mp
        except ImportError:
            raise AdapterError("the mediapipe-hands estimator needs: pip install 'posebert-plug[mediapipe]'") from None
        from .video import iter_frames
        mirrored = bool(self.options.get("mirrored", False))
        with mp.solutions.hands.Hands(static_image_mode=False, max_num_hands=int(self.options.get("max_hands", 2)),
                                      model_complexity=1,
                                      min_detection_confidence=self.options.get("conf", 0.5)) as hands:
            for idx, im in iter_frames(video_path):
                yield FrameDetections(idx, self.detect(hands, im, idx, video.width, video.height, mirrored))

    def detect(self, hands, rgb, frame, width, height, mirrored=False) -> list:
        """One RGB frame (H, W, 3) uint8 -> list of hand Detections."""
        r = hands.process(rgb)
        out = []
        if not r.multi_hand_landmarks:
            return out
        worlds = r.multi_hand_world_landmarks or [None] * len(r.multi_hand_landmarks)
        for lm, wl, hd in zip(r.multi_hand_landmarks, worlds, r.multi_handedness):
            uv = np.array([[p.x * width, p.y * height] for p in lm.landmark])
            k3 = np.array([[p.x, p.y, p.z] for p in wl.landmark]) if wl is not None else None
            label = hd.classification[0].label.lower()
            if not mirrored:
                label = {"left": "right", "right": "left"}[label]
            out.append(Detection(frame, score=float(hd.classification[0].score), kp2d=uv, layout2d="hand21",
                                 kp3d=k3, layout3d=None if k3 is None else "hand21", kp3d_root_relative=True,
                                 side=label, source=self.name))
        return out


@register
class HandFileAdapter(Adapter):
    name = "hand21"
    aliases = ("mmpose-hand",)
    reads = ("21-keypoint hand files: .npz with frame (N,), kp2d (N, 21, 2) px, optional conf (N, 21), kp3d (N, 21, 3) m, "
             "side (N,) 'left'/'right', track_id (N,); or mmpose-style JSON [{frame_id, instances: [{keypoints 21 x "
             "[x, y] px, keypoint_scores 21, keypoints_3d 21 x [x, y, z] m (optional), handedness (optional)}]}]")
    skeleton = "hand-21 (OpenPose order, as mmpose's hand models)"
    units = "pixels; 3D metres (camera frame, or hand-relative)"
    camera = "none for 2D; 3D taken as camera-aligned, root-relative"

    def read(self, path, video):
        if not os.path.isfile(path):
            raise AdapterError(f"{path}: no such file")
        notes = Notes()
        if str(path).endswith(".npz"):
            return finish(self._read_npz(path, notes), path, video, notes=notes)
        data = load_json(path)
        if not isinstance(data, list):
            raise AdapterError(f"{path}: expected a list of frames [{{frame_id, instances}}]")
        dets = []
        for n, item in enumerate(data):
            if not isinstance(item, dict) or "frame_id" not in item or "instances" not in item:
                raise AdapterError(f"{path}: entry {n} lacks 'frame_id'/'instances'")
            frame = one_frame_index(item["frame_id"], path, f"entry {n}: frame_id")
            if not isinstance(item["instances"], list):
                raise AdapterError(f"{path}: frame {frame}: 'instances' must be a list")
            for inst in item["instances"]:
                if not isinstance(inst, dict):
                    raise AdapterError(f"{path}: frame {frame}: an instance must be an object")
                where = f"frame {frame}: "
                kp = numeric(inst.get("keypoints", []), path, where + "keypoints")
                sc = numeric(inst.get("keypoint_scores", np.ones(21)), path, where + "keypoint_scores").reshape(-1)
                k3 = inst.get("keypoints_3d")
                k3 = None if k3 is None else numeric(k3, path, where + "keypoints_3d")
                if kp.shape != (21, 2):
                    raise AdapterError(f"{path}: frame {frame}: keypoints must be (21, 2) pixels, got {kp.shape}")
                if sc.shape != (21,):
                    raise AdapterError(f"{path}: frame {frame}: keypoint_scores must be (21,)")
                if k3 is not None and k3.shape != (21, 3):
                    raise AdapterError(f"{path}: frame {frame}: keypoints_3d must be (21, 3) metres, got {k3.shape}")
                side = _side(inst.get("handedness"), path, frame)
                score = float(np.clip(np.nanmean(sc), 0, 1)) if np.isfinite(sc).any() else 0.0
                dets.append(Detection(frame, score=score, kp2d=kp, kp2d_conf=np.clip(np.nan_to_num(sc), 0, 1),
                                      layout2d="hand21", kp3d=k3, layout3d=None if k3 is None else "hand21",
                                      kp3d_root_relative=True, side=side, source=self.name))
        if dets and all(d.kp3d is None for d in dets):
            k3 = flat_hand_3d(np.stack([np.where(d.kp2d_conf[:, None] > 0, d.kp2d, np.nan) for d in dets]))
            for d, k in zip(dets, k3):
                d.kp3d, d.layout3d = k.astype(np.float32), "hand21"
            notes(f"{path}: 2D keypoints only: the 3D hand is approximated as the 2D hand, flat and facing the camera "
                  f"({HAND_SIZE_M * 100:.0f} cm wrist to middle knuckle), so finger depth is not recovered")
        return finish(dets, path, video, notes=notes)

    def _read_npz(self, path, notes):
        z = load_npz(path)
        if "kp2d" not in z and "kp3d" not in z:
            raise AdapterError(f"{path}: needs kp2d (N, 21, 2) and/or kp3d (N, 21, 3); has {sorted(z)}")
        k2 = numeric(z["kp2d"], path, "kp2d") if "kp2d" in z else None
        k3 = numeric(z["kp3d"], path, "kp3d") if "kp3d" in z else None
        first = k2 if k2 is not None else k3
        if first.ndim == 0:
            raise AdapterError(f"{path}: kp2d/kp3d must be arrays (N, 21, 2) / (N, 21, 3), got one number")
        n = len(first)
        for a, shape, name in ((k2, (n, 21, 2), "kp2d"), (k3, (n, 21, 3), "kp3d")):
            if a is not None and a.shape != shape:
                raise AdapterError(f"{path}: {name} must have shape {shape}, got {a.shape}")
        frames = frame_indices(z["frame"], path, "frame") if "frame" in z else np.arange(n)
        conf = numeric(z["conf"], path, "conf") if "conf" in z else np.ones((n, 21))
        sides = _side_strings(z["side"], path) if "side" in z else [None] * n
        tids = frame_indices(z["track_id"], path, "track_id") if "track_id" in z else None
        if len(frames) != n or conf.shape != (n, 21) or len(sides) != n or (tids is not None and len(tids) != n):
            raise AdapterError(f"{path}: frame (N,), conf (N, 21), side (N,) and track_id (N,) must match kp2d/kp3d's "
                               f"N = {n}")
        if k3 is None:
            k3 = flat_hand_3d(k2)
            notes(f"{path}: 2D keypoints only: the 3D hand is approximated as the 2D hand, flat and facing the camera "
                  f"({HAND_SIZE_M * 100:.0f} cm wrist to middle knuckle), so finger depth is not recovered")
        dets = []
        for i in range(n):
            # A NaN frame stays in the track as a NaN (masked) frame: dropping its 3D alone would mix layouts.
            dets.append(Detection(int(frames[i]), kp2d=None if k2 is None else k2[i],
                                  kp2d_conf=None if k2 is None else np.clip(np.nan_to_num(conf[i]), 0, 1),
                                  layout2d=None if k2 is None else "hand21",
                                  kp3d=None if k3 is None else k3[i], layout3d=None if k3 is None else "hand21",
                                  kp3d_root_relative=True, side=_side(sides[i], path, int(frames[i])),
                                  track_id=None if tids is None else int(tids[i]), source=self.name))
        return dets


HAND_SIZE_M = 0.09   # wrist to middle-finger knuckle of an adult hand


def flat_hand_3d(kp2d):
    """2D hands (N, 21, 2) px -> root-relative 3D (N, 21, 3) m: the 2D shape at zero depth, scaled so the
    median wrist-to-middle-knuckle length is HAND_SIZE_M. Only for files without 3D (the kp3d-hand21 preset
    needs 3D); NaN where the 2D is NaN."""
    k = np.asarray(kp2d, float)
    rel = k - k[:, :1]
    size = np.linalg.norm(rel[:, 9], axis=-1)
    size = size[np.isfinite(size) & (size > 0)]
    s = HAND_SIZE_M / float(np.median(size)) if size.size else 0.0
    return np.concatenate([rel * s, np.zeros(rel.shape[:2] + (1,))], -1)


def _side_strings(a, path) -> list:
    """An .npz's side array -> str per entry; a text array holding code points beyond Unicode's
    (a corrupt file) is refused before numpy builds strings from them."""
    a = np.ascontiguousarray(a).reshape(-1)
    if a.dtype.kind == "U" and a.size and a.view(np.uint32).max() > 0x10FFFF:
        raise AdapterError(f"{path}: side must hold 'left'/'right' strings, not corrupt text")
    return [str(s) for s in a]


def _side(v, path, frame):
    if v is None or v == "":
        return None
    s = str(v).lower()
    if s not in ("left", "right"):
        raise AdapterError(f"{path}: frame {frame}: handedness must be 'left' or 'right', got {v!r}")
    return s
