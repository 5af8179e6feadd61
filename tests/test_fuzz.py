"""Issue 19, item 7: fuzzing every file adapter with mutated valid files.

Each valid fixture (tests/fixtures_estimators.py, one per format) is mutated at the byte level (flipped,
truncated, inserted, deleted or overwritten bytes; for .npz and compressed joblib files also inside the
zip member / zlib stream, so that the mutation gets past the CRC) and at the structure level (wrong
types, NaN/inf, huge and negative numbers, missing and extra keys, extra nesting, reshaped, sliced or
re-typed arrays), and read by its adapter. Every outcome must be one of

- the adapter returns frames of the video that the pipeline's next step (tracking) accepts, or
- it raises the input error the command line turns into exit 2 (``AdapterError`` / ``UnsafeFileError``)
  with one line naming the file;

never another exception (a traceback, exit 1), never a file left behind, and the whole loop runs in a
child process whose data segment is capped at 2 GB (``RLIMIT_DATA``): one mutated number must not be
able to allocate past it. A few mutated files also go through ``posebert-refine`` in-process: exit
0, 2 or 3, no traceback, no staging folder left.

Deterministic (``derandomize=True``, no example database), bounded examples per format; the file runs
in well under two minutes on a 2-core CPU.
"""
from __future__ import annotations

import math
import os
import shutil
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import adapters
from adapters import AdapterError, AdapterOutput, AdapterWarning, UnsafeFileError
from fixtures_estimators import CASES, H, W, build, dump_structure, load_structure
from posebert_plug.types import VideoInfo

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
GB = 1 << 30
MEMORY_LIMIT = 2 * GB
BYTE_EXAMPLES = 30           # per format
STRUCTURE_EXAMPLES = 45      # per format
NUM_FRAMES = 40              # the video the files are read for


def fuzz_settings(n):
    return settings(max_examples=n, derandomize=True, deadline=None, database=None, print_blob=False,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=list(HealthCheck))


# ---- byte-level mutations ---------------------------------------------------------------------------
TOKENS = [b"9" * 12, b"\xff" * 8, b"\x00" * 8, b"[", b"{", b"]", b"-", b"e999", b"NaN", b'"', b"1e308", b"\x80",
          b"J\xff\xff\xff\x7f", b"(((", b"."]


def mutate_bytes(data, raw: bytes) -> bytes:
    """1-3 of: flip bits of a byte, truncate, insert random bytes, delete a run, overwrite with a token."""
    b = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3), label="byte ops")):
        op = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]), label="op")
        pos = data.draw(st.integers(0, len(b)), label="position")
        if op == "flip" and pos < len(b):
            b[pos] ^= data.draw(st.integers(1, 255), label="mask")
        elif op == "truncate":
            del b[pos:]
        elif op == "insert":
            b[pos:pos] = data.draw(st.binary(min_size=1, max_size=8), label="inserted")
        elif op == "delete":
            del b[pos:pos + data.draw(st.integers(1, 16), label="deleted")]
        elif op == "overwrite":
            tok = data.draw(st.sampled_from(TOKENS), label="token")
            b[pos:pos + len(tok)] = tok
    return bytes(b)


def byte_mutated_file(data, case, valid, dest):
    """Write a byte-mutated copy of the valid file ``valid`` at ``dest`` (for a folder: of one of its files)."""
    if case.kind == "json-folder":
        shutil.copytree(valid, dest)
        names = sorted(os.listdir(dest))
        name = data.draw(st.sampled_from(names), label="file")
        raw = open(os.path.join(dest, name), "rb").read()
        open(os.path.join(dest, name), "wb").write(mutate_bytes(data, raw))
        if data.draw(st.booleans(), label="rename"):   # the frame number is in the file name
            new = data.draw(st.sampled_from(["clip_999999999999999_keypoints.json", "clip_keypoints.json",
                                             "clip_-1_keypoints.json", "clip_000000000001_keypoints.json"]))
            os.replace(os.path.join(dest, name), os.path.join(dest, new))
        return
    raw = open(valid, "rb").read()
    inner = data.draw(st.booleans(), label="inside the container") if case.kind in ("npz", "joblib-z") else False
    if inner and case.kind == "npz":           # a mutated member in a well-formed zip (valid CRC)
        with zipfile.ZipFile(valid) as zf:
            members = {n: zf.read(n) for n in zf.namelist()}
        name = data.draw(st.sampled_from(sorted(members)), label="member")
        members[name] = mutate_bytes(data, members[name])
        with zipfile.ZipFile(dest, "w") as zf:
            for n, content in members.items():
                zf.writestr(n, content)
        return
    if inner:                                  # joblib compress=3: a zlib stream of the pickle
        out = zlib.compress(mutate_bytes(data, zlib.decompress(raw)), 3)
    else:
        out = mutate_bytes(data, raw)
    open(dest, "wb").write(out)


# ---- structure-level mutations ----------------------------------------------------------------------
SPECIALS = [None, "", "x", True, 0, -1, 0.5, math.nan, math.inf, -math.inf, 1e300, -1e300, 10 ** 12, -10 ** 12,
            2 ** 63, 2 ** 70, [], {}, [[]], "left", "99999999999999.jpg", [1.0, 2.0], {"x": 1}]
ARRAY_VALUES = [np.nan, np.inf, -np.inf, 1e308, -1e308, 1e12, -1.0, 0.0, 2.0 ** 40]
ARRAY_OPS = ["set one", "set all", "astype", "ravel", "new axis", "last axis", "transpose", "empty", "first",
             "head", "tail", "drop column", "double", "tolist"]
DTYPES = ["int8", "int64", "bool", "complex128", "float16", "<U3", "object"]


def mutate_array(data, a: np.ndarray):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")     # casts that overflow or drop imaginary parts: intended
        return _mutate_array(data, a)


def _mutate_array(data, a: np.ndarray):
    op = data.draw(st.sampled_from(ARRAY_OPS), label="array op")
    if op in ("set one", "set all"):
        if a.size == 0 or a.dtype.kind not in "biufc":
            return np.full(3, data.draw(st.sampled_from(ARRAY_VALUES)))
        b = a.astype(np.float64) if a.dtype.kind in "biu" else a.copy()
        v = data.draw(st.sampled_from(ARRAY_VALUES), label="value")
        if op == "set all":
            b[...] = v
        else:
            b.reshape(-1)[data.draw(st.integers(0, b.size - 1), label="element")] = v
        return b
    if op == "astype":
        try:
            return a.astype(data.draw(st.sampled_from(DTYPES), label="dtype"))
        except (TypeError, ValueError, OverflowError):
            return a
    if op == "ravel":
        return a.reshape(-1)
    if op == "new axis":
        return a[None]
    if op == "last axis":
        return a[..., None]
    if op == "transpose":
        return a.T
    if a.ndim == 0:
        return a.reshape(1)
    if op == "empty":
        return a[:0]
    if op == "first":
        return a[:1]
    if op == "head":
        return a[:max(1, len(a) - 1)]
    if op == "tail":
        return a[1:]
    if op == "drop column":
        return a[..., :-1] if a.ndim > 1 else a[:-1]
    if op == "double":
        return np.concatenate([a, a]) if a.size < 100_000 else a
    return a.tolist()


def mutate_tree(data, obj, depth=0):
    """A copy of ``obj`` with one change somewhere below (containers along the path are copied)."""
    container = isinstance(obj, (dict, list, tuple)) and len(obj) > 0
    choices = (["descend"] * 3 if container and depth < 8 else []) + ["replace", "nest"]
    if isinstance(obj, np.ndarray):
        choices += ["array"] * 4
    if isinstance(obj, (dict, list, tuple)):
        choices += ["container"] * 2
    action = data.draw(st.sampled_from(choices), label=f"action at depth {depth}")
    if action == "descend":
        keys = list(obj.keys()) if isinstance(obj, dict) else list(range(len(obj)))
        k = data.draw(st.sampled_from(keys), label="child")
        new = dict(obj) if isinstance(obj, dict) else list(obj)
        new[k] = mutate_tree(data, obj[k], depth + 1)
        return new if not isinstance(obj, tuple) else tuple(new)
    if action == "replace":
        return data.draw(st.sampled_from(SPECIALS), label="replacement")
    if action == "nest":
        how = data.draw(st.sampled_from(["list", "dict", "pair"]), label="nesting")
        return [obj] if how == "list" else {"value": obj} if how == "dict" else (obj, obj)
    if action == "array":
        return mutate_array(data, obj)
    # a change of the container itself
    if isinstance(obj, dict):
        op = data.draw(st.sampled_from(["delete", "extra", "rename", "int key", "empty"]), label="dict op")
        new = dict(obj)
        if op == "empty":
            return {}
        if op == "extra":
            new["extra"] = data.draw(st.sampled_from(SPECIALS))
            return new
        if not obj:
            return new
        k = data.draw(st.sampled_from(list(obj.keys())), label="key")
        v = new.pop(k)
        if op == "rename":
            new[f"{k}_"] = v
        elif op == "int key":
            new[len(new) + 7] = v
        return new
    op = data.draw(st.sampled_from(["delete", "duplicate", "append", "empty", "reverse"]), label="list op")
    new = list(obj)
    if op == "empty":
        new = []
    elif op == "append":
        new.append(data.draw(st.sampled_from(SPECIALS)))
    elif op == "reverse":
        new.reverse()
    elif new:
        i = data.draw(st.integers(0, len(new) - 1), label="index")
        if op == "delete":
            del new[i]
        else:
            new.insert(i, new[i])
    return tuple(new) if isinstance(obj, tuple) else new


# ---- the property ----------------------------------------------------------------------------------
def _listing(folder):
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names + _)


def check_read(adapter, path, video):
    """Read ``path`` with ``adapter``: return "returned" or "refused", or fail the property.

    Returned frames must be frames of the video, ordered, that the pipeline's tracking step accepts;
    a refusal must be AdapterError/UnsafeFileError (exit 2) with one line naming the file. Nothing
    may be written next to the file. Warnings other than AdapterWarning are returned (reported)."""
    from posebert_plug.pipeline import Pipeline
    folder = os.path.dirname(path)
    before = _listing(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = adapters.get(adapter)().read(path, video)
        except (AdapterError, UnsafeFileError) as e:
            message = str(e)
            assert path in message, f"the error does not name the file: {message!r}"
            assert "\n" not in message, f"the error is not one line: {message!r}"
            outcome = "refused"
        else:
            assert isinstance(out, AdapterOutput), type(out)
            frames = [fd.frame for fd in out]
            assert all(isinstance(f, int) for f in frames) and frames == sorted(set(frames)), frames[:10]
            assert all(0 <= f < video.num_frames for f in frames), frames[-5:]
            assert all(d.frame == fd.frame for fd in out for d in fd.detections)
            assert out.focal_px is None or (np.isfinite(out.focal_px) and out.focal_px > 0), out.focal_px
            Pipeline(progress=False).track(out, out.video(video))   # what posebert-refine does next
            outcome = "returned"
    assert _listing(folder) == before, "files were left next to the input"
    others = sorted({f"{w.category.__name__}: {w.message}"[:160] for w in caught
                     if not issubclass(w.category, AdapterWarning)})
    return outcome, others


def fuzz_case(name, workdir, byte_examples=BYTE_EXAMPLES, structure_examples=STRUCTURE_EXAMPLES):
    """Run both fuzzers on one format; returns counts of outcomes and the non-adapter warnings seen."""
    case = CASES[name]
    video = VideoInfo(W, H, 30, num_frames=NUM_FRAMES)
    valid_dir = os.path.join(workdir, name, "valid")
    os.makedirs(valid_dir)
    valid = build(case, valid_dir)
    structure = load_structure(case, valid)
    example_dir = os.path.join(workdir, name, "example")
    stats = {"returned": 0, "refused": 0, "warnings": set()}

    def run(write):
        shutil.rmtree(example_dir, ignore_errors=True)
        os.makedirs(example_dir)
        path = os.path.join(example_dir, case.file)
        write(path)
        outcome, others = check_read(case.adapter, path, video)
        stats[outcome] += 1
        stats["warnings"].update(others)

    @fuzz_settings(byte_examples)
    @given(st.data())
    def bytes_fuzz(data):
        run(lambda path: byte_mutated_file(data, case, valid, path))

    @fuzz_settings(structure_examples)
    @given(st.data())
    def structure_fuzz(data):
        def write(path):
            obj = structure
            for _ in range(data.draw(st.integers(1, 3), label="mutations")):
                obj = mutate_tree(data, obj)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")      # e.g. torch.save of a non-writable array
                dump_structure(case, obj, path)
        run(write)

    bytes_fuzz()
    structure_fuzz()
    shutil.rmtree(os.path.join(workdir, name))
    return {"returned": stats["returned"], "refused": stats["refused"], "warnings": sorted(stats["warnings"])}


# ---- the loop in a memory-capped child process ----------------------------------------------------------
def fuzz_cases(names, workdir):
    """Both fuzzers on each of ``names``: {name: fuzz_case's counts, ok, seconds} (or ok False, error)."""
    import time
    import traceback
    results = {}
    for name in names:
        t = time.time()
        try:
            results[name] = dict(fuzz_case(name, workdir), ok=True)
        except BaseException as e:
            results[name] = {"ok": False, "error": "".join(traceback.format_exception(e))[-6000:]}
        results[name]["seconds"] = round(time.time() - t, 1)
    return results


def run_fuzz_child(names, tmp, limit=MEMORY_LIMIT):
    """Fuzz ``names`` in a fresh child capped at ``limit`` bytes of data; its cwd and TMPDIR are empty folders
    that must stay empty. Returns (per-format results, peak RSS, leftovers). The child is conftest's bounded
    worker: the memory tests after this one reuse it instead of importing everything again."""
    from conftest import bounded_call
    cwd, tmpdir, work, own = (os.path.join(tmp, n) for n in ("cwd", "tmp", "work", "hypothesis"))
    for d in (cwd, tmpdir, work):
        os.makedirs(d)
    env = dict(os.environ, TMPDIR=tmpdir, HYPOTHESIS_STORAGE_DIRECTORY=own,   # hypothesis's own cache: not ours
               PYTHONPATH=os.pathsep.join([ROOT, TESTS, os.environ.get("PYTHONPATH", "")]))
    out = bounded_call("test_fuzz", "fuzz_cases", names, work, limit=limit, timeout=600, fresh=True, cwd=cwd, env=env)
    assert "value" in out, f"the fuzz child failed: {out['outcome']}"
    leftovers = _listing(cwd) + _listing(tmpdir) + _listing(work)
    return out["value"], out["peak_bytes"], leftovers


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory):
    return run_fuzz_child(sorted(CASES), str(tmp_path_factory.mktemp("fuzz")))


@pytest.mark.parametrize("name", sorted(CASES))
def test_fuzzed_files_are_read_or_refused_cleanly(fuzz_run, name):
    results, _, _ = fuzz_run
    r = results[name]
    assert r["ok"], f"{name}: {r['error']}"
    # The fuzzer reached both paths: some mutated files still read, some are refused.
    assert r["returned"] > 0 and r["refused"] > 0, r
    assert r["returned"] + r["refused"] == BYTE_EXAMPLES + STRUCTURE_EXAMPLES, r


def test_fuzzing_stays_under_the_memory_cap_and_leaves_nothing(fuzz_run):
    results, peak, leftovers = fuzz_run
    assert peak < MEMORY_LIMIT, f"peak RSS {peak / GB:.2f} GB"
    assert leftovers == [], leftovers
    assert set(results) == set(CASES)


def test_every_file_adapter_has_a_fuzzed_format():
    file_adapters = {n for n in adapters.available() if not adapters.get(n).live}
    fuzzed = {adapters.get(c.adapter).name for c in CASES.values()}
    assert {adapters.get(n).name for n in file_adapters} == fuzzed


def test_estimator_output_help_lists_every_file_estimator():
    from posebert_plug.cli import build_parser
    action = next(a for a in build_parser()._actions if "--estimator-output" in a.option_strings)
    listed = set(action.help.split(": ", 1)[1].rstrip(")").replace("/", ", ").split(", "))
    assert listed == {n for n in adapters.available() if not adapters.get(n).live}, listed


# ---- mutated files through posebert-refine, in-process --------------------------------------------------
CLI_EXAMPLES = 6


@pytest.fixture(scope="module")
def video_720p(tmp_path_factory):
    """24 grey frames at the fixtures' 1280x720 (declared frame count: 24)."""
    from adapters.video import VideoWriter
    p = tmp_path_factory.mktemp("video") / "clip.mp4"
    with VideoWriter(p, W, H, 30) as w:
        for i in range(24):
            w.write(np.full((H, W, 3), 80 + i, np.uint8))
    return str(p)


def _cli_cases():
    from fixtures_estimators import Case, hand21_npz, hybrik_res, vibe_output
    return {"hybrik": Case("hybrik", "res.pk", "pickle", lambda p: hybrik_res(p, frames=tuple(range(20)))),
            "vibe": Case("vibe", "vibe_output.pkl", "joblib", lambda p: vibe_output(p, {1: (list(range(20)), 220.0)})),
            "hand21": Case("hand21", "hands.npz", "npz", lambda p: hand21_npz(p, n=20))}


def test_fuzzed_files_through_the_command_line(tmp_path_factory, video_720p):
    """posebert-refine on mutated files (and the valid ones): exit 0, 2 or 3 with one clear line, no
    traceback, and nothing of a failed run left in --out."""
    import contextlib
    import io
    from posebert_plug.cli import refine_main
    root = tmp_path_factory.mktemp("cli")
    cases = _cli_cases()
    valid = {}
    for name, case in cases.items():
        os.makedirs(root / "valid" / name)
        valid[name] = build(case, root / "valid" / name)
    codes = []

    @fuzz_settings(CLI_EXAMPLES)
    @given(st.sampled_from(sorted(cases)), st.sampled_from(["none", "bytes", "structure"]), st.data())
    def through_the_cli(name, how, data):
        case = cases[name]
        run_dir = root / f"run{len(codes)}"
        os.makedirs(run_dir)
        path, out = str(run_dir / case.file), run_dir / "out"
        if how == "none":
            shutil.copy(valid[name], path)
        elif how == "bytes":
            byte_mutated_file(data, case, valid[name], path)
        else:
            obj = mutate_tree(data, load_structure(case, valid[name]))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dump_structure(case, obj, path)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = refine_main([video_720p, "--estimator", case.adapter, "--estimator-output", path, "--out", str(out),
                              "--no-render", "--quiet", "--device", "cpu"])
        err = err.getvalue()
        codes.append(rc)
        assert rc in (0, 2, 3), (rc, err[-3000:])
        assert "Traceback" not in err, err[-3000:]
        errors = [line for line in err.splitlines() if line.startswith("posebert-refine: error:")]
        if rc == 0:
            assert not errors and (out / "summary.json").exists() and (out / ".posebert-manifest.json").exists()
        else:
            assert len(errors) == 1, err[-3000:]
            assert rc == 3 or path in errors[0], errors[0]
            assert not out.exists() or os.listdir(out) == [], os.listdir(out)
        assert not out.exists() or not [n for n in os.listdir(out) if n.startswith(".partial") or n.endswith(".part")]

    through_the_cli()
    assert 0 in codes and 2 in codes, codes          # both a complete run and a refused file were exercised


# ---- regressions: what the fuzzer found -------------------------------------------------------------------
V40 = VideoInfo(W, H, 30, num_frames=NUM_FRAMES)


def _refused(name, path, match, video=V40):
    with pytest.raises(AdapterError, match=match) as e:
        adapters.get(name)().read(str(path), video)
    assert str(path) in str(e.value) and "\n" not in str(e.value), str(e.value)
    return str(e.value)


def test_unreadable_pickles_are_adapter_errors_of_one_short_line(tmp_path):
    """Was a bare ValueError quoting the pickle's bytes (a kilobyte line); the pipeline maps both to exit 2,
    but only AdapterError/UnsafeFileError is the adapters' documented input error."""
    path = build(CASES["hybrik"], tmp_path)
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[:3] + raw[8:])           # 5 bytes deleted: int() of the following bytes
    assert len(_refused("hybrik", path, "not a readable pickle")) < len(path) + 300
    vibe = build(CASES["vibe"], tmp_path)
    open(vibe, "wb").write(open(vibe, "rb").read()[:100])
    _refused("vibe", vibe, "not a readable joblib/pickle file")


def test_torch_load_errors_are_one_line(tmp_path):
    """torch's weights_only error spans many lines with terminal colour codes."""
    import torch
    torch.save({"smpl_params_incam": {"global_orient": np.zeros((3, 3))}}, tmp_path / "np.pt")   # numpy: refused
    message = _refused("gvhmr", tmp_path / "np.pt", "weights_only=True")
    assert "\x1b" not in message


@pytest.mark.parametrize("case, key, value, match", [
    ("motionbert-npz", "X3D", np.array(""), "'X3D' is not numeric"),
    ("motionbert-npz", "X3D", np.zeros((6, 17, 3), complex), "'X3D' holds complex numbers"),
    ("rtmlib", "keypoints", np.array(["a", "b"]), "'keypoints' is not numeric"),
    ("hand21", "kp2d", np.array(True), "got one number"),
    ("hand21", "conf", np.array(["x"] * 5), "conf is not numeric"),
])
def test_npz_arrays_of_the_wrong_kind_are_refused(tmp_path, case, key, value, match):
    c = CASES[case]
    path = build(c, tmp_path)
    d = load_structure(c, path)
    d[key] = value
    dump_structure(c, d, path)
    _refused(c.adapter, path, match)


def test_corrupt_text_in_a_hand_side_array_is_refused(tmp_path):
    """Code points beyond Unicode in a '<U5' array: numpy's str() raised SystemError."""
    path = build(CASES["hand21"], tmp_path)
    d = load_structure(CASES["hand21"], path)
    d["side"] = np.frombuffer(np.full(5 * 5, 0x7FFFFFFF, np.uint32).tobytes(), dtype="<U5")
    dump_structure(CASES["hand21"], d, path)
    _refused("hand21", path, "side must hold")


@pytest.mark.parametrize("case, change, match", [
    ("mmpose", lambda rows: rows[0].update(frame_id=[]), "frame_id must be one number"),
    ("hand21-json", lambda rows: rows[0].update(frame_id=[1, 2]), "frame_id must be one number"),
    ("hand21-json", lambda rows: rows[1]["instances"][0].update(keypoints=[["a", "b"]] * 21), "keypoints is not numeric"),
    ("alphapose", lambda rows: rows[2].update(box=[1, [2, 3]]), "box is not numeric"),
    ("mmpose", lambda rows: rows[1]["instances"][0].update(bbox=[["x"] * 4]), "bbox is not numeric"),
])
def test_json_values_of_the_wrong_kind_are_refused(tmp_path, case, change, match):
    c = CASES[case]
    path = build(c, tmp_path)
    rows = load_structure(c, path)
    change(rows)
    dump_structure(c, rows, path)
    _refused(c.adapter, path, match)


def test_phalp_joints_of_the_wrong_container_are_refused(tmp_path):
    c = CASES["4dhumans"]
    path = build(c, tmp_path)
    d = load_structure(c, path)
    first = sorted(d)[0]
    d[first]["2d_joints"] = {"value": d[first]["2d_joints"]}       # was KeyError: 0
    dump_structure(c, d, path)
    _refused("4dhumans", path, "2d_joints must be")


def test_a_frame_without_2d_joints_keeps_the_track_buildable(tmp_path):
    """A PHALP frame without '2d_joints' gave detections without 2D among ones with COCO-17 2D: tracking
    raised 'mixed keypoint layouts' (a traceback, exit 1). Now its 2D is missing (confidence 0)."""
    from posebert_plug.pipeline import Pipeline
    c = CASES["4dhumans"]
    path = build(c, tmp_path)
    d = load_structure(c, path)
    del d[sorted(d)[1]]["2d_joints"]
    dump_structure(c, d, path)
    out = adapters.get("4dhumans")().read(path, V40)
    dets = [x for f in out for x in f.detections]
    assert {x.layout2d for x in dets} == {"coco17"} and {x.layout3d for x in dets} == {"body25"}
    assert [float(x.kp2d_conf.max()) for x in dets if x.frame == 1] == [0.0, 0.0]
    assert all(x.kp2d_conf.max() > 0 for x in dets if x.frame != 1)
    tracks = Pipeline(progress=False).track(out, out.video(V40))
    assert sorted(t.track_id for t in tracks) == [3, 9] and all(len(t.frames) == 3 for t in tracks)


def test_detections_in_a_minority_layout_are_dropped_with_a_warning(tmp_path):
    c = CASES["mmpose"]
    path = build(c, tmp_path)
    rows = load_structure(c, path)
    inst = rows[1]["instances"][0]
    inst.update(keypoints=inst["keypoints"] + [[1.0, 2.0]] * 9, keypoint_scores=inst["keypoint_scores"] + [1.0] * 9)
    dump_structure(c, rows, path)   # one Halpe-26 person among COCO-17 ones: both come out as COCO-17, kept
    assert sum(len(f) for f in adapters.get("mmpose")().read(path, V40)) == 6
    rows[1]["instances"][0] = {"keypoints": np.zeros((17, 3)).tolist(), "track_id": 0}   # a 3D lifter's instance
    dump_structure(c, rows, path)
    out = adapters.get("mmpose")().read(path, V40)
    assert sum(len(f) for f in out) == 6 and all(x.layout3d == "h36m17" for f in out for x in f.detections)
    # 2D and 3D in one file: every detection gets both layouts (the missing one as missing keypoints)
    from posebert_plug.pipeline import Pipeline
    Pipeline(progress=False).track(out, V40)


def _mkv(path, frames=8, size=(64, 48)):
    import av
    c = av.open(str(path), "w")
    s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=30)
    s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
    for i in range(frames):
        for p in s.encode(av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 60 + i, np.uint8), format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return str(path)


def test_without_a_declared_frame_count_the_duration_bounds_frame_numbers(tmp_path):
    """MKV/WebM/MPEG-TS declare no frame count (num_frames 0): one frame id of 9,999,999 (allowed: under
    MAX_FRAME) sized a 10-million-frame track, gigabytes of per-frame arrays."""
    from adapters.video import probe
    from fixtures_estimators import vibe_output
    v = probe(_mkv(tmp_path / "clip.mkv", frames=8))
    assert v.num_frames == 0 and 8 <= v.duration_frames <= 8 + 31 + 2
    vibe_output(tmp_path / "v.pkl", {1: ([0, 1, 2, 3, 4, 9_999_999], 150.0)})
    with pytest.warns(AdapterWarning, match="up to frame 9999999, but the video lasts under"):
        out = adapters.get("vibe")().read(str(tmp_path / "v.pkl"), v)
    assert [f.frame for f in out] == [0, 1, 2, 3, 4]


def test_memory_a_huge_frame_id_with_an_mkv_video_stays_under_2_gb(tmp_path):
    from fixtures_estimators import vibe_output
    from conftest import run_bounded
    video = _mkv(tmp_path / "clip.mkv", frames=8, size=(W // 4, H // 4))
    vibe_output(tmp_path / "v.pkl", {1: ([0, 1, 2, 3, 4, 5, 9_999_999], 40.0)})
    outcome, peak = run_bounded("posebert_plug.cli", "refine_main", [video, "--estimator", "vibe", "--estimator-output",
                                str(tmp_path / "v.pkl"), "--no-render", "--out", str(tmp_path / "o"), "--quiet"])
    assert outcome in ("returned 0", "returned 3") and peak < MEMORY_LIMIT, (outcome, peak)
    assert os.listdir(tmp_path / "o") == [] or (tmp_path / "o" / "summary.json").exists()
