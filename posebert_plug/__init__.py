"""posebert-plug: turn any image-based 3D human pose estimator into a video-based one.

Public API (shapes and units are documented on each object):
- ``load_body_model(kind="default" | "smpl", model_dir=None)``,
  ``load_hand_model(kind="default" | "mano", side="right", model_dir=None)``
- ``load_motion(path, joint_map=None, calibration_frame=None, fps=30)``
- ``load_model(preset)``, ``available_presets()``
- ``refine_tracks(detections, model="auto", device="auto")``, ``predict_future``,
  ``complete_motion``, ``OnlineRefiner``
- data types: ``Detection``, ``FrameDetections``, ``Track``, ``RefinedTrack``, ``VideoInfo``
- ``generate_scene(cache, SceneConfig(...))``: rendered multi-person scenes with ground truth
"""
from .body_model import load_body_model
from .presets import available_presets, load_model
from .skeletons import available_skeletons, get_skeleton
from .types import Detection, FrameDetections, RefinedTrack, Track, VideoInfo, load_tracks, save_tracks

__version__ = "0.1.0"


def load_motion(path, joint_map=None, calibration_frame=None, fps=30.0):
    """Read BVH / ASF+AMC / AMASS .npz -> SMPL-24 Motion (rotmats (T,24,3,3), transl (T,3) metres, fps)."""
    from .mocap.loaders import load_motion as _load
    return _load(path, joint_map=joint_map, calibration_frame=calibration_frame, fps=fps)


def refine_tracks(detections, model="auto", device="auto", **kwargs):
    """See :func:`posebert_plug.refine.refine_tracks`; detections without track ids are tracked first
    with :func:`tracking.track_detections` (this facade is the application layer: the core does not
    import ``tracking``)."""
    from .refine import refine_tracks as _refine
    if kwargs.get("tracker") is None:
        from tracking import track_detections
        kwargs["tracker"] = track_detections
    return _refine(detections, model=model, device=device, **kwargs)


def __getattr__(name):
    if name in ("predict_future", "complete_motion", "OnlineRefiner", "ConfidencePolicy"):
        from . import refine
        return getattr(refine, name)
    if name == "load_hand_model":
        from .hand_model import load_hand_model
        return load_hand_model
    if name in ("generate_scene", "SceneConfig"):
        from . import scenes
        return getattr(scenes, name)
    raise AttributeError(name)


__all__ = ["load_body_model", "load_motion", "load_model", "available_presets", "refine_tracks",
           "predict_future", "complete_motion", "OnlineRefiner", "ConfidencePolicy", "Detection",
           "FrameDetections", "Track", "RefinedTrack", "VideoInfo", "save_tracks", "load_tracks",
           "get_skeleton", "available_skeletons", "load_hand_model", "generate_scene", "SceneConfig"]
