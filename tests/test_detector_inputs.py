"""The detector's input size follows the video, and MediaPipe landmarks must fit the person YOLO boxed."""
import numpy as np
import pytest

from posebert_plug.pipeline import DEFAULT_IMGSZ, detector_size, small_people_hint
from posebert_plug.types import Detection, FrameDetections, VideoInfo


@pytest.mark.parametrize("w,h,size", [(176, 144, 160), (640, 272, 640), (768, 576, 768), (1920, 1080, DEFAULT_IMGSZ),
                                      (20, 10, 32)])
def test_detector_size_never_upscales(w, h, size):
    v = VideoInfo(width=w, height=h, fps=30.0, num_frames=10)
    assert detector_size(v) == size
    assert detector_size(v) <= max(max(w, h), 32)
    assert detector_size(v, 960) == 960          # an explicit size wins


def _frames(height):
    return [FrameDetections(i, [Detection(i, box=np.array([10, 10, 40, 10 + height], np.float32), score=0.9)])
            for i in range(20)]


def test_small_people_hint():
    v = VideoInfo(width=768, height=576, fps=25.0, num_frames=20)
    hint = small_people_hint(_frames(60), v, None)
    assert hint is not None and "--imgsz 960" in hint and "60 px" in hint
    assert small_people_hint(_frames(200), v, None) is None      # tall enough
    assert small_people_hint(_frames(60), v, 960) is None        # the user chose a size
    assert small_people_hint(_frames(60), VideoInfo(width=1920, height=1080, fps=25.0), None) is None  # 960 already


def _standing(box):
    """33 MediaPipe-like landmarks spread over an upright person's box, visible."""
    x1, y1, x2, y2 = box
    t = np.linspace(0, 1, 33)
    return np.stack([x1 + (x2 - x1) * (0.3 + 0.4 * (np.arange(33) % 2)), y1 + (y2 - y1) * t, np.full(33, 0.9)], 1)


def test_mediapipe_landmarks_must_fit_the_yolo_box():
    from adapters.mediapipe_adapter import detection_from_landmarks, landmarks_fit_box
    box = np.array([100, 100, 150, 230], np.float32)           # a 50 x 130 px pedestrian
    good = _standing(box)
    assert landmarks_fit_box(good, box)
    flat = good.copy()                                         # laid flat: 64 x 25 px (comp2's ghost)
    flat[:, 0] = 95 + 64 * np.linspace(0, 1, 33)
    flat[:, 1] = 150 + 25 * (np.arange(33) % 2)
    assert not landmarks_fit_box(flat, box)
    beside = good.copy()
    beside[:, 0] -= 200                                        # a whole body beside the person (leaving the frame)
    assert not landmarks_fit_box(beside, box)
    assert landmarks_fit_box(flat, box, min_cover=0)           # the option turns the test off
    d = detection_from_landmarks(3, good, None, box=box)
    assert d is not None and np.allclose(d.box, box) and d.layout2d == "mediapipe33" and d.frame == 3
    assert detection_from_landmarks(3, flat, None, box=box) is None
    full = detection_from_landmarks(0, flat, None)             # full-frame mode: no box to test against
    assert full is not None and full.track_id == 0
