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
        try:
            import mediapipe as mp
        except ImportError:
            raise AdapterError("the mediapipe estimator needs: pip install 'posebert-plug[mediapipe]'") from None
        from .video import iter_frames
        with mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1,
                                    min_detection_confidence=self.options.get("conf", 0.5)) as pose:
            for idx, im in iter_frames(video_path):
                r = pose.process(im)
                if r.pose_landmarks is None:
                    yield FrameDetections(idx, [])
                    continue
                lm = np.array([[p.x * video.width, p.y * video.height, p.visibility] for p in r.pose_landmarks.landmark])
                w = r.pose_world_landmarks
                # MediaPipe world axes: x right, y down, z away from the camera: already camera-aligned.
                k3 = np.array([[p.x, p.y, p.z] for p in w.landmark]) if w is not None else None
                yield FrameDetections(idx, [Detection(idx, score=float(np.clip(lm[:, 2].mean(), 0, 1)), kp2d=lm[:, :2],
                                                      kp2d_conf=np.clip(lm[:, 2], 0, 1), layout2d="mediapipe33",
                                                      kp3d=k3, layout3d=None if k3 is None else "mediapipe33",
                                                      kp3d_root_relative=True, track_id=0, source=self.name)])
