"""Issue 22: posebert-batch on Ray, resumable per video.

Clips are cut from the bundled examples/vtest_clip.mp4 with their saved YOLO11n detections
(tests/data, AlphaPose JSON), so no detector runs here. Ray starts cost seconds each, so the module
runs one scenario (the ``resumed`` fixture) that the tests then check: ``posebert-batch`` as a
command, with its own Ray, killed with SIGTERM after its first finished video; then the same batch
resumed in this process on the module's Ray (started meanwhile, with its dashboard when
``ray[default]`` is installed, so Ray's state API is checked too); then a rerun with one video's
options changed.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'posebert-plug[batch]')")

from posebert_plug.batch import (DONE, RUN_TASK, Job, dashboard_available, input_key, jobs_from_folder,  # noqa: E402
                                 jobs_from_manifest, run_batch)
from posebert_plug.types import load_tracks  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIP = os.path.join(ROOT, "examples", "vtest_clip.mp4")
DETS = os.path.join(ROOT, "tests", "data", "vtest_clip_yolo11n_48frames.alphapose.json")
OPTS = {"render": False, "plots": False}


def cut_clips(folder, n=3, length=12):
    """``n`` clips of ``length`` frames from the bundled clip, each with its own AlphaPose file."""
    from adapters.video import VideoWriter, iter_frames, probe
    v = probe(CLIP)
    rows = json.load(open(DETS))
    os.makedirs(folder, exist_ok=True)
    for c in range(n):
        s = c * length
        with VideoWriter(os.path.join(folder, f"clip{c}.mp4"), v.width, v.height, v.fps) as w:
            for _, img in iter_frames(CLIP, start=s, stop=s + length):
                w.write(img)
        mine = [dict(r, image_id=f"{int(r['image_id'].split('.')[0]) - s}.jpg") for r in rows
                if s <= int(r["image_id"].split(".")[0]) < s + length]
        with open(os.path.join(folder, f"clip{c}.alphapose.json"), "w") as f:
            json.dump(mine, f)
    return folder


def _ray_processes(tmp):
    """PIDs of processes whose command line mentions the Ray temp folder ``tmp``."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if tmp.encode() in f.read():
                        out.append(int(pid))
            except OSError:
                pass
    return out


def _wait_gone(tmp, seconds=20):
    t = time.time()
    while _ray_processes(tmp) and time.time() - t < seconds:
        time.sleep(0.5)
    return _ray_processes(tmp)


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (with its dashboard when ray[default] imports: the state API);
    afterwards none of its processes may remain."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")   # short: Ray's socket paths have a length limit
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    ray.init(num_cpus=2, include_dashboard=dashboard_available(), log_to_driver=False, object_store_memory=100 << 20,
             _temp_dir=tmp, configure_logging=True, logging_level="ERROR")
    assert _ray_processes(tmp), "the check below must see Ray's own processes"
    yield tmp
    ray.shutdown()
    for s, h in handlers.items():   # ray.init installed its own SIGTERM handler in this process
        signal.signal(s, h)
    left = _wait_gone(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    assert not left, f"Ray processes left after shutdown: {left}"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = cut_clips(str(tmp_path_factory.mktemp("clips")))
    with open(os.path.join(folder, "broken.mp4"), "wb") as f:   # a failing video: not a video at all
        f.write(b"this is not a video" * 100)
    with open(os.path.join(folder, "broken.alphapose.json"), "w") as f:
        f.write("[]")
    return folder


NAMES = ["broken", "clip0", "clip1", "clip2"]


def _jobs(folder):
    return jobs_from_folder(folder, "alphapose", "{stem}.alphapose.json", OPTS)


def _results(folder):
    return load_tracks(os.path.join(folder, "results.npz"))


def _same_tracks(a, b):
    assert [t.track_id for t in a] == [t.track_id for t in b] and a
    for x, y in zip(a, b):
        assert np.array_equal(x.frames, y.frames) and np.array_equal(x.observed, y.observed) and x.preset == y.preset
        for k in ("rotmats", "transl", "joints"):
            np.testing.assert_allclose(getattr(x, k), getattr(y, k), atol=1e-5, err_msg=k)


def _batch_cmd(clips, out):
    return [sys.executable, "-m", "posebert_plug.batch", clips, "--estimator", "alphapose", "--estimator-output",
            "{stem}.alphapose.json", "--no-render", "--no-plots", "--workers", "1", "--out", out, "--quiet",
            "--no-dashboard"]


def _partials(out):
    """Videos whose output folder holds a staging folder (.partial-<pid>)."""
    return [n for n in NAMES if os.path.isdir(os.path.join(out, n))
            and [f for f in os.listdir(os.path.join(out, n)) if f.startswith(".partial-")]]


def _stamps(out, names):
    return {n: os.stat(os.path.join(out, n, "results.npz")).st_mtime_ns for n in names}


@pytest.fixture(scope="module")
def resumed(request, clips, tmp_path_factory):
    """posebert-batch (a process with its own Ray, one worker) gets SIGTERM once its first video is
    done; then run_batch resumes the same folder here, on the module's Ray. While the command runs
    (a thread watches for its first done marker and sends the signal), this process starts the
    module's Ray and makes the single-video reference runs of clip0 and clip2."""
    from posebert_plug.pipeline import Pipeline
    out = str(tmp_path_factory.mktemp("batch") / "out")
    tmp = tempfile.mkdtemp(prefix="rk", dir="/tmp")
    env = dict(os.environ, RAY_TMPDIR=tmp, RAY_USAGE_STATS_ENABLED="0")
    k = {"out": out, "ray_seen": False}
    p = subprocess.Popen(_batch_cmd(clips, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def kill_after_first_video():   # a slow first video would make "halfway" flaky: wait for the first marker
        t = time.time()
        while time.time() - t < 150 and p.poll() is None:
            k["ray_seen"] = k["ray_seen"] or bool(_ray_processes(tmp))
            if any(os.path.exists(os.path.join(out, n, DONE)) for n in NAMES):
                break
            time.sleep(0.05)
        k["alive_at_kill"] = p.poll() is None
        p.send_signal(signal.SIGTERM)

    watcher = threading.Thread(target=kill_after_first_video, daemon=True)
    watcher.start()
    try:
        request.getfixturevalue("ray_session")
        k["refs"] = {}
        for name in ("clip0", "clip2"):
            ref = tmp_path_factory.mktemp(f"ref_{name}")
            Pipeline(estimator="alphapose", estimator_output=os.path.join(clips, f"{name}.alphapose.json"),
                     progress=False, **OPTS).run(os.path.join(clips, f"{name}.mp4"), ref)
            k["refs"][name] = ref
        watcher.join(160)
        _, k["stderr"] = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    k.update(code=p.returncode, ray_left=_wait_gone(tmp))
    shutil.rmtree(tmp, ignore_errors=True)
    assert os.path.exists(os.path.join(out, "batch_summary.json")), (p.returncode, k.get("stderr", "")[-2000:])
    k["killed_summary"] = json.load(open(os.path.join(out, "batch_summary.json")))
    k["markers"] = sorted(n for n in NAMES if os.path.exists(os.path.join(out, n, DONE)))
    k["partials"] = _partials(out)
    status = {r["name"]: r["status"] for r in k["killed_summary"]["videos"]}
    k["finished"] = sorted(n for n, s in status.items() if s == "done")
    k["stamps"] = _stamps(out, k["finished"])
    # Resume here, on the module's Ray; Ray's state API reports the tasks before the batch ends.
    reports = []
    handler = signal.getsignal(signal.SIGTERM)
    k["rows"] = run_batch(_jobs(clips), out, workers=2, progress=False, ray_summary=reports.append)
    k["handler_kept"] = signal.getsignal(signal.SIGTERM) is handler    # the batch's own handlers are gone
    k["ray_report"] = reports
    k["stamps_after"] = _stamps(out, k["finished"])
    k["partials_after"] = _partials(out)
    return k


def test_sigterm_then_rerun_resumes_without_redoing(resumed):
    """SIGTERM halfway: finished videos are kept (markers), the running one leaves no staging folder,
    no Ray process survives; the rerun does only the rest."""
    k = resumed
    assert k["alive_at_kill"], k["stderr"][-2000:]
    assert k["code"] == 143, k["stderr"][-2000:]
    assert k["ray_seen"], "the batch's Ray processes were never seen: the leftover check below would be vacuous"
    assert "terminated by signal 15" in k["stderr"]
    assert not k["ray_left"], f"Ray processes left after SIGTERM: {k['ray_left']}"
    status = {r["name"]: r["status"] for r in k["killed_summary"]["videos"]}
    assert k["finished"] and status["clip2"] in ("pending", "interrupted"), status
    assert k["markers"] == k["finished"] and not k["partials"]
    st = {r["name"]: r["status"] for r in k["rows"]}
    assert all(st[n] == "skipped" for n in k["finished"]) and st["broken"] == "failed"
    assert all(st[f"clip{c}"] in ("done", "skipped") for c in range(3)) and "done" in st.values()
    assert k["stamps_after"] == k["stamps"]          # nothing finished was rewritten
    assert not k["partials_after"]


def test_batch_runs_skips_retries_and_matches_single_video_runs(resumed, clips, tmp_path):
    out, rows = resumed["out"], resumed["rows"]
    assert [r["name"] for r in rows] == NAMES and resumed["handler_kept"]
    by = {r["name"]: r for r in rows}
    # One failing video is reported and does not stop the others.
    assert by["broken"]["status"] == "failed" and "exit 2" in by["broken"]["error"]
    assert all(by[f"clip{c}"]["frames"] == 12 and by[f"clip{c}"]["people"] >= 2 for c in range(3)), rows
    assert all(isinstance(by[f"clip{c}"]["refine_s"], float) for c in range(3))
    summary = json.load(open(os.path.join(out, "batch_summary.json")))
    done = sum(r["status"] == "done" for r in rows)
    assert summary["counts"] == {"done": done, "skipped": 3 - done, "failed": 1, "interrupted": 0, "pending": 0}
    csv_lines = open(os.path.join(out, "batch_summary.csv")).read().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("name,video,status,frames,people")
    assert not os.path.exists(os.path.join(out, "broken", DONE))
    # Outputs equal a single-video Pipeline run (same files, same tracks): clip0, done by the killed
    # command, and clip2, done by the resumed batch.
    for name, ref in resumed["refs"].items():
        mine = os.path.join(out, name)
        assert sorted(os.listdir(ref)) == sorted(set(os.listdir(mine)) - {DONE})
        _same_tracks(_results(mine), _results(ref))
        s1, s2 = json.load(open(os.path.join(mine, "summary.json"))), json.load(open(ref / "summary.json"))
        assert s1["tracks"] == s2["tracks"] and s1["frames"] == s2["frames"]

    # A rerun skips every finished video (nothing rewritten), retries the failed one and reruns a video
    # whose inputs changed (here its options; any estimator file change alters the key too).
    stamps = _stamps(out, ["clip0", "clip1", "clip2"])
    jobs2 = _jobs(clips)
    jobs2[3].options = {**OPTS, "baselines": ("nearest",)}
    rows2 = run_batch(jobs2, out, workers=1, progress=False)
    assert [r["status"] for r in rows2] == ["failed", "skipped", "skipped", "done"]
    assert _stamps(out, ["clip0", "clip1"]) == {n: stamps[n] for n in ("clip0", "clip1")}
    assert os.stat(os.path.join(out, "clip2", "results.npz")).st_mtime_ns != stamps["clip2"]
    assert rows2[1]["frames"] == 12 and rows2[1]["refine_s"] == by["clip0"]["refine_s"]
    changed = tmp_path / "clip1_fewer.json"
    with open(os.path.join(clips, "clip1.alphapose.json")) as f:
        changed.write_text(json.dumps(json.load(f)[:20]))
    jobs = _jobs(clips)
    assert input_key(Job(jobs[2].video, "alphapose", str(changed), OPTS)) != input_key(jobs[2])


def test_ray_state_api_lists_the_batch_tasks(resumed):
    """Ray's own state API (ray.util.state.list_tasks, served by its dashboard) saw one finished
    _Worker.run task per video the resumed batch ran, on its workers."""
    if not dashboard_available():
        pytest.skip("ray[default] is not installed: Ray has no dashboard, hence no state API")
    ran = [r for r in resumed["rows"] if r["status"] in ("done", "failed")]
    (report,) = resumed["ray_report"]
    lines = [ln for ln in report.splitlines() if ln.startswith(f"| {RUN_TASK} |")]
    assert len(lines) == 1, report            # every task of the videos reached one state
    _, name, typ, state, count, workers, _ = lines[0].split("|")
    assert (typ.strip(), state.strip(), int(count)) == ("ACTOR_TASK", "FINISHED", len(ran)), report
    pids = {int(w.split(":")[0]) for w in workers.split(":", 1)[1].split(",")}
    assert int(workers.split(":")[0]) == len(pids) and 1 <= len(pids) <= 2, report
    assert pids >= {int(r["worker"].split(":")[1]) for r in ran}, (pids, ran)   # the pids run_one reported


def test_manifest_csv_and_jsonl(clips, tmp_path):
    csv_path = tmp_path / "m.csv"
    rel = os.path.relpath(clips, tmp_path)
    csv_path.write_text("video,estimator,estimator_output,options,max_frames\n"
                        f"{rel}/clip0.mp4,alphapose,{rel}/clip0.alphapose.json,\"{{\"\"render\"\": false}}\",6\n")
    (j,) = jobs_from_manifest(str(csv_path))
    assert os.path.samefile(j.video, os.path.join(clips, "clip0.mp4")) and j.estimator == "alphapose"
    assert j.options == {"render": False, "max_frames": 6} and j.name == f"{rel}/clip0".replace("/", "__")
    jl = tmp_path / "m.jsonl"
    jl.write_text(json.dumps({"video": os.path.join(clips, "clip2.mp4"), "estimator": "alphapose", "name": "two",
                              "estimator_output": os.path.join(clips, "clip2.alphapose.json"),
                              "options": {"baselines": ["nearest"]}}) + "\n# comment\n")
    (k,) = jobs_from_manifest(str(jl), options={"render": False})
    assert k.name == "two" and k.options == {"render": False, "baselines": ("nearest",)}
    from posebert_plug.batch import BatchError, main
    jl.write_text(json.dumps({"video": "a.mp4", "options": {"max_frame": 3}}) + "\n")
    with pytest.raises(BatchError, match="unknown option.*max_frame"):
        jobs_from_manifest(str(jl))
    assert main([str(jl), "--out", str(tmp_path / "o"), "--quiet"]) == 2


def test_job_defaults_and_key_ignores_file_names(clips, tmp_path):
    j = Job(os.path.join(clips, "clip0.mp4"), "alphapose", os.path.join(clips, "clip0.alphapose.json"), dict(OPTS))
    copy = tmp_path / "renamed.mp4"
    shutil.copy(j.video, copy)
    k = Job(str(copy), "alphapose", j.estimator_output, dict(OPTS))
    assert input_key(j) == input_key(k)                     # content, not the path
    assert input_key(j) != input_key(Job(j.video, "alphapose", j.estimator_output, {**OPTS, "preset": "kp2d-coco17"}))
