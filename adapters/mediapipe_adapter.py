"""MediaPipe Pose (33 landmarks, one person) and Hands, run offline (mediapipe 0.10.14 ships its models)."""
from __future__ import annotations

import numpy as np

from posebert_plug.types import Detection, FrameDetections
from .base import Adapter, AdapterError, register


@register
class MediaPipePoseAdapter(Adapter):
    name = "mediapipe"
    live = True
    reads = "video frames (runs MediaPipe Pose, model_complexity=1: the only one that works offline)"
    skeleton = "MediaPipe-33 (2D pixels + world 3D)"
    units = "pixels; world landmarks metres, hip-centred"
    camera = "none for 2D; world landmarks root-relative"

    def run(self, video_path, video, progress=True):
        """Full frame (one person) by default; with ``crops=True`` (or ``"auto"`` when YOLO is installed),
        YOLO finds the people and MediaPipe runs on each upscaled crop: multi-person, and small people
        (MediaPipe's own person detector misses people under ~150 px) are found."""
        try:
            import mediapipe as mp
        except ImportError:
            raise AdapterError("the mediapipe estimator needs: pip install 'posebert-plug[mediapipe]'") from None
        from .video import iter_frames
        crops = self.options.get("crops", "auto")
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
                if detector is None:
                    regions = [(0.0, 0.0, float(video.width), float(video.height), im)]
                else:
                    regions = []
                    for d in detector[0].detect(detector[1], [im[..., ::-1]], [idx])[0].detections:
                        x1, y1, x2, y2 = d.box
                        side = max(x2 - x1, y2 - y1) * 1.4
                        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                        box = (int(cx - side / 2), int(cy - side / 2), int(side), int(side))
                        regions.append((*box, _crop(im, box, 384)))
                dets = []
                for (x0, y0, w, h, img) in regions:
                    r = pose.process(img)
                    if r.pose_landmarks is None:
                        continue
                    lm = np.array([[x0 + p.x * w, y0 + p.y * h, p.visibility] for p in r.pose_landmarks.landmark])
                    wl = r.pose_world_landmarks
                    # MediaPipe world axes: x right, y down, z away from the camera: camera-aligned, hip-centred.
                    k3 = np.array([[p.x, p.y, p.z] for p in wl.landmark]) if wl is not None else None
                    dets.append(Detection(idx, score=float(np.clip(lm[:, 2].mean(), 0, 1)), kp2d=lm[:, :2],
                                          kp2d_conf=np.clip(lm[:, 2], 0, 1), layout2d="mediapipe33", kp3d=k3,
                                          layout3d=None if k3 is None else "mediapipe33", kp3d_root_relative=True,
                                          track_id=0 if detector is None else None, source=self.name))
                yield FrameDetections(idx, dets)


def _crop(im, box, size):
    """Square crop (x0, y0, side, side) of an (H, W, 3) image, zero-padded, resized to size x size."""
    from PIL import Image
    x0, y0, side, _ = box
    return np.asarray(Image.fromarray(im).crop((int(x0), int(y0), int(x0 + side), int(y0 + side))).resize((size, size)))
