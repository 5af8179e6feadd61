"""Loading pickle / joblib files from users without executing their code.

A pickle is a small program: its ``GLOBAL`` opcodes name any importable object
and ``REDUCE`` calls it. Refusing unknown names (``find_class``) is not enough,
because an allowed builtin can still compute: ``builtins.list(builtins.range(5e7))``
is 45 bytes and allocates 2.7 GB. So here

- ``find_class`` resolves only the names numpy arrays, joblib arrays and builtin
  containers need (any other is :class:`UnsafeFileError` naming it);
- every *call* the stream makes (``REDUCE``, ``NEWOBJ``, ``INST``/``OBJ``) goes
  through a checker for that callable that accepts only the arguments a real
  pickler writes: containers that are already built (so a call costs no more
  than the bytes the file holds), no lazy iterables, no sizes;
- every array's declared size is checked against its data (and
  :data:`MAX_ARRAY_BYTES`) before anything is allocated.

Callers can add inert stand-in classes (``stand_ins``) for foreign classes whose
state is only data (the SMPL/MANO model files' chumpy and scipy.sparse objects).
"""
from __future__ import annotations

import collections
import io
import math
import os
import pickle

import numpy as np

from .errors import AdapterError, brief as _brief

__all__ = ["UnsafeFileError", "safe_pickle_load", "safe_joblib_load", "safe_load", "MAX_ARRAY_BYTES"]

# No estimator output or body model holds an array near this; a file declaring more is
# refused before allocating (the bound: a single number must not cost > 2 GB).
MAX_ARRAY_BYTES = 1 << 30
MAX_DIMS = 32          # numpy's own limit is 64; real files use <= 4


class UnsafeFileError(AdapterError):
    """The file asks to build or call something that is not array or container reconstruction."""


class _Refused(Exception):
    """Raised by a checker; the unpickler turns it into UnsafeFileError with the file name."""


# ---- what a stream may call, and with which arguments ---------------------------------
_BUILT = (list, tuple, dict, set, frozenset)          # containers already in memory
_TEXT = (str, bytes, bytearray)
_NUMBER = (int, float, bool, complex)


def _args_are(args, types, most):
    if len(args) > most or not all(isinstance(a, types) for a in args):
        raise _Refused(f"arguments of types {[type(a).__name__ for a in args]}")


def _container(kind):
    """set/frozenset/list/tuple/dict/OrderedDict: nothing, or one container already built."""
    def call(*args):
        _args_are(args, _BUILT, 1)
        return kind(*args)
    call.__name__ = kind.__name__
    return call


def _text(kind):
    """bytes/bytearray/str: from text (never bytes(n), which allocates n)."""
    def call(*args):
        _args_are(args, _TEXT, 3)
        return kind(*args)
    call.__name__ = kind.__name__
    return call


def _number(kind):
    def call(*args):
        _args_are(args, _NUMBER + (str,), 2)
        return kind(*args)
    call.__name__ = kind.__name__
    return call


def _slice(*args):
    _args_are(args, (int, type(None)), 3)
    return slice(*args)


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    """How protocol-2 pickles written by Python 3 store bytes (numpy array data included)."""
    _args_are((text, encoding, errors), str, 3)
    import codecs
    return codecs.encode(text, encoding, errors)


def _dtype(spec, align=False, copy=False):
    # Python 2's numpy wrote align/copy as the ints 0/1.
    if not isinstance(spec, str) or len(spec) > 64 or not isinstance(align, int) or not isinstance(copy, int):
        raise _Refused(f"numpy.dtype({spec!r:.80})")
    return np.dtype(spec, bool(align), bool(copy))


def _reconstruct(subtype, shape, dtype):
    """numpy writes ``_reconstruct(ndarray, (0,), b'b')`` and sets the data in BUILD: an array of
    any other size here would be allocated from a number in the file."""
    if subtype is not np.ndarray or _count(shape) != 0 or not isinstance(dtype, (bytes, str)):
        raise _Refused("numpy _reconstruct of a non-empty array")
    return _np_internal("multiarray", "_reconstruct")(subtype, shape, dtype)


def _scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype):
        raise _Refused("numpy scalar without a dtype")
    if not dtype.hasobject and not (isinstance(data, (bytes, str)) and len(data) == dtype.itemsize):
        raise _Refused(f"numpy scalar of {dtype} from {type(data).__name__}")
    scalar = _np_internal("multiarray", "scalar")
    return scalar(dtype, data) if data is not None else scalar(dtype)


def _frombuffer(buf, dtype, shape, order):
    """Protocol 5: a view of bytes the file holds, reshaped (no allocation)."""
    if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, np.dtype) or order not in ("C", "F"):
        raise _Refused("numpy _frombuffer arguments")
    _count(shape)
    return _np_internal("numeric", "_frombuffer")(buf, dtype, shape, order)


def _defaultdict(factory=None, *rest):
    if factory is not None and factory not in _CALLS.values():
        raise _Refused("defaultdict with a non-builtin factory")
    _args_are(rest, _BUILT, 1)
    return collections.defaultdict(factory, *rest)


def _np_internal(module, name):
    """numpy's own reconstruction helper (numpy._core in numpy 2, numpy.core before)."""
    import importlib
    try:
        mod = importlib.import_module(f"numpy._core.{module}")
    except ImportError:
        mod = importlib.import_module(f"numpy.core.{module}")
    return getattr(mod, name)


def _count(shape) -> int:
    """Element count of a declared shape, refusing anything but a short tuple of
    non-negative ints whose array would fit :data:`MAX_ARRAY_BYTES` at one byte each."""
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or len(shape) > MAX_DIMS or \
            not all(isinstance(s, (int, np.integer)) and 0 <= s for s in shape):
        raise _Refused(f"array shape {shape!r:.80}")
    n = math.prod(int(s) for s in shape)
    if n > MAX_ARRAY_BYTES:
        raise _Refused(f"an array of {n} elements (more than {MAX_ARRAY_BYTES} bytes)")
    return n


def _names(modules, name):
    return {(m, name) for m in modules}


_NP_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_NP_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")

# name in the stream -> what it resolves to (callables among them are wrapped checkers).
_CALLS = {("builtins", n): _container(k) for n, k in (("set", set), ("frozenset", frozenset), ("list", list),
                                                      ("tuple", tuple), ("dict", dict))}
_CALLS.update({("builtins", n): _text(k) for n, k in (("bytes", bytes), ("bytearray", bytearray), ("str", str))})
_CALLS.update({("builtins", n): _number(k) for n, k in (("int", int), ("float", float), ("bool", bool),
                                                        ("complex", complex))})
_CALLS.update({("builtins", "slice"): _slice, ("_codecs", "encode"): _codecs_encode, ("numpy", "dtype"): _dtype,
               ("collections", "OrderedDict"): _container(collections.OrderedDict),
               ("collections", "defaultdict"): _defaultdict})
_CALLS.update({k: _reconstruct for k in _names(_NP_CORE, "_reconstruct")})
_CALLS.update({k: _scalar for k in _names(_NP_CORE, "scalar")})
_CALLS.update({k: _frombuffer for k in _names(_NP_NUMERIC, "_frombuffer")})

# Names that are only ever arguments (never called by the stream).
_VALUES = {("numpy", "ndarray"): np.ndarray, ("numpy", "memmap"): np.memmap,
           ("builtins", "object"): object, ("builtins", "NoneType"): type(None)}

# Python 2 names (protocol <= 2 streams).
_PY2 = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _joblib_wrapper_class():
    try:
        from joblib.numpy_pickle import NumpyArrayWrapper
        return NumpyArrayWrapper
    except ImportError:
        return None


class _Checks:
    """Opcode overrides shared by the plain and the joblib unpickler (both pure-Python
    ``pickle._Unpickler`` subclasses, whose dispatch table can be extended)."""

    _stand_ins: dict = {}
    _path = "?"

    def _refuse(self, what):
        return UnsafeFileError(f"{self._path}: refused to unpickle {what}: only numpy arrays and builtin containers "
                               "are allowed (pickles can run code)")

    def find_class(self, module, name):
        module = _PY2.get(module, module)
        key = (module, name)
        if key in _CALLS:
            return _CALLS[key]
        if key in _VALUES:
            return _VALUES[key]
        if key in self._stand_ins:
            return self._stand_ins[key]
        wrapper = _joblib_wrapper_class()
        if wrapper is not None and name == "NumpyArrayWrapper" and module.endswith("joblib.numpy_pickle"):
            return wrapper
        if (module, name) == ("copyreg", "_reconstructor") and self._stand_ins:
            return _reconstructor
        raise self._refuse(f"{module}.{name}")

    def _call(self, func, args):
        if func is not _reconstructor and (not callable(func) or func not in _CALLS.values()):
            raise self._refuse(f"a call of {getattr(func, '__name__', type(func).__name__)}")
        try:
            if func is _reconstructor:
                return _reconstructor(*args, allowed=tuple(self._stand_ins.values()))
            return func(*args)
        except _Refused as e:
            raise self._refuse(f"{getattr(func, '__name__', func)}: {e}") from None

    def load_reduce(self):
        args = self.stack.pop()
        if not isinstance(args, tuple):
            raise self._refuse("a call with non-tuple arguments")
        self.stack[-1] = self._call(self.stack[-1], args)

    def _instantiate(self, klass, args):     # protocol 0/1 INST and OBJ opcodes
        self.append(self._call(klass, tuple(args)))

    def _new_object(self, cls, args, kwargs=None):
        wrapper = _joblib_wrapper_class()
        allowed = tuple(self._stand_ins.values()) + ((wrapper,) if wrapper is not None else ())
        if cls not in allowed or args or kwargs:
            raise self._refuse(f"a new {getattr(cls, '__name__', type(cls).__name__)} object")
        return cls.__new__(cls)

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new_object(cls, args))

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new_object(cls, args, kwargs))

    def load_build(self):
        """BUILD sets an object's state: only arrays, dtypes, joblib wrappers and stand-ins have
        one, and an array's declared size must match its data before numpy allocates it."""
        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, np.ndarray):
            self._check_array_state(state)
        elif isinstance(inst, _joblib_wrapper_class() or ()):
            self._check_wrapper_state(state)
        elif not isinstance(inst, (np.dtype, *self._stand_ins.values())):
            raise self._refuse(f"the state of a {type(inst).__name__}")
        self._build()

    def _build(self):
        pickle._Unpickler.load_build(self)

    def _check_array_state(self, state):
        ok = isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], np.dtype)
        if not ok:
            raise self._refuse("an array state of an unknown form")
        try:
            n = _count(state[1])
        except _Refused as e:
            raise self._refuse(str(e)) from None
        data, dt = state[4], state[2]
        size = n if dt.hasobject else n * dt.itemsize
        have = len(data) if isinstance(data, (list, bytes, bytearray, str)) else -1
        if size > MAX_ARRAY_BYTES or have != size:
            raise self._refuse(f"an array of shape {tuple(state[1])} with {have} items/bytes of data")

    def _check_wrapper_state(self, state):
        ok = isinstance(state, dict) and isinstance(state.get("dtype"), np.dtype) and \
            state.get("subclass") in (np.ndarray, np.memmap) and state.get("order", "C") in ("C", "F")
        if not ok:
            raise self._refuse("a joblib array of an unknown form")
        try:
            n = _count(state.get("shape"))
        except _Refused as e:
            raise self._refuse(str(e)) from None
        if n * state["dtype"].itemsize > self._max_stream_bytes:
            raise self._refuse(f"a joblib array of shape {tuple(state['shape'])}: more data than the file can hold")

    _max_stream_bytes = MAX_ARRAY_BYTES

    def _marked_target(self):
        """The object an APPENDS/SETITEMS/ADDITEMS fills: the one below the MARK."""
        below = self.metastack[-1] if self.metastack else []
        return below[-1] if below else None

    def _fill_check(self, target, kind, what):
        # Filling an array (``arr[key] = value``) or any other object could compute; only
        # the builtin container of that opcode's kind may be filled.
        if not isinstance(target, kind):
            raise self._refuse(f"{what} a {type(target).__name__}")

    def load_setitem(self):
        self._fill_check(self.stack[-3] if len(self.stack) >= 3 else None, dict, "item assignment into")
        pickle._Unpickler.load_setitem(self)

    def load_setitems(self):
        self._fill_check(self._marked_target(), dict, "item assignment into")
        pickle._Unpickler.load_setitems(self)

    def load_append(self):
        self._fill_check(self.stack[-2] if len(self.stack) >= 2 else None, list, "appending to")
        pickle._Unpickler.load_append(self)

    def load_appends(self):
        self._fill_check(self._marked_target(), list, "appending to")
        pickle._Unpickler.load_appends(self)

    def load_additems(self):
        self._fill_check(self._marked_target(), set, "adding items to")
        pickle._Unpickler.load_additems(self)


def _reconstructor(cls, base, state, allowed=()):
    """copyreg._reconstructor as protocol 0/1 writes objects: only an inert stand-in of ``object``."""
    if cls not in allowed or base is not object or state is not None:
        raise _Refused("copyreg._reconstructor of a class that is not a known data holder")
    return cls.__new__(cls)


def _dispatch(base):
    """``base``'s dispatch table with the opcodes that call, build or fill routed through _Checks."""
    table = dict(base.dispatch)
    for op, meth in ((pickle.REDUCE, "load_reduce"), (pickle.NEWOBJ, "load_newobj"),
                     (pickle.NEWOBJ_EX, "load_newobj_ex"), (pickle.BUILD, "load_build"),
                     (pickle.SETITEM, "load_setitem"), (pickle.SETITEMS, "load_setitems"),
                     (pickle.APPENDS, "load_appends"), (pickle.APPEND, "load_append"),
                     (pickle.ADDITEMS, "load_additems")):
        table[op[0]] = getattr(_Checks, meth)
    return table


class _PlainUnpickler(_Checks, pickle._Unpickler):
    dispatch = _dispatch(pickle._Unpickler)

    def __init__(self, f, path, stand_ins=None):
        super().__init__(f, encoding="latin1")   # Python 2 pickles (numpy data as str)
        self._path, self._stand_ins = path, dict(stand_ins or {})


def safe_pickle_load(path, stand_ins=None):
    """Load a plain pickle, allowing only numpy arrays and builtin containers (plus ``stand_ins``:
    {(module, name): inert class} for foreign data-only classes)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _PlainUnpickler(io.BytesIO(data), path, stand_ins).load()
    except UnsafeFileError:
        raise
    except RecursionError:
        raise AdapterError(f"{path}: nested too deeply to be a data file") from None
    except Exception as e:  # truncated or not a pickle
        raise AdapterError(f"{path}: not a readable pickle ({_brief(e)})") from None


def safe_joblib_load(path):
    """Load a joblib file (compressed or not) with the same checks."""
    path = os.fspath(path)
    try:
        from joblib import numpy_pickle as jp
    except ImportError:  # plain pickles are still fine without joblib
        return safe_pickle_load(path)
    read_fileobject = getattr(jp, "_validate_fileobject_and_memmap", None) or getattr(jp, "_read_fileobject")

    class _SafeNumpyUnpickler(_Checks, jp.NumpyUnpickler):
        dispatch = _dispatch(jp.NumpyUnpickler)
        _path = path
        # A joblib array's data follows in the stream: it cannot be longer than the file
        # (uncompressed) or ~1000x the file (zlib's best ratio).
        _max_stream_bytes = min(MAX_ARRAY_BYTES, 1100 * os.path.getsize(path) + 4096)

        def _build(self):
            jp.NumpyUnpickler.load_build(self)

    try:
        with open(path, "rb") as f:
            with read_fileobject(f, path, None) as opened:
                fobj = opened[0] if isinstance(opened, tuple) else opened
                if isinstance(fobj, str):
                    raise ValueError("the joblib < 0.10 multi-file format is not supported")
                return _SafeNumpyUnpickler(path, fobj, True).load()
    except UnsafeFileError:
        raise
    except RecursionError:
        raise AdapterError(f"{path}: nested too deeply to be a data file") from None
    except Exception as e:
        raise AdapterError(f"{path}: not a readable joblib/pickle file ({_brief(e)})") from None


def safe_load(path):
    """Pickle or joblib, whichever the file is."""
    return safe_joblib_load(path)
