"""Issue 22: posebert-batch on Ray, resumable per video.

Clips are cut from the bundled examples/vtest_clip.mp4 with their saved YOLO11n detections
(tests/data, AlphaPose JSON), so no detector runs here. One local Ray session serves the module
(its start costs seconds); the kill-and-resume test runs the command in its own process.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'posebert-plug[batch]')")

from posebert_plug.batch import DONE, Job, input_key, jobs_from_folder, jobs_from_manifest, run_batch  # noqa: E402
from posebert_plug.types import load_tracks  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIP = os.path.join(ROOT, "examples", "vtest_clip.mp4")
DETS = os.path.join(ROOT, "tests", "data", "vtest_clip_yolo11n_48frames.alphapose.json")
OPTS = {"render": False, "plots": False}


def cut_clips(folder, n=4, length=12):
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
    """One local Ray for the module; afterwards none of its processes may remain."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")   # short: Ray's socket paths have a length limit
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 << 20,
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


def test_batch_runs_skips_retries_and_matches_single_video_runs(ray_session, clips, tmp_path):
    from posebert_plug.pipeline import Pipeline
    out = str(tmp_path / "out")
    jobs = _jobs(clips)
    assert [j.name for j in jobs] == ["broken", "clip0", "clip1", "clip2", "clip3"]
    handler = signal.getsignal(signal.SIGTERM)
    rows = run_batch(jobs, out, workers=2, progress=False)
    assert signal.getsignal(signal.SIGTERM) is handler     # the batch's own handlers are gone
    by = {r["name"]: r for r in rows}
    # One failing video is reported and does not stop the others.
    assert by["broken"]["status"] == "failed" and "exit 2" in by["broken"]["error"]
    assert all(by[f"clip{c}"]["status"] == "done" for c in range(4)), rows
    assert all(by[f"clip{c}"]["frames"] == 12 and by[f"clip{c}"]["people"] >= 2 for c in range(4))
    assert all(isinstance(by[f"clip{c}"]["refine_s"], float) for c in range(4))
    summary = json.load(open(os.path.join(out, "batch_summary.json")))
    assert summary["counts"] == {"done": 4, "skipped": 0, "failed": 1, "interrupted": 0, "pending": 0}
    csv_lines = open(os.path.join(out, "batch_summary.csv")).read().splitlines()
    assert len(csv_lines) == 6 and csv_lines[0].startswith("name,video,status,frames,people")
    assert not os.path.exists(os.path.join(out, "broken", DONE))
    # Outputs equal a single-video Pipeline run (same files, same tracks).
    ref = tmp_path / "ref"
    Pipeline(estimator="alphapose", estimator_output=os.path.join(clips, "clip1.alphapose.json"), progress=False,
             **OPTS).run(os.path.join(clips, "clip1.mp4"), ref)
    mine = os.path.join(out, "clip1")
    assert sorted(os.listdir(ref)) == sorted(set(os.listdir(mine)) - {DONE})
    _same_tracks(_results(mine), _results(ref))
    s1, s2 = json.load(open(os.path.join(mine, "summary.json"))), json.load(open(ref / "summary.json"))
    assert s1["tracks"] == s2["tracks"] and s1["frames"] == s2["frames"]

    # A rerun skips every finished video (nothing rewritten), retries the failed one and reruns a video
    # whose inputs changed (here its options; any estimator file change alters the key too).
    stamp = os.stat(os.path.join(mine, "results.npz")).st_mtime_ns
    stamp2 = os.stat(os.path.join(out, "clip2", "results.npz")).st_mtime_ns
    jobs2 = _jobs(clips)
    jobs2[3].options = {**OPTS, "baselines": ("nearest",)}
    rows2 = run_batch(jobs2, out, workers=2, progress=False)
    assert [r["status"] for r in rows2] == ["failed", "skipped", "skipped", "done", "skipped"]
    assert os.stat(os.path.join(mine, "results.npz")).st_mtime_ns == stamp
    assert os.stat(os.path.join(out, "clip2", "results.npz")).st_mtime_ns != stamp2
    assert rows2[2]["frames"] == 12 and rows2[2]["refine_s"] == by["clip1"]["refine_s"]
    changed = tmp_path / "clip1_fewer.json"
    with open(os.path.join(clips, "clip1.alphapose.json")) as f:
        changed.write_text(json.dumps(json.load(f)[:20]))
    assert input_key(Job(jobs[2].video, "alphapose", str(changed), OPTS)) != input_key(jobs[2])


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


def _batch_cmd(clips, out):
    return [sys.executable, "-m", "posebert_plug.batch", clips, "--estimator", "alphapose", "--estimator-output",
            "{stem}.alphapose.json", "--no-render", "--no-plots", "--workers", "1", "--out", out, "--quiet"]


def test_sigterm_then_rerun_resumes_without_redoing(ray_session, clips, tmp_path):
    """SIGTERM halfway: finished videos are kept (markers), the running one leaves no staging folder,
    no Ray process survives; the rerun does only the rest."""
    out = str(tmp_path / "out")
    tmp = tempfile.mkdtemp(prefix="rk", dir="/tmp")
    env = dict(os.environ, RAY_TMPDIR=tmp, RAY_USAGE_STATS_ENABLED="0")
    # A slow first video would make "halfway" flaky: wait for the first marker, then kill.
    p = subprocess.Popen(_batch_cmd(clips, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t, seen = time.time(), False
        while time.time() - t < 120 and p.poll() is None:
            seen = seen or bool(_ray_processes(tmp))
            if any(os.path.exists(os.path.join(out, n, DONE)) for n in ("broken", "clip0", "clip1")):
                break
            time.sleep(0.1)
        assert p.poll() is None, p.communicate()[1][-2000:]
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 143, err[-2000:]
    assert seen, "the batch's Ray processes were never seen: the leftover check below would be vacuous"
    assert "terminated by signal 15" in err
    left = _wait_gone(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    assert not left, f"Ray processes left after SIGTERM: {left}"
    summary = json.load(open(os.path.join(out, "batch_summary.json")))
    status = {r["name"]: r["status"] for r in summary["videos"]}
    finished = sorted(n for n, s in status.items() if s == "done")
    assert finished and status["clip3"] in ("pending", "interrupted"), status
    assert sorted(n for n in status if os.path.exists(os.path.join(out, n, DONE))) == finished
    stamps = {n: os.stat(os.path.join(out, n, "results.npz")).st_mtime_ns for n in finished}
    # The rerun (in this process, on the module's Ray) finishes the rest and skips the finished ones.
    rows = run_batch(jobs_from_folder(clips, "alphapose", "{stem}.alphapose.json",
                                      {"render": False, "plots": False}), out, workers=2, progress=False)
    st = {r["name"]: r["status"] for r in rows}
    assert all(st[n] == "skipped" for n in finished) and st["broken"] == "failed"
    assert all(st[f"clip{c}"] in ("done", "skipped") for c in range(4)) and "done" in st.values()
    assert {n: os.stat(os.path.join(out, n, "results.npz")).st_mtime_ns for n in finished} == stamps
    for c in range(4):
        assert not [f for f in os.listdir(os.path.join(out, f"clip{c}")) if f.startswith(".partial-")]


def test_job_defaults_and_key_ignores_file_names(clips, tmp_path):
    j = Job(os.path.join(clips, "clip0.mp4"), "alphapose", os.path.join(clips, "clip0.alphapose.json"), dict(OPTS))
    copy = tmp_path / "renamed.mp4"
    shutil.copy(j.video, copy)
    k = Job(str(copy), "alphapose", j.estimator_output, dict(OPTS))
    assert input_key(j) == input_key(k)                     # content, not the path
    assert input_key(j) != input_key(Job(j.video, "alphapose", j.estimator_output, {**OPTS, "preset": "kp2d-coco17"}))
