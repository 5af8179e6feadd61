"""Estimator files are read with the core's restricted unpickler (:mod:`posebert_plug.safe_load`, which
also reads the SMPL/MANO model files); the adapters import it under this name."""
from posebert_plug.safe_load import (MAX_ARRAY_BYTES, UnsafeFileError, safe_joblib_load, safe_load,  # noqa: F401
                                     safe_pickle_load)

__all__ = ["UnsafeFileError", "safe_pickle_load", "safe_joblib_load", "safe_load", "MAX_ARRAY_BYTES"]
