"""Identity tracking of per-frame detections (Hungarian matching); see :mod:`tracking.tracker`."""
from .evidence import EvidenceConfig, vet_tracks
from .tracker import HungarianTracker, TrackerConfig, iou_matrix, track_detections

__all__ = ["HungarianTracker", "TrackerConfig", "track_detections", "iou_matrix", "EvidenceConfig", "vet_tracks"]
