import atexit
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
SHARED = os.path.abspath(os.environ.get("POSEBERT_SHARED", SHARED))


def shared_path(*parts):
    return os.path.join(SHARED, *parts)


# One torch thread in the test process (POSEBERT_TEST_THREADS overrides). The tests' tensors are small:
# a second intra-op thread gains little on them, and on a busy shared machine (other test runs, CI
# neighbours) OpenMP threads that wait on each other made in-process training 10x slower (15 s vs 1.5 s).
torch.set_num_threads(int(os.environ.get("POSEBERT_TEST_THREADS", "1")))

needs_shared = pytest.mark.skipif(not os.path.isdir(shared_path("data")),
                                  reason="../shared/data is absent (bare clone): the real mocap/video tests need it")


@pytest.fixture(autouse=True)
def _seeded_global_rng():
    """Tests that draw from the global torch/numpy generators see the same draws on every run."""
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def body():
    from posebert_plug.body_model import DefaultBodyModel
    return DefaultBodyModel()


def random_motion(T=90, seed=0, fps=30.0):
    """A smooth synthetic SMPL-24 motion: sinusoidal joint rotations + a walk forward."""
    import roma
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(T, dtype=torch.float64)[:, None, None] / fps
    amp = torch.rand(1, 24, 3, generator=g, dtype=torch.float64) * 0.5
    freq = 0.5 + torch.rand(1, 24, 3, generator=g, dtype=torch.float64) * 1.5
    phase = torch.rand(1, 24, 3, generator=g, dtype=torch.float64) * 6.28
    rv = amp * torch.sin(2 * np.pi * freq * t + phase)
    R = roma.rotvec_to_rotmat(rv)
    transl = torch.zeros(T, 3, dtype=torch.float64)
    transl[:, 2] = torch.arange(T) * 1.2 / fps
    transl[:, 1] = 0.9
    return R.numpy(), transl.numpy()


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A training cache made from generated motion (no ../shared needed)."""
    from posebert_plug.rotations import rotmat_to_6d
    out = tmp_path_factory.mktemp("cache")
    for split, seeds in (("train", range(6)), ("val", range(100, 102))):
        rots, trs, lens = [], [], []
        for s in seeds:
            R, tr = random_motion(T=120, seed=s)
            rots.append(rotmat_to_6d(torch.as_tensor(R)).numpy().astype(np.float16))
            trs.append(tr.astype(np.float32))
            lens.append(len(R))
        lens = np.array(lens)
        np.savez(out / f"{split}.npz", rot6d=np.concatenate(rots), transl=np.concatenate(trs),
                 clip_start=np.concatenate([[0], np.cumsum(lens)[:-1]]), clip_len=lens,
                 clip_name=np.array([f"gen{s}" for s in seeds]), clip_source=np.array(["gen"] * len(seeds)))
    return out


@pytest.fixture
def tiny_size(monkeypatch):
    """A ``posebert-train --size`` for tests: a 1-block, 32-wide PoseBERT. Training code, checkpoint format,
    resuming and loading are the same at every size; only the arithmetic per step shrinks (the default
    ``cpu`` size is ~0.3 s a step on a 2-core machine, several seconds under load)."""
    from posebert_plug import train
    monkeypatch.setitem(train.MODEL_SIZES, "test-tiny", dict(dim=32, depth=1, heads=2, mlp_dim=64))
    return "test-tiny"


def extract_members(archive, names, dest):
    """Extract the members of a .tar.xz whose paths end with ``names`` into ``dest``, reading the archive
    as a stream and stopping at the last one found (``tar -x`` with member names and ``getmembers()``
    both decompress the whole archive: seconds for one small file of these mocap packs)."""
    import tarfile
    wanted = set(names)
    with tarfile.open(archive, "r|xz") as tf:
        for m in tf:
            hit = next((n for n in wanted if m.name == n or m.name.endswith("/" + n)), None)
            if hit is not None:
                tf.extract(m, dest, filter="data")
                wanted.discard(hit)
                if not wanted:
                    return
    raise FileNotFoundError(f"{archive}: no member {', '.join(sorted(wanted))}")


# ---- functions called in a child process with a capped data segment (memory tests) ----------------------
GB = 1 << 30
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = textwrap.dedent("""
    import importlib, json, os, resource, sys
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))   # heap + anonymous maps (not torch's code)
    replies = os.fdopen(os.dup(1), "w")    # one JSON line per call; what the calls print goes to stderr
    os.dup2(2, 1)

    def reset_peak():
        # Linux: writing 5 to clear_refs resets VmHWM to the current RSS: each call's peak is its own
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    for line in sys.stdin:
        module, func, args = json.loads(line)
        own_peak, value = reset_peak(), None
        try:
            value = getattr(importlib.import_module(module), func)(*args)
            outcome = f"returned {value!r:.100}"
        except SystemExit as e:
            outcome = f"exit {e.code}"
        except BaseException as e:
            outcome = f"{type(e).__name__}: {e}"
        # VmHWM: this process's own peak. ru_maxrss is not: Linux carries the parent's high-water mark
        # over fork+exec, so a large pytest process (Ray, rendering) showed through as the child's peak.
        hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")]
        peak = hwm[0] * 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        reply = {"outcome": outcome, "peak_bytes": peak, "reusable": own_peak}
        try:
            reply["value"] = json.loads(json.dumps(value))
        except (TypeError, ValueError):
            pass
        replies.write(json.dumps(reply) + "\\n")
        replies.flush()
""")
_workers = {}


class BoundedWorker:
    """A child process whose data segment is capped at ``limit`` bytes (RLIMIT_DATA), calling functions on
    request. Started once and reused by the memory tests and the fuzz loop: each child start imports torch
    and the pipeline again, seconds of CPU. VmHWM is reset before each call, so a reported peak is the
    call's own; a worker that cannot reset it (not Linux) or ran out of memory is not reused."""

    def __init__(self, limit, cwd=ROOT, env=None):
        import tempfile
        self.stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(limit)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True, cwd=cwd, env=env)

    def call(self, module, func, args, timeout=300):
        """-> {"outcome": "returned ..." | "exit N" | "ExceptionName: message", "peak_bytes", "value"?}"""
        import select
        ready, line = True, ""
        try:
            self.proc.stdin.write(json.dumps([module, func, list(args)]) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:    # it died after its last answer
            pass
        else:
            ready = bool(select.select([self.proc.stdout], [], [], timeout)[0])
            line = self.proc.stdout.readline() if ready else ""
        if not line:
            try:
                status = self.proc.wait(timeout=10) if ready else "hung: no answer in time"
            except subprocess.TimeoutExpired:
                status = "closed its output"
            self.close()
            self.stderr.seek(0)
            raise AssertionError(f"the bounded child failed ({status}): {self.stderr.read()[-3000:]}")
        return json.loads(line)

    def close(self):
        self.proc.kill()
        self.proc.wait()


def bounded_worker(limit=2 * GB, fresh=False, **spawn):
    """The shared worker for ``limit`` (``fresh``: a new one, started with ``spawn``: cwd, env)."""
    if fresh or limit not in _workers:
        if limit in _workers:
            _workers.pop(limit).close()
        _workers[limit] = BoundedWorker(limit, **spawn)
    return _workers[limit]


def bounded_call(module, func, *args, limit=2 * GB, timeout=300, fresh=False, **spawn):
    """module.func(*args) in the bounded worker for ``limit`` (see BoundedWorker.call)."""
    worker = bounded_worker(limit, fresh, **spawn)
    try:
        out = worker.call(module, func, args, timeout)
    finally:
        if _workers.get(limit) is worker and worker.proc.poll() is not None:
            del _workers[limit]              # died: the next call starts a fresh one
    if not out["reusable"] or "MemoryError" in out["outcome"]:
        _workers.pop(limit).close()
    return out


def run_bounded(module, func, *args, limit=2 * GB):
    """Call module.func(*args) in a child process whose data segment is capped at ``limit``;
    returns (outcome line, peak resident bytes of the child during the call)."""
    out = bounded_call(module, func, *args, limit=limit)
    return out["outcome"], out["peak_bytes"]


@atexit.register
def _stop_bounded_workers():
    for w in _workers.values():
        w.close()
    _workers.clear()
