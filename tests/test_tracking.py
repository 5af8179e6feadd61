"""Issue 7: Hungarian tracker scenarios."""
import numpy as np

from posebert_plug.types import Detection, FrameDetections, VideoInfo
from tracking import HungarianTracker, TrackerConfig, iou_matrix, track_detections

V = VideoInfo(1280, 720, 30)
TEMPLATE = np.array([[0, -80], [-5, -85], [5, -85], [-10, -82], [10, -82], [-20, -60], [20, -60], [-28, -35],
                     [28, -35], [-30, -10], [30, -10], [-12, 0], [12, 0], [-12, 40], [12, 40], [-12, 80], [12, 80]], float)


def person(frame, cx, cy, scale=1.0, tid=None, pose_shift=0.0):
    kp = TEMPLATE * scale + [cx, cy]
    kp[9:11, 1] += pose_shift
    return Detection(frame, box=[cx - 35 * scale, cy - 90 * scale, cx + 35 * scale, cy + 85 * scale], score=0.9,
                     kp2d=kp, layout2d="coco17", track_id=tid)


def ids_by_frame(tracks):
    """{frame: {track_id: x position}}"""
    out = {}
    for t in tracks:
        for i, f in enumerate(t.frames):
            if t.observed[i]:
                out.setdefault(int(f), {})[t.track_id] = float(np.nanmean(t.kp2d[i, :, 0]))
    return out


def test_iou():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]], float)
    assert np.allclose(iou_matrix(a, b), [[50 / 150, 0]])


def test_two_people_crossing_keep_their_identities():
    frames = []
    for f in range(60):
        a = person(f, 200 + 10 * f, 400)            # walks right
        b = person(f, 800 - 10 * f, 410, scale=1.1)  # walks left, crossing at f = 30
        frames.append(FrameDetections(f, [a, b]))
    tracks = track_detections(frames, V)
    assert len(tracks) == 2
    for t in tracks:
        assert t.observed.all() and len(t) == 60
        x = np.nanmean(t.kp2d[:, :, 0], axis=1)
        d = np.diff(x)
        assert (d > 0).all() or (d < 0).all()       # each track moves one way only: no swap


def test_occluded_for_20_frames_is_reidentified():
    frames = []
    for f in range(80):
        dets = [person(f, 300 + 4 * f, 400)]
        if not (30 <= f < 50):
            dets.append(person(f, 900 - 3 * f, 380))
        frames.append(FrameDetections(f, dets))
    tracks = track_detections(frames, V, TrackerConfig(max_gap=30))
    assert len(tracks) == 2
    occluded = [t for t in tracks if not t.observed.all()][0]
    assert len(occluded) == 80 and (~occluded.observed).sum() == 20
    assert not occluded.observed[30:50].any()


def test_one_frame_false_positive_gives_no_track():
    frames = [FrameDetections(f, [person(f, 400 + 2 * f, 300)] + ([person(f, 1000, 500)] if f == 10 else []))
              for f in range(40)]
    tracks = track_detections(frames, V)
    assert len(tracks) == 1 and tracks[0].observed.all()


def test_empty_frames_and_no_frames():
    frames = [FrameDetections(f, [] if 10 <= f < 13 else [person(f, 400, 300)]) for f in range(30)]
    tracks = track_detections(frames, V)
    assert len(tracks) == 1 and (~tracks[0].observed).sum() == 3
    assert track_detections([], V) == []
    assert track_detections([FrameDetections(0, [])], V) == []


def test_fifty_people_in_one_frame():
    xs, ys = np.meshgrid(np.arange(10) * 120 + 60, np.arange(5) * 140 + 100)
    pos = np.stack([xs.ravel(), ys.ravel()], 1)
    frames = [FrameDetections(f, [person(f, x + f, y) for x, y in pos]) for f in range(8)]
    tracks = track_detections(frames, V)
    assert len(tracks) == 50
    assert all(t.observed.all() and len(t) == 8 for t in tracks)


def test_frames_must_be_ordered():
    import pytest
    tr = HungarianTracker(video=V)
    tr.update(FrameDetections(5, []))
    with pytest.raises(ValueError, match="increasing order"):
        tr.update(FrameDetections(3, []))
    box = np.array([10, 10, 50, 90.0])
    with pytest.raises(ValueError, match="frame 2 appears twice"):
        track_detections([FrameDetections(2, [Detection(2, box=box)]), FrameDetections(2, [])], V)


def test_detections_without_a_usable_box_are_not_tracked():
    frames = [FrameDetections(i, [Detection(i, box=np.array([100.0 + i, 50, 160 + i, 200])),
                                  Detection(i, box=np.array([np.nan, 1, 2, 3.0]))]) for i in range(10)]
    tracks = track_detections(frames, V)
    assert len(tracks) == 1 and tracks[0].observed.all() and len(tracks[0]) == 10
