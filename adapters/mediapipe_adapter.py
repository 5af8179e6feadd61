"""MediaPipe Pose (33 landmarks, one person) and Hands, run offline (mediapipe 0.10.14 ships its models)."""
from __future__ import annotations

import numpy as np

from posebert_plug.types import Detection, FrameDetections
from .base import Adapter, AdapterError, register

__all__ = ["MediaPipePoseAdapter", "crop_box", "landmarks_on_crop", "landmarks_fit_box", "detection_from_landmarks"]

CROP_SIZE = 384        # MediaPipe's input for a crop around a detected person (its own detector misses people < ~150 px)
CROP_MARGIN = 1.4      # the square crop's side / the person box's longer side
MIN_BOX_COVER = 0.4    # default of the ``min_box_cover`` option (see landmarks_fit_box)


def crop_box(box) -> tuple[int, int, int, int]:
    """Square crop (x0, y0, side, side), pixels, around an xyxy person box: CROP_MARGIN x its longer side."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * CROP_MARGIN
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return int(cx - side / 2), int(cy - side / 2), int(side), int(side)


def landmarks_on_crop(pose, im, box):
    """MediaPipe Pose on the square crop around one person box.

    pose: a ``mp.solutions.pose.Pose``; im: (H, W, 3) RGB uint8; box: (4,) xyxy pixels.
    -> (lm (33, 3): x, y pixels of the full frame and visibility in [0, 1]; world (33, 3) metres or None),
    or None when MediaPipe finds no body in the crop."""
    x0, y0, w, h = crop_box(box)
    r = pose.process(_crop(im, (x0, y0, w, h), CROP_SIZE))
    if r.pose_landmarks is None:
        return None
    lm = np.array([[x0 + p.x * w, y0 + p.y * h, p.visibility] for p in r.pose_landmarks.landmark], np.float64)
    lm[:, 2] = np.clip(lm[:, 2], 0, 1)
    wl = r.pose_world_landmarks
    # MediaPipe world axes: x right, y down, z away from the camera: camera-aligned, hip-centred.
    world = np.array([[p.x, p.y, p.z] for p in wl.landmark], np.float64) if wl is not None else None
    return lm, world


def landmarks_fit_box(lm, box, min_cover: float = MIN_BOX_COVER, min_vis: float = 0.5) -> bool:
    """Whether MediaPipe's landmarks describe the person the detector boxed.

    lm: (33, 3) x, y pixels, visibility; box: (4,) xyxy pixels of the detector's person.
    On the crop of a person who is hidden or leaving, MediaPipe still lays a body somewhere: flat across the
    crop, squeezed into a corner, or mostly beside the box (real-video ghosts: landmark boxes of 64 x 25 or
    13 x 41 px for people boxed 50 x 130 px). Kept when the confident landmarks (visibility >= min_vis; all
    when fewer than 4 are) span at least ``min_cover`` of the box along its longer side and half of their
    extent lies within the box (grown by a quarter on each side). ``min_cover=0`` keeps everything."""
    if min_cover <= 0:
        return True
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    p = lm[lm[:, 2] >= min_vis, :2]
    if len(p) < 4:
        p = lm[:, :2]
    (px1, py1), (px2, py2) = p.min(0), p.max(0)
    span = (py2 - py1) / bh if bh >= bw else (px2 - px1) / bw
    if span < min_cover:
        return False
    gx1, gy1, gx2, gy2 = x1 - bw / 4, y1 - bh / 4, x2 + bw / 4, y2 + bh / 4
    inter = max(0.0, min(px2, gx2) - max(px1, gx1)) * max(0.0, min(py2, gy2) - max(py1, gy1))
    area = max(px2 - px1, 1.0) * max(py2 - py1, 1.0)
    return inter >= 0.5 * area


def detection_from_landmarks(frame: int, lm, world, box=None, min_cover: float = MIN_BOX_COVER, source="mediapipe"):
    """A ``Detection`` (MediaPipe-33 2D pixels with visibility as confidence, world landmarks root-relative in
    metres, the detector's ``box`` when there is one), or None when the landmarks do not fit ``box``."""
    if box is not None and not landmarks_fit_box(lm, box, min_cover):
        return None
    return Detection(frame, score=float(np.clip(lm[:, 2].mean(), 0, 1)), kp2d=lm[:, :2], kp2d_conf=lm[:, 2],
                     layout2d="mediapipe33", kp3d=world, layout3d=None if world is None else "mediapipe33",
                     kp3d_root_relative=True, box=None if box is None else np.asarray(box, np.float32),
                     track_id=0 if box is None else None, source=source)


@register
class MediaPipePoseAdapter(Adapter):
    name = "mediapipe"
    live = True
    reads = ("video frames (runs MediaPipe Pose, model_complexity=1: the only one that works offline); options: "
             f"crops ('auto'), min_box_cover ({MIN_BOX_COVER}), imgsz, conf (0.3)")
    skeleton = "MediaPipe-33 (2D pixels + world 3D)"
    units = "pixels; world landmarks metres, hip-centred"
    camera = "none for 2D; world landmarks root-relative"

    def run(self, video_path, video, progress=True):
        """Full frame (one person) by default; with ``crops=True`` (or ``"auto"`` when YOLO is installed),
        YOLO finds the people and MediaPipe runs on each upscaled crop: multi-person, and small people
        (MediaPipe's own person detector misses people under ~150 px) are found. With crops, a detection keeps
        YOLO's box, and landmarks that do not fit it (``landmarks_fit_box``, option ``min_box_cover``) are
        not kept: MediaPipe lays a body over whatever is in the crop of a person who is hidden or leaving."""
        try:
            import mediapipe as mp
        except ImportError:
            raise AdapterError("the mediapipe estimator needs: pip install 'posebert-plug[mediapipe]'") from None
        from .video import iter_frames
        crops = self.options.get("crops", "auto")
        min_cover = float(self.options.get("min_box_cover", MIN_BOX_COVER))
        detector = None
        if crops:
            try:
                from .yolo import DEFAULT_IMGSZ, YOLOAdapter
                yolo = YOLOAdapter(imgsz=self.options.get("imgsz", DEFAULT_IMGSZ), weights=self.options.get("weights"),
                                   models=self.options.get("models"))
                detector = (yolo, yolo._model())
            except Exception as e:
                if crops is True:
                    raise AdapterError(f"mediapipe crops need the YOLO person detector ({e})") from None
        with mp.solutions.pose.Pose(static_image_mode=detector is not None, model_complexity=1,
                                    min_detection_confidence=self.options.get("conf", 0.3)) as pose:
            for idx, im in iter_frames(video_path):
                dets = []
                if detector is None:
                    r = pose.process(im)
                    if r.pose_landmarks is not None:
                        lm = np.array([[p.x * video.width, p.y * video.height, p.visibility]
                                       for p in r.pose_landmarks.landmark], np.float64)
                        lm[:, 2] = np.clip(lm[:, 2], 0, 1)
                        wl = r.pose_world_landmarks
                        world = np.array([[p.x, p.y, p.z] for p in wl.landmark]) if wl is not None else None
                        dets.append(detection_from_landmarks(idx, lm, world, source=self.name))
                else:
                    for d in detector[0].detect(detector[1], [im[..., ::-1]], [idx])[0].detections:
                        out = landmarks_on_crop(pose, im, d.box)
                        if out is not None:
                            det = detection_from_landmarks(idx, *out, box=d.box, min_cover=min_cover, source=self.name)
                            if det is not None:
                                dets.append(det)
                yield FrameDetections(idx, dets)


def _crop(im, box, size):
    """Square crop (x0, y0, side, side) of an (H, W, 3) image, zero-padded, resized to size x size."""
    from PIL import Image
    x0, y0, side, _ = box
    return np.asarray(Image.fromarray(im).crop((int(x0), int(y0), int(x0 + side), int(y0 + side))).resize((size, size)))
