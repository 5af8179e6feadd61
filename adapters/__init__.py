"""Estimator adapters: ``adapters.available()`` lists them, ``adapters.get(name)`` returns the class.

Each converts an estimator's real output into ``list[FrameDetections]`` (see
``posebert_plug.types``), following its documented format to the key and unit;
file adapters return an :class:`AdapterOutput` (that list plus the camera focal
its translations are expressed for, and the warnings raised while reading).
"""
from .base import Adapter, AdapterError, AdapterOutput, AdapterWarning, available, get
from .safe_load import UnsafeFileError, safe_joblib_load, safe_pickle_load
from . import hybrik, smpl_estimators, mmpose, keypoint_files, yolo, mediapipe_adapter, hands  # noqa: F401 (registration)

__all__ = ["Adapter", "AdapterError", "AdapterOutput", "AdapterWarning", "UnsafeFileError", "available", "get",
           "safe_pickle_load", "safe_joblib_load"]
