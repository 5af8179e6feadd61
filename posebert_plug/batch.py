"""posebert-batch: refine a dataset of videos on Ray, resumable per video.

    posebert-batch videos/ --estimator yolo --out out/batch --no-render
    posebert-batch manifest.csv --out out/batch --workers 4
    posebert-batch manifest.jsonl --address ray://head:10001 --gpus-per-worker 1

Input: a folder of videos (every file FFmpeg-style extension below, recursively) or a manifest
(``.csv`` / ``.jsonl``) with one row per video: ``video``, ``estimator``, ``estimator_output``,
``options`` (a JSON object of :class:`~posebert_plug.pipeline.Pipeline` settings, e.g.
``{"max_frames": 300, "render": false}``) and optionally ``name`` (the output folder); a CSV
column named after a Pipeline setting (``max_frames``, ``preset``, ...) sets it too. Relative
paths are relative to the manifest's folder.

Output: ``OUT/<name>/`` per video with exactly what ``posebert-refine`` writes (the same
:class:`Pipeline` runs it: staged in ``.partial-<pid>/``, published with its manifest), a done
marker ``.posebert-batch-done.json`` keyed by a hash of the inputs, and the table
``OUT/batch_summary.csv`` / ``.json`` (status, frames, people, seconds per stage, error).

Each video is one Ray task on an actor ("worker") that keeps its models loaded between videos;
``--workers`` actors run at once (bounded concurrency: one video per worker at a time, so the
memory in use is about ``workers`` times one video's). A rerun skips the videos whose marker
matches their inputs and retries the others (failed, interrupted, changed); one failing video is
reported and never stops the others. SIGTERM/SIGINT stop the batch cleanly (running videos are
cancelled, their staging folders removed, the summary written, Ray shut down); the next run
resumes there.

A local Ray starts with its dashboard when ``ray[default]`` is installed (the ``dashboard`` extra):
the dashboard and Ray's state API (``ray list tasks``, ``ray.util.state``) show the videos' tasks
while the batch runs, and ``--ray-summary`` prints Ray's own table of them (task, state, count,
workers) before Ray shuts down.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import os
import signal
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
DONE = ".posebert-batch-done.json"
SUMMARY = "batch_summary"
WHOLE_FILE_HASH_MAX = 16 << 20     # videos up to this size are hashed whole
EDGE_BYTES = 1 << 20               # larger ones: size + first and last MiB
STAGES = ("detect", "track", "refine", "baseline", "write_results", "bvh", "render", "plots", "total")
COLUMNS = ("name", "video", "status", "frames", "people", "detections", *(f"{s}_s" for s in STAGES),
           "warnings", "worker", "error")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class BatchError(Exception):
    """A usage error of the whole batch (bad manifest, unknown option): exit code 2."""


def pipeline_options() -> set:
    """Pipeline settings a job may set (everything but the estimator, its file and the run state)."""
    from .pipeline import Pipeline
    return {f.name for f in dataclasses.fields(Pipeline)} - {"estimator", "estimator_output", "progress",
                                                               "timings", "warnings"}


@dataclass
class Job:
    """One video of a batch. ``options``: Pipeline settings (``max_frames``, ``render``, ...)."""

    video: str
    estimator: str = "yolo"
    estimator_output: str | None = None
    options: dict = field(default_factory=dict)
    name: str | None = None     # output folder under OUT (default: from the video's path)

    def pipeline(self, progress=False, refiner=None, detectors=None):
        """The video's Pipeline; ``refiner``/``detectors``: loaded models to reuse (a worker's)."""
        from .pipeline import Pipeline
        return Pipeline(estimator=self.estimator, estimator_output=self.estimator_output, progress=progress,
                        refiner=refiner, detectors={} if detectors is None else detectors, **self.options)


# ---- inputs ------------------------------------------------------------------------------------

def _check_options(options: dict, where: str) -> dict:
    if not isinstance(options, dict):
        raise BatchError(f"{where}: options must be a JSON object, got {type(options).__name__}")
    bad = set(options) - pipeline_options()
    if bad:
        raise BatchError(f"{where}: unknown option(s) {', '.join(sorted(bad))}; known: "
                         f"{', '.join(sorted(pipeline_options()))}")
    out = dict(options)
    from .types import JSON_ARRAYS
    if "json_arrays" in out and out["json_arrays"] not in JSON_ARRAYS:
        raise BatchError(f"{where}: json_arrays must be one of {', '.join(JSON_ARRAYS)}, got {out['json_arrays']!r}")
    if "baselines" in out and isinstance(out["baselines"], (list, str)):
        out["baselines"] = tuple([out["baselines"]] if isinstance(out["baselines"], str) else out["baselines"])
    return out


def jobs_from_folder(folder, estimator="yolo", estimator_output=None, options=None) -> list:
    """Every video under ``folder`` (sorted). ``estimator_output``: a template for each video's
    estimator file, relative to the video's folder, with ``{stem}`` (file name without extension)
    and ``{name}`` (file name), e.g. ``"{stem}.alphapose.json"``."""
    jobs = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.lower().endswith(VIDEO_EXTS) and not f.startswith("."):
                path = os.path.join(root, f)
                eo = None
                if estimator_output:
                    eo = os.path.join(root, estimator_output.format(stem=os.path.splitext(f)[0], name=f))
                rel = os.path.relpath(path, folder)
                jobs.append(Job(path, estimator, eo, dict(options or {}), _name_of(rel)))
    return jobs


def _name_of(rel: str) -> str:
    stem = os.path.splitext(os.path.normpath(rel))[0]
    return stem.replace(os.sep, "__").replace("/", "__")


def jobs_from_manifest(path, estimator="yolo", options=None) -> list:
    """Rows of a ``.csv`` (header: video, estimator, estimator_output, options, name, or Pipeline
    settings) or ``.jsonl`` manifest; ``estimator``/``options``: defaults the rows override."""
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="") as f:
        text = f.read()
    rows = []
    if path.lower().endswith((".jsonl", ".ndjson")):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise BatchError(f"{path}:{n}: not JSON ({e})") from None
                if not isinstance(row, dict):
                    raise BatchError(f"{path}:{n}: each line must be a JSON object")
                rows.append((n, row))
    elif path.lower().endswith(".csv"):
        for n, row in enumerate(csv.DictReader(io.StringIO(text)), 2):
            rows.append((n, {k.strip(): v for k, v in row.items() if k and v not in (None, "")}))
    else:
        raise BatchError(f"{path}: a manifest must be .csv or .jsonl")
    known = pipeline_options()
    jobs = []
    for n, row in rows:
        where = f"{path}:{n}"
        if "video" not in row:
            raise BatchError(f"{where}: no 'video'")
        opts = dict(options or {})
        o = row.get("options") or {}
        if isinstance(o, str):
            try:
                o = json.loads(o)
            except ValueError as e:
                raise BatchError(f"{where}: options are not a JSON object ({e})") from None
        opts.update(_check_options(o, where))
        for k, v in row.items():
            if k in known:              # CSV columns named after a setting
                opts[k] = _cell(v)
            elif k not in ("video", "estimator", "estimator_output", "options", "name"):
                raise BatchError(f"{where}: unknown column {k!r}")
        video = os.path.join(base, row["video"])
        eo = row.get("estimator_output")
        jobs.append(Job(video, row.get("estimator") or estimator, os.path.join(base, eo) if eo else None,
                        _check_options(opts, where), row.get("name") or _name_of(os.path.relpath(video, base))))
    return jobs


def _cell(v):
    if not isinstance(v, str):
        return v
    try:
        return json.loads(v)
    except ValueError:
        return v


def _unique_names(jobs):
    seen = {}
    for j in jobs:
        j.name = (j.name or _name_of(os.path.basename(j.video))).lstrip(".") or "video"
        if j.name in seen:
            j.name = f"{j.name}-{hashlib.sha1(os.path.abspath(j.video).encode()).hexdigest()[:8]}"
        seen[j.name] = j
    return jobs


# ---- what makes a video's results: the key of its done marker -----------------------------------

def _hash_file(path, h, whole_max=None):
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        if whole_max is None or size <= whole_max:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            h.update(f.read(EDGE_BYTES))
            f.seek(size - EDGE_BYTES)
            h.update(f.read(EDGE_BYTES))


def input_key(job: Job) -> str:
    """SHA-256 of what a video's outputs depend on: the video (whole when <= 16 MiB, else its size
    and first and last MiB), the estimator and its output file or folder (whole), every Pipeline
    setting (defaults included) and the package version. Renaming or touching a file keeps it."""
    from . import __version__
    h = hashlib.sha256()
    _hash_file(job.video, h, WHOLE_FILE_HASH_MAX)
    eo = job.estimator_output
    if eo and os.path.isdir(eo):
        for root, dirs, files in os.walk(eo):
            dirs.sort()
            for f in sorted(files):
                h.update(os.path.relpath(os.path.join(root, f), eo).encode())
                _hash_file(os.path.join(root, f), h)
    elif eo:
        _hash_file(eo, h)
    settings = {k: v for k, v in dataclasses.asdict(job.pipeline()).items() if k in pipeline_options()}
    h.update(json.dumps({"estimator": job.estimator, "settings": settings, "version": __version__},
                        sort_keys=True, default=str).encode())
    return h.hexdigest()


def read_marker(out_dir) -> dict | None:
    try:
        with open(os.path.join(out_dir, DONE)) as f:
            m = json.load(f)
        return m if isinstance(m, dict) else None
    except (OSError, ValueError):
        return None


# ---- one video (runs inside a worker, or in-process) --------------------------------------------

def _row(job: Job, status, summary=None, error="", worker=""):
    s = summary or {}
    tm = s.get("timings", {})
    row = {"name": job.name, "video": job.video, "status": status, "frames": s.get("frames", ""),
           "people": s.get("people", ""), "detections": s.get("detections", ""),
           **{f"{k}_s": round(tm[k], 3) if k in tm else "" for k in STAGES},
           "warnings": len(s.get("warnings", [])) if summary else "", "worker": worker, "error": error}
    return row


def run_one(job: Job, out_dir, key: str, refiner=None, detectors=None) -> dict:
    """Run one video through :class:`Pipeline` into ``out_dir`` and write its done marker;
    returns its summary row. Errors of the video come back in the row (status ``failed``);
    KeyboardInterrupt/SIGTERM go on (the Pipeline removes its staging folder first)."""
    from .pipeline import PipelineError
    from .pipeline_outputs import write_json
    worker = f"{os.uname().nodename}:{os.getpid()}"
    marker = os.path.join(out_dir, DONE)
    if os.path.exists(marker):     # the outputs are about to be replaced: never a stale marker over them
        os.remove(marker)
    p = job.pipeline(progress=False, refiner=refiner, detectors=detectors)
    try:
        summary = p.run(job.video, out_dir)
    except PipelineError as e:
        return _row(job, "failed", error=f"exit {e.code}: {e}", worker=worker)
    except Exception as e:   # an internal error of this video; the others go on
        tb = traceback.format_exc(limit=-3).strip().splitlines()
        return _row(job, "failed", error=f"internal error: {type(e).__name__}: {e} [{' | '.join(tb[-4:])}]",
                    worker=worker)
    write_json(marker, {"key": key, "video": os.path.abspath(job.video), "finished": time.time(),
                        "summary": {k: summary.get(k) for k in ("frames", "people", "detections", "timings",
                                                                "warnings")}})
    return _row(job, "done", summary, worker=worker)


class _Worker:
    """A Ray actor: one per worker process, its models (PoseBERT presets, body model, YOLO)
    loaded on first use and kept for every later video it runs."""

    def __init__(self, device="cpu", threads=1):
        import torch
        torch.set_num_threads(max(1, int(threads)))
        self.device = device
        self.refiners = {}          # (device, smpl_dir, mano_dir) -> Refiner: models loaded once per worker
        self.detectors = {}         # loaded YOLO models, shared by every video of this worker

    def refiner(self, options: dict):
        from .bodies import BodyModels
        from .refine import Refiner
        key = (options.get("device", self.device), options.get("smpl_dir"), options.get("mano_dir"))
        if key not in self.refiners:
            self.refiners[key] = Refiner(key[0], BodyModels(key[1], key[2]))
        return self.refiners[key]

    def run(self, job: Job, out_dir, key):
        if "device" not in job.options:
            job.options = {**job.options, "device": self.device}
        return run_one(job, out_dir, key, refiner=self.refiner(job.options), detectors=self.detectors)

    def pid(self):
        return os.getpid()


# ---- the batch ---------------------------------------------------------------------------------

def dashboard_available() -> bool:
    """Whether Ray's dashboard can start here: it (and the state API it serves: ``ray list tasks``,
    ``ray.util.state``) needs ``ray[default]``'s packages (aiohttp, grpcio, opencensus, ...)."""
    try:
        import ray.dashboard.optional_deps  # noqa: F401
        return True
    except ImportError:
        return False


def _init_ray(address, num_cpus, num_gpus, object_store_mb, dashboard=True):
    """Start (or join) Ray; returns (started, dashboard URL or None). A local Ray gets its dashboard,
    bound to 127.0.0.1, when ``dashboard`` and its packages import; usage stats stay off."""
    import ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")   # no upload at run time
    if ray.is_initialized():
        return False, None
    dashboard = bool(dashboard) and not address and dashboard_available()
    kw = dict(include_dashboard=dashboard, log_to_driver=False, configure_logging=True, logging_level="ERROR")
    if address:
        ctx = ray.init(address=address, **kw)
    else:
        ctx = ray.init(num_cpus=num_cpus, num_gpus=num_gpus, object_store_memory=object_store_mb << 20,
                       dashboard_host="127.0.0.1", **kw)
    return True, getattr(ctx, "dashboard_url", None) or None


RUN_TASK = "_Worker.run"
_ENDED = ("FINISHED", "FAILED")     # Ray's terminal task states; every other one is on its way


def ray_task_summary(address=None, wait_s=30.0, limit=10000) -> str:
    """Ray's own account of this job's tasks, from its state API (``ray.util.state.list_tasks``,
    served by the dashboard): one row per task name and state with the count and the workers
    (pid and Ray worker id) that ran them. Task events reach Ray's GCS about once a second: waits
    up to ``wait_s`` for the videos' tasks to reach an end state (FINISHED or FAILED). Raises when the state API
    is unavailable (Ray started without its dashboard, or ``ray[default]`` not installed)."""
    import ray
    from ray.util.state import list_tasks
    rc = ray.get_runtime_context()
    if not (address and address.startswith(("ray://", "http://", "https://"))):
        address = rc.gcs_address    # this session's own cluster, even with other Ray instances on the machine
    job = rc.get_job_id()
    t0 = time.time()
    while True:
        tasks = [t for t in list_tasks(address=address, filters=[("job_id", "=", job)], limit=limit, timeout=30,
                                       raise_on_missing_output=False) if t.type != "DRIVER_TASK"]
        if time.time() - t0 > wait_s or all(t.state in _ENDED for t in tasks if t.name == RUN_TASK):
            break
        time.sleep(0.5)
    groups = {}
    for t in tasks:
        g = groups.setdefault((t.name, t.type, t.state), {"n": 0, "workers": {}})
        g["n"] += 1
        if t.worker_id:
            g["workers"][t.worker_id] = t.worker_pid
    lines = [f"Ray state API (ray.util.state.list_tasks, job {job}): {len(tasks)} tasks"
             + (f" (the first {limit})" if len(tasks) >= limit else ""),
             "| task | type | state | count | workers (pid: Ray worker id) |", "|---|---|---|---|---|"]
    for (name, typ, state), g in sorted(groups.items(), key=lambda kv: (kv[0][0] != RUN_TASK, kv[0])):
        ws = ", ".join(f"{pid}: {wid[:12]}" for wid, pid in sorted(g["workers"].items(), key=lambda w: w[1] or 0))
        lines.append(f"| {name} | {typ} | {state} | {g['n']} | " + (f"{len(g['workers'])}: {ws}" if ws else "-") + " |")
    return "\n".join(lines)


def run_batch(jobs, out, *, workers=None, cpus_per_worker=1, gpus_per_worker=0, memory_per_worker_gb=None,
              address=None, force=False, progress=True, object_store_mb=256, on_row=None, timeline=None,
              dashboard=True, ray_summary=False) -> list:
    """Run ``jobs`` (list of :class:`Job`) into ``out``; returns one summary row per job (also
    written to ``out/batch_summary.csv`` and ``.json``). Uses the Ray session already initialised
    in this process if any (left running), else starts a local one (or joins ``address``) and shuts
    it down at the end. ``force``: rerun videos already done. ``timeline``: write Ray's task timeline
    (chrome://tracing JSON: one ``run`` task per video on its worker) to this file. ``dashboard``: a
    local Ray starts with its dashboard when ``ray[default]`` is installed (False: never).
    ``ray_summary``: before Ray shuts down, print :func:`ray_task_summary` (Ray's state API: the
    tasks, their states and workers) to stdout; a callable receives the text instead."""
    import ray
    from tqdm import tqdm
    jobs = _unique_names(list(jobs))
    if not jobs:
        raise BatchError("no videos to process")
    for j in jobs:
        if not os.path.isfile(j.video):
            raise BatchError(f"{j.video}: no such video file")
    _precheck(jobs)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    rows = {j.name: None for j in jobs}
    todo = deque()
    for j in jobs:
        key = input_key(j)
        m = read_marker(os.path.join(out, j.name))
        if not force and m and m.get("key") == key:
            rows[j.name] = _row(j, "skipped", m.get("summary") or {}, worker="earlier run")
        else:
            todo.append((j, key))
    started = False
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="videos", unit="video", disable=not progress)
    stop = _StopOnSignal()
    actors, inflight = [], {}
    handlers = _signal_handlers()   # ray.init replaces SIGTERM's; given back after ray.shutdown
    try:
        if todo:
            started, url = _init_ray(address, None if address else os.cpu_count(), None, object_store_mb, dashboard)
            if url and progress:
                print(f"posebert-batch: Ray dashboard at http://{url} while the batch runs (tasks also with "
                      f"'ray list tasks --address {ray.get_runtime_context().gcs_address}')", file=sys.stderr)
        # Installed after ray.init (which sets its own SIGTERM handler): a signal only sets a flag, checked
        # between waits. (An exception raised by a handler inside ray.wait comes out as SystemExit(1).)
        with stop:
            if todo:
                gpus = gpus_per_worker or 0
                res = ray.cluster_resources()
                if not address:   # a worker asking more than the machine has would wait forever
                    for what, need in (("CPU", cpus_per_worker), ("GPU", gpus)):
                        if need > res.get(what, 0):
                            raise BatchError(f"a worker needs {need:g} {what}(s) but this machine has "
                                             f"{res.get(what, 0):g} (--cpus-per-worker / --gpus-per-worker)")
                if workers is None:
                    workers = int(res.get("GPU", 0) // gpus) if gpus else int(res.get("CPU", 1) // cpus_per_worker)
                workers = max(1, min(int(workers), len(todo)))
                opts = dict(num_cpus=cpus_per_worker, num_gpus=gpus, max_restarts=0)
                if memory_per_worker_gb:
                    opts["memory"] = int(memory_per_worker_gb * (1 << 30))
                Actor = ray.remote(**opts)(_Worker)
                device = "cuda" if gpus else "cpu"

                def new_actor():
                    return Actor.remote(device, max(1, int(cpus_per_worker)))

                idle = [new_actor() for _ in range(workers)]
                actors = list(idle)
                frames = 0
                while (todo or inflight) and not stop.signum:
                    while idle and todo:
                        a = idle.pop()
                        j, key = todo.popleft()
                        inflight[a.run.remote(j, os.path.join(out, j.name), key)] = (a, j, key)
                    ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                    for ref in ready:
                        a, j, _ = inflight.pop(ref)
                        try:
                            row = ray.get(ref)
                        except ray.exceptions.RayActorError as e:   # the worker died (OOM kill, crash)
                            row = _row(j, "failed", error=f"worker died: {_first_line(e)}")
                            actors.remove(a)
                            a = new_actor()
                            actors.append(a)
                        except ray.exceptions.RayTaskError as e:
                            row = _row(j, "failed", error=f"internal error: {_first_line(e)}")
                        idle.append(a)
                        rows[j.name] = row
                        frames += int(row["frames"] or 0)
                        if on_row:
                            on_row(row)
                        bar.update(1)
                        bar.set_postfix(frames=frames, failed=sum(r is not None and r["status"] == "failed"
                                                                  for r in rows.values()))
                if stop.signum:
                    _cancel(inflight, rows, out)
    finally:
        bar.close()
        if timeline and actors:
            try:
                ray.timeline(filename=timeline)
            except Exception as e:   # a report, never a reason to fail the batch
                print(f"posebert-batch: warning: no Ray timeline ({e})", file=sys.stderr)
        if ray_summary and actors and not stop.signum:   # a signal asks for a prompt exit
            try:
                text = ray_task_summary(address)
                if callable(ray_summary):
                    ray_summary(text)
                else:
                    print(text, flush=True)
            except Exception as e:   # a report, never a reason to fail the batch
                print(f"posebert-batch: warning: no Ray task summary: Ray's state API is unavailable "
                      f"({_first_line(e)[:200]}); it needs Ray's dashboard (pip install 'ray[default]')",
                      file=sys.stderr)
        for a in actors:
            try:
                ray.kill(a)
            except Exception:
                pass
        if started:
            ray.shutdown()
            _restore_signal_handlers(handlers)
    for j, _ in list(todo):
        rows[j.name] = _row(j, "pending", error="not started: the batch was interrupted")
    for a, j, key in inflight.values():
        m = read_marker(os.path.join(out, j.name))
        if m and m.get("key") == key:
            rows[j.name] = _row(j, "done", m.get("summary") or {})
        elif rows[j.name] is None:
            rows[j.name] = _row(j, "interrupted", error="the batch was interrupted while this video ran")
    table = [rows[j.name] for j in jobs]
    write_summary(out, table, time.time() - t0)
    if stop.signum == signal.SIGINT:
        raise KeyboardInterrupt
    if stop.signum:
        from .pipeline_outputs import Terminated
        raise Terminated(stop.signum)
    return table


def _signal_handlers() -> dict:
    import threading
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}


def _restore_signal_handlers(handlers):
    for s, h in handlers.items():
        signal.signal(s, h if h is not None else signal.SIG_DFL)


class _StopOnSignal:
    """SIGTERM/SIGHUP/SIGINT set ``signum`` (the batch stops submitting, cancels what runs and writes
    its summary); the previous handlers come back on exit. Main thread only."""

    def __init__(self):
        self.signum, self.previous = 0, {}

    def __enter__(self):
        import threading
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                self.previous[s] = signal.getsignal(s)
                signal.signal(s, self._handler)
        return self

    def _handler(self, signum, frame):
        self.signum = self.signum or signum

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _cancel(inflight, rows, out):
    """Cancel the running videos (KeyboardInterrupt in the task: the Pipeline removes its staging
    folder) and wait a little for them; a video that finished meanwhile (its marker written) is done."""
    import ray
    for ref in inflight:
        try:
            ray.cancel(ref)
        except Exception:
            pass
    ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=10)
    for ref in ready:
        a, j, key = inflight.pop(ref)
        try:
            row = ray.get(ref)
        except Exception:
            m = read_marker(os.path.join(out, j.name))
            row = _row(j, "done", m.get("summary") or {}) if m and m.get("key") == key else \
                _row(j, "interrupted", error="the batch was interrupted while this video ran")
        rows[j.name] = row


def _first_line(e):
    text = str(getattr(e, "cause", None) or e).strip().splitlines()
    return text[-1] if text else type(e).__name__


def _precheck(jobs):
    """Refuse bad settings (unknown preset, baseline, ...) before any video runs."""
    from .pipeline import PipelineError
    seen = set()
    for j in jobs:
        sig = (j.estimator, json.dumps(j.options, sort_keys=True, default=str))
        if sig in seen:
            continue
        seen.add(sig)
        try:   # the device is the workers' (a GPU cluster's driver may have none)
            p = dataclasses.replace(j, options={k: v for k, v in j.options.items() if k != "device"}).pipeline()
        except TypeError as e:
            raise BatchError(f"{j.video}: bad options {j.options}: {e}") from None
        if not p.online:   # the online check loads the models: leave it to the workers
            try:
                p.check()
            except PipelineError as e:
                raise BatchError(f"{j.video}: {e}") from None


def write_summary(out, rows, seconds):
    """``out/batch_summary.csv`` and ``.json`` (written through ``.part`` files)."""
    from .pipeline_outputs import write_json
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed", "interrupted", "pending")}
    frames = sum(int(r["frames"] or 0) for r in rows if r["status"] == "done")
    write_json(os.path.join(out, SUMMARY + ".json"), {"videos": rows, "counts": counts, "seconds": round(seconds, 2),
                                                      "frames_done": frames})
    tmp = os.path.join(out, SUMMARY + ".csv.part")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, os.path.join(out, SUMMARY + ".csv"))


def format_table(rows) -> str:
    cols = ("name", "status", "frames", "people", "detect_s", "track_s", "refine_s", "write_results_s", "render_s",
            "total_s", "error")
    lines = ["| " + " | ".join(c.removesuffix("_s") + (" s" if c.endswith("_s") else "") for c in cols) + " |",
             "|" + "---|" * len(cols)]
    for r in rows:
        cells = [str(r.get(c, "")) for c in cols]
        cells[-1] = cells[-1][:120]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- command line ------------------------------------------------------------------------------

EPILOG = """manifest (CSV header or JSONL keys): video, estimator, estimator_output, options (JSON object of
settings: max_frames, render, plots, bvh, side_by_side, skeleton_only, preset, device, baselines, imgsz,
online, predict_ahead, json_arrays, ...), name (output folder); CSV columns may also be settings themselves.
  video,estimator,estimator_output,options
  clips/a.mp4,alphapose,clips/a.json,"{""max_frames"": 300}"

outputs: OUT/<name>/ as posebert-refine writes them plus .posebert-batch-done.json (the inputs' hash);
OUT/batch_summary.csv and .json: status (done, skipped, failed, interrupted, pending), frames, people,
seconds per stage, error. A rerun skips videos whose hash matches and retries the rest.

exit codes: 0 every video done or skipped; 1 some failed (see the summary); 2 bad input or usage;
130 interrupted (Ctrl-C), 143 terminated (SIGTERM): finished videos are kept, rerun to resume.

Ray: a local instance (usage stats off, nothing downloaded; its dashboard on 127.0.0.1 when ray[default]
is installed, unless --no-dashboard) unless --address joins a running cluster, whose nodes need
posebert-plug installed and the input/output paths mounted. --ray-summary prints Ray's own table of
the tasks (ray.util.state: task, state, count, workers) before Ray shuts down.
"""


def build_parser():
    import adapters
    from .pipeline import BASELINES
    ap = argparse.ArgumentParser(prog="posebert-batch", description="Refine many videos with PoseBERT on Ray, "
                                 "one folder of posebert-refine outputs per video, resumable.", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="a folder of videos, or a manifest (.csv / .jsonl)")
    ap.add_argument("--out", default="out/batch", help="output folder (default out/batch)")
    ap.add_argument("--estimator", default="yolo", help=f"default estimator: {', '.join(adapters.available())}")
    ap.add_argument("--estimator-output", metavar="TEMPLATE", help="folder input: each video's estimator file, "
                    "relative to its folder, with {stem} / {name}, e.g. '{stem}.alphapose.json'")
    ap.add_argument("--preset", help="PoseBERT preset (default auto)")
    ap.add_argument("--device", help="auto, cpu or cuda (default: cuda on GPU workers, else cpu)")
    ap.add_argument("--baseline", nargs="+", choices=BASELINES, help="baselines (default savgol)")
    ap.add_argument("--imgsz", type=int, help="YOLO input size (default: the video's own size, at most 960)")
    ap.add_argument("--max-frames", type=int, help="process only the first N frames of each video")
    ap.add_argument("--no-render", action="store_true", help="skip the videos")
    ap.add_argument("--skeleton-only", action="store_true", help="draw skeletons instead of meshes")
    ap.add_argument("--no-side-by-side", action="store_true", help="skip the comparison video")
    ap.add_argument("--no-plots", action="store_true", help="skip jitter_and_gaps.png")
    ap.add_argument("--no-bvh", action="store_true", help="skip the BVH files")
    ap.add_argument("--json-arrays", choices=["base64", "lists"], help="results.json float arrays: base64 (default, "
                    "exact float32) or lists (5 decimals, readable)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any other Pipeline setting for every video (value parsed as JSON when it is)")
    ap.add_argument("--workers", type=int, help="videos at once (default: cluster CPUs / --cpus-per-worker, "
                    "or GPUs / --gpus-per-worker)")
    ap.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs (and torch threads) per worker (default 1)")
    ap.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per worker (default 0: CPU workers)")
    ap.add_argument("--memory-per-worker", type=float, metavar="GB", help="memory Ray reserves per worker")
    ap.add_argument("--address", help="join this Ray cluster (e.g. auto or ray://head:10001); default: local Ray")
    ap.add_argument("--force", action="store_true", help="rerun videos already done")
    ap.add_argument("--timeline", metavar="FILE", help="write Ray's task timeline (chrome://tracing / Perfetto JSON: "
                    "each video's task on its worker) to FILE")
    ap.add_argument("--ray-summary", action="store_true", help="print Ray's own table of the tasks (state API: "
                    "task, state, count, workers) before Ray shuts down; needs ray[default]")
    ap.add_argument("--no-dashboard", action="store_true", help="start the local Ray without its dashboard (and "
                    "state API) even when ray[default] is installed")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def _options_from_args(args, ap) -> dict:
    o = {}
    for k in ("preset", "device", "imgsz", "max_frames", "json_arrays"):
        if getattr(args, k) is not None:
            o[k] = getattr(args, k)
    if args.baseline:
        o["baselines"] = tuple(args.baseline)
    for flag, key in (("no_render", "render"), ("no_side_by_side", "side_by_side"), ("no_plots", "plots"),
                      ("no_bvh", "bvh")):
        if getattr(args, flag):
            o[key] = False
    if args.skeleton_only:
        o["skeleton_only"] = True
    for kv in args.set:
        k, sep, v = kv.partition("=")
        if not sep:
            ap.error(f"--set {kv}: expected KEY=VALUE")
        o[k.strip().replace("-", "_")] = _cell(v)
    return o


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    from .pipeline_outputs import Terminated
    try:
        opts = _check_options(_options_from_args(args, ap), "options")
        if os.path.isdir(args.input):
            jobs = jobs_from_folder(args.input, args.estimator, args.estimator_output, opts)
        elif os.path.isfile(args.input):
            jobs = jobs_from_manifest(args.input, args.estimator, opts)
        else:
            raise BatchError(f"{args.input}: no such folder or manifest")
        if args.workers is not None and args.workers < 1:
            raise BatchError("--workers must be at least 1")
        rows = run_batch(jobs, args.out, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                         gpus_per_worker=args.gpus_per_worker, memory_per_worker_gb=args.memory_per_worker,
                         address=args.address, force=args.force, progress=not args.quiet, timeline=args.timeline,
                         dashboard=not args.no_dashboard, ray_summary=args.ray_summary)
    except BatchError as e:
        print(f"posebert-batch: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"posebert-batch: interrupted; finished videos are kept in {args.out} (rerun to resume)",
              file=sys.stderr)
        return 130
    except Terminated as e:
        print(f"posebert-batch: terminated by signal {e.signum}; finished videos are kept in {args.out} "
              "(rerun to resume)", file=sys.stderr)
        return e.code
    print(format_table(rows))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed")}
    print(f"{counts['done']} done, {counts['skipped']} skipped (done earlier), {counts['failed']} failed; "
          f"summary in {os.path.join(os.path.abspath(args.out), SUMMARY + '.csv')} and .json")
    return EXIT_FAILED if counts["failed"] else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
