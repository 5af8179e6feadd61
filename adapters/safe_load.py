"""Loading pickle / joblib files from users without executing their code.

Only numpy arrays (and what numpy needs to rebuild them) and builtin
containers/scalars may be unpickled; any other class is refused with
:class:`UnsafeFileError` naming it, before anything is constructed.
"""
from __future__ import annotations

import io
import os
import pickle

__all__ = ["UnsafeFileError", "safe_pickle_load", "safe_joblib_load", "safe_load"]


class UnsafeFileError(ValueError):
    """The file asks to build something that is neither a numpy array nor a builtin container."""


_ALLOWED = {
    ("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes",
                              "bytearray", "bool", "slice", "range", "NoneType")
} | {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"), ("sklearn.externals.joblib.numpy_pickle", "NumpyArrayWrapper"),
}


def _check(module, name, path):
    if (module, name) in _ALLOWED or (module == "numpy" and name.endswith("DType")) or \
            (module in ("numpy.dtypes",) and name.endswith("DType")):
        return
    raise UnsafeFileError(f"{path}: refused to unpickle {module}.{name}: only numpy arrays and builtin containers "
                          "are allowed in estimator files (pickles can run code)")


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, f, path):
        super().__init__(f, encoding="latin1")
        self._path = path

    def find_class(self, module, name):
        _check(module, name, self._path)
        return super().find_class(module, name)


def safe_pickle_load(path):
    """Load a plain pickle, allowing only numpy arrays and builtins."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _SafeUnpickler(io.BytesIO(data), path).load()
    except UnsafeFileError:
        raise
    except Exception as e:  # truncated or not a pickle
        raise ValueError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None


def safe_joblib_load(path):
    """Load a joblib file (compressed or not) with the same allow-list."""
    path = os.fspath(path)
    try:
        from joblib import numpy_pickle as jp
    except ImportError:  # plain pickles are still fine without joblib
        return safe_pickle_load(path)
    read_fileobject = getattr(jp, "_validate_fileobject_and_memmap", None) or getattr(jp, "_read_fileobject")

    class _SafeNumpyUnpickler(jp.NumpyUnpickler):
        def find_class(self, module, name):
            _check(module, name, path)
            return super().find_class(module, name)

    try:
        with open(path, "rb") as f:
            with read_fileobject(f, path, None) as opened:
                fobj = opened[0] if isinstance(opened, tuple) else opened
                if isinstance(fobj, str):
                    raise ValueError("the joblib < 0.10 multi-file format is not supported")
                return _SafeNumpyUnpickler(path, fobj, True).load()
    except UnsafeFileError:
        raise
    except Exception as e:
        raise ValueError(f"{path}: not a readable joblib/pickle file ({type(e).__name__}: {e})") from None


def safe_load(path):
    """Pickle or joblib, whichever the file is."""
    return safe_joblib_load(path)
