"""Issue 22 bench: many videos, the sequential posebert-refine loop vs posebert-batch (Ray), on this machine.

    python bench/batch.py                         # all sections
    python bench/batch.py --sections batch --clips 20 --frames 24 --workers 2
    python bench/batch.py --sections refine yolo json

Sections
- ``batch``: cuts ``--clips`` clips of ``--frames`` frames from the shared real video
  (../shared/data/video/vtest.avi, 768x576, 10 fps) with PyAV, each with a saved estimator output:
  YOLO11n-pose runs once over the source frames (cached in WORK/detections.alphapose.json) and each
  clip's detections are written as AlphaPose JSON, which ``--estimator alphapose`` reads, so detection
  does not dominate and both sides read the same file. Then, in one run: the loop a user writes today
  (one ``posebert-refine`` process per clip) and ``posebert-batch`` over the folder (Ray, ``--workers``
  actors); videos/hour and refined track-frames/s of each and their ratio; every batch output equal
  to the loop's; Ray's task timeline (``--timeline``: one ``_Worker.run`` task per video) and Ray's
  own state API table of the tasks (``--ray-summary``: ray.util.state.list_tasks, printed by the batch
  before Ray shuts down; needs ray[default], else the reason is printed); then a
  batch killed with SIGTERM halfway and rerun: the finished clips are not redone and every output
  still equals the loop's. Renders are off unless ``--render`` (they cost the same in both).
- ``refine``: refine_tracks throughput per track-frame for 30 fps and 10 fps tracks (the model runs
  at 30 fps: a 10 fps track gets two masked frames between its frames, ``model_fps=30``, the default)
  vs refining the 10 fps track at its own rate (``model_fps=10``), and the accuracy of both (MPJPE
  of noisy SMPL input from held-out mocap, cache/val.npz or generated motion).
- ``yolo``: detection ms/frame with ultralytics' thread count (1 on 2 cores) vs the caller's.
- ``json``: results.json size vs its float32 payload, float arrays as base64 float32 (the default,
  bit-exact) and as 5-decimal lists (``--json-arrays lists``), over every clip's results of the batch
  section (or ``--results`` files).

The machine is shared: absolute figures move with its load (printed); ratios are measured within
one run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SOURCE = os.path.join(os.path.dirname(ROOT), "shared", "data", "video", "vtest.avi")


def load():
    return os.getloadavg()[0]


# ---- clips with saved detections -----------------------------------------------------------------

def detections(source, n_frames, work, imgsz=960):
    """YOLO11n-pose over the first ``n_frames`` frames of ``source``, as AlphaPose rows (cached)."""
    path = os.path.join(work, f"detections_{n_frames}_{imgsz}.alphapose.json")
    if os.path.exists(path):
        return json.load(open(path)), None
    for f in sorted(os.listdir(work)):    # a cache of more frames holds these too
        parts = f.split("_")
        if (f.startswith("detections_") and f.endswith(f"_{imgsz}.alphapose.json") and len(parts) == 3
                and parts[1].isdigit() and int(parts[1]) >= n_frames):
            return [r for r in json.load(open(os.path.join(work, f)))
                    if int(r["image_id"].split(".")[0]) < n_frames], None
    import adapters
    from adapters.video import probe
    t = time.time()
    rows = []
    for fd in adapters.get("yolo")(imgsz=imgsz).run(source, probe(source)):
        if fd.frame >= n_frames:
            break
        for d in fd.detections:
            kp = np.concatenate([d.kp2d, d.kp2d_conf[:, None]], 1)
            x0, y0, x1, y1 = (float(x) for x in d.box)
            rows.append({"image_id": f"{fd.frame}.jpg", "category_id": 1,
                         "keypoints": [round(float(x), 2) for x in kp.ravel()], "score": round(float(d.score), 4),
                         "box": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]})
    with open(path, "w") as f:
        json.dump(rows, f)
    return rows, time.time() - t


def cut_clips(source, rows, folder, n, length, stride):
    """``n`` clips of ``length`` frames every ``stride`` frames (PyAV), each with its detections."""
    from adapters.video import VideoWriter, iter_frames, probe
    v = probe(source)
    os.makedirs(folder, exist_ok=True)
    for c in range(n):
        s = c * stride
        with VideoWriter(os.path.join(folder, f"clip{c:02d}.mp4"), v.width, v.height, v.fps) as w:
            for _, img in iter_frames(source, start=s, stop=s + length):
                w.write(img)
        mine = [dict(r, image_id=f"{int(r['image_id'].split('.')[0]) - s}.jpg") for r in rows
                if s <= int(r["image_id"].split(".")[0]) < s + length]
        with open(os.path.join(folder, f"clip{c:02d}.alphapose.json"), "w") as f:
            json.dump(mine, f)
    return sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".mp4"))


def track_frames(folder):
    s = json.load(open(os.path.join(folder, "summary.json")))
    return sum(t["frames"] for t in s["tracks"])


def same_outputs(a, b):
    from posebert_plug.types import load_tracks
    ta, tb = load_tracks(os.path.join(a, "results.npz")), load_tracks(os.path.join(b, "results.npz"))
    if [t.track_id for t in ta] != [t.track_id for t in tb]:
        return False
    for x, y in zip(ta, tb):
        if not (np.array_equal(x.frames, y.frames) and np.array_equal(x.observed, y.observed)):
            return False
        for k in ("rotmats", "transl", "joints"):
            if not np.allclose(getattr(x, k), getattr(y, k), atol=1e-5):
                return False
    files = lambda d: sorted(f for f in os.listdir(d) if not f.startswith(".posebert-batch"))
    return files(a) == files(b)


def batch_cmd(clips, out, args, extra=()):
    cmd = [sys.executable, "-m", "posebert_plug.batch", clips, "--estimator", "alphapose", "--estimator-output",
           "{stem}.alphapose.json", "--out", out, "--quiet", "--workers", str(args.workers), *extra]
    return cmd + ([] if args.render else ["--no-render"])


def section_batch(args):
    if not os.path.exists(SOURCE):
        print(f"batch: skipped, {SOURCE} is absent (the shared real video)")
        return
    work = args.work
    os.makedirs(work, exist_ok=True)
    stride = args.frames      # consecutive clips: detection runs on as few source frames as possible
    rows, det_s = detections(SOURCE, (args.clips - 1) * stride + args.frames, work)
    clips = os.path.join(work, f"clips_{args.clips}x{args.frames}")
    if os.path.isdir(clips):
        shutil.rmtree(clips)
    names = cut_clips(SOURCE, rows, clips, args.clips, args.frames, stride)
    print(f"\n## batch: {len(names)} clips of {args.frames} frames from {os.path.basename(SOURCE)} "
          f"(estimator output: YOLO11n-pose detections saved as AlphaPose JSON"
          + (f", detected in {det_s:.0f} s" if det_s else ", cached") + f"); load {load():.1f} on {os.cpu_count()} CPUs")
    seq, bat = os.path.join(work, "seq"), os.path.join(work, "batch")
    for d in (seq, bat):
        shutil.rmtree(d, ignore_errors=True)
    # The loop a user writes today: one posebert-refine process per video.
    t = time.time()
    for n in names:
        cmd = [sys.executable, "-m", "posebert_plug.cli", os.path.join(clips, n + ".mp4"), "--estimator", "alphapose",
               "--estimator-output", os.path.join(clips, n + ".alphapose.json"), "--out", os.path.join(seq, n), "--quiet"]
        r = subprocess.run(cmd + ([] if args.render else ["--no-render"]), capture_output=True, text=True)
        if r.returncode != 0:
            print(f"  {n}: posebert-refine exit {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
    t_seq = time.time() - t
    load_seq = load()
    timeline = os.path.join(work, "timeline.json")
    t = time.time()
    r = subprocess.run(batch_cmd(clips, bat, args, ("--timeline", timeline, "--force", "--ray-summary")),
                       capture_output=True, text=True)
    t_bat = time.time() - t
    if r.returncode not in (0, 1):
        print(r.stderr[-2000:])
        return
    ok = [n for n in names if os.path.exists(os.path.join(seq, n, "summary.json"))]
    tf = sum(track_frames(os.path.join(seq, n)) for n in ok)
    equal = sum(same_outputs(os.path.join(seq, n), os.path.join(bat, n)) for n in ok)
    print("| run | seconds | videos/hour | track-frames/s |\n|---|---|---|---|")
    for name, s in ((f"sequential posebert-refine loop (load {load_seq:.1f})", t_seq),
                    (f"posebert-batch --workers {args.workers} (Ray start included; load {load():.1f})", t_bat)):
        print(f"| {name} | {s:.1f} | {3600 * len(ok) / s:.0f} | {tf / s:.1f} |")
    print(f"ratio batch/sequential: {t_seq / t_bat:.2f}x; {tf} refined track-frames in {len(ok)} videos; "
          f"outputs equal to the loop's: {equal}/{len(ok)}")
    summary = json.load(open(os.path.join(bat, "batch_summary.json")))
    stages = {}
    for row in summary["videos"]:
        for k in ("detect_s", "track_s", "refine_s", "write_results_s", "bvh_s", "plots_s", "render_s", "total_s"):
            if isinstance(row.get(k), (int, float)):
                stages[k] = stages.get(k, 0) + row[k]
    print("batch seconds per stage, summed over videos: " + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in stages.items()))
    ev = [e for e in json.load(open(timeline)) if e.get("cat") == "task::_Worker.run" and e.get("ph") == "X"]
    print(f"Ray task timeline ({timeline}, open in chrome://tracing or ui.perfetto.dev): {len(ev)} _Worker.run "
          f"tasks on {len({e['tid'] for e in ev})} workers, "
          f"{sum(e['dur'] for e in ev) / 1e6:.1f} task-seconds in {t_bat:.1f} s of wall time")
    # posebert-batch --ray-summary: Ray's state API (its dashboard's), queried before Ray shut down
    lines = r.stdout.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("Ray state API")), None)
    if start is None:
        why = [ln for ln in r.stderr.splitlines() if "Ray task summary" in ln]
        print("Ray state API: no table (" + (why[0] if why else "no reason printed") + ")")
    else:
        end = next((i for i in range(start + 1, len(lines))   # the table ends where the videos' table starts
                    if not lines[i].startswith("|") or lines[i].startswith("| name |")), len(lines))
        print("\n".join(lines[start:end]))
    section_kill(args, clips, names, seq)


def section_kill(args, clips, names, seq):
    """SIGTERM halfway, rerun: finished clips are not redone, all outputs equal the loop's."""
    from posebert_plug.batch import DONE
    out = os.path.join(args.work, "batch_killed")
    shutil.rmtree(out, ignore_errors=True)
    p = subprocess.Popen(batch_cmd(clips, out, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t = time.time()
    while p.poll() is None and time.time() - t < 600:
        if sum(os.path.exists(os.path.join(out, n, DONE)) for n in names) >= len(names) // 2:
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    done = [n for n in names if os.path.exists(os.path.join(out, n, DONE))]
    stamps = {n: os.stat(os.path.join(out, n, "results.npz")).st_mtime_ns for n in done}
    r = subprocess.run(batch_cmd(clips, out, args), capture_output=True, text=True)
    st = {row["name"]: row["status"] for row in json.load(open(os.path.join(out, "batch_summary.json")))["videos"]}
    redone = [n for n in done if os.stat(os.path.join(out, n, "results.npz")).st_mtime_ns != stamps[n]]
    equal = sum(same_outputs(os.path.join(seq, n), os.path.join(out, n)) for n in names
                if os.path.exists(os.path.join(seq, n, "summary.json")))
    print(f"killed (SIGTERM, exit {p.returncode}) with {len(done)}/{len(names)} clips done; rerun exit {r.returncode}: "
          f"{sum(s == 'skipped' for s in st.values())} skipped, {sum(s == 'done' for s in st.values())} done, "
          f"{len(redone)} finished clips redone; outputs equal to the loop's: {equal}/{len(names)}")


# ---- refine_tracks at 10 vs 30 fps -----------------------------------------------------------------

def _motion(T, n):
    """``n`` windows of T frames at 30 fps: held-out mocap (cache/val.npz) or generated motion."""
    from posebert_plug.rotations import sixd_to_rotmat
    path = os.path.join(ROOT, "cache", "val.npz")
    if os.path.exists(path):
        from posebert_plug.mocap.dataset import MotionCache
        c = MotionCache(path)
        starts = c.window_starts(T, T)
        starts = starts[np.linspace(0, len(starts) - 1, n).astype(int)]
        rot6d, _ = c.windows(starts, T)
        return sixd_to_rotmat(rot6d.float()).numpy(), "held-out mocap (cache/val.npz)"
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from conftest import random_motion
    return np.stack([random_motion(T, seed=s)[0] for s in range(n)]).astype(np.float32), "generated motion"


def section_refine(args):
    import torch
    from posebert_plug.body_model import DefaultBodyModel
    from posebert_plug.refine import refine_tracks
    from posebert_plug.types import Detection, Track, VideoInfo
    import roma
    T, n = 300, args.tracks
    R, src = _motion(T, n)
    R[:, :, 0] = np.diag([1.0, -1.0, -1.0]) @ R[:, :, 0]    # facing the camera, upright
    rng = np.random.default_rng(0)
    noise = roma.rotvec_to_rotmat(torch.as_tensor(rng.normal(0, 0.06, R.shape[:3] + (3,)))).numpy()
    Rn = (R @ noise).astype(np.float32)
    body = DefaultBodyModel()
    J = lambda r: body.pose_keypoints(torch.as_tensor(r).float(), None, "smpl24").numpy()

    def tracks(step, fps):
        v = VideoInfo(768, 576, fps)
        out = []
        for k in range(n):
            idx = np.arange(0, T, step)
            keep = rng.random(len(idx)) > 0.1
            keep[0] = keep[-1] = True     # the track spans the whole motion
            dets = [Detection(i, rotmats=Rn[k, f], transl=np.array([0.0, 0.2, 5.0], np.float32))
                    for i, (f, ok) in enumerate(zip(idx, keep)) if ok]
            out.append((Track.from_detections(k, dets, v), idx))
        return out

    print(f"\n## refine_tracks: {n} SMPL tracks ({src}, 3.4 deg rotation noise, 10% frames missing); "
          f"torch threads {torch.get_num_threads()}; load {load():.1f}")
    print("| input | track-frames | seconds | track-frames/s | MPJPE input mm | MPJPE refined mm |\n|---|---|---|---|---|---|")
    refine_tracks([tracks(1, 30.0)[0][0]])   # warm-up (model load)
    for name, step, fps, model_fps in (("30 fps", 1, 30.0, 30.0), ("10 fps, model at 30 fps (default)", 3, 10.0, 30.0),
                                       ("10 fps, model at 10 fps (model_fps=10)", 3, 10.0, 10.0)):
        tr = tracks(step, fps)
        best = None
        for _ in range(args.repeat):
            t = time.time()
            out = refine_tracks([x for x, _ in tr], model="smpl", model_fps=model_fps)
            s = time.time() - t
            best = s if best is None else min(best, s)
        nf = sum(len(o) for o in out)
        e_in, e_out = [], []
        for (t_, idx), o in zip(tr, out):
            gt = J(R[t_.track_id, idx[: len(o)]])
            root = lambda j: j - j[:, :1]
            obs = t_.observed[: len(o)]
            e_in.append(np.linalg.norm(root(J(Rn[t_.track_id, idx[: len(o)]]))[obs] - root(gt)[obs], axis=-1).mean())
            e_out.append(np.linalg.norm(root(J(o.rotmats)) - root(gt), axis=-1).mean())
        print(f"| {name} | {nf} | {best:.2f} | {nf / best:.0f} | {1000 * np.mean(e_in):.1f} | {1000 * np.mean(e_out):.1f} |")


# ---- YOLO threads, JSON size --------------------------------------------------------------------------

def section_yolo(args):
    import torch
    import adapters
    from adapters.video import iter_batches
    clip = os.path.join(ROOT, "examples", "vtest_clip.mp4")
    ad = adapters.get("yolo")(imgsz=960)
    m = ad._model()
    idx, imgs = next(iter(iter_batches(clip, 8)))
    imgs = [im[..., ::-1] for im in imgs]
    caller = torch.get_num_threads()
    ad.detect(m, imgs, idx)
    res = {1: [], caller: []}
    for _ in range(args.repeat):
        for n in res:
            torch.set_num_threads(n)
            t = time.time()
            ad.detect(m, imgs, idx)
            res[n].append((time.time() - t) / len(imgs))
    torch.set_num_threads(caller)
    print(f"\n## YOLO11n-pose detection (imgsz 960), best of {args.repeat}; load {load():.1f} on {os.cpu_count()} CPUs")
    for n, v in res.items():
        print(f"torch threads {n}{' (ultralytics select_device on this machine)' if n == 1 else ' (the caller, restored)'}: "
              f"{1000 * min(v):.0f} ms/frame")


def section_json(args):
    import glob
    from posebert_plug.types import _jsonable, load_tracks, save_tracks
    files = args.results or sorted(glob.glob(os.path.join(args.work, "batch", "*", "results.npz")))
    if not files:
        print(f"\njson: skipped, no results.npz under {os.path.join(args.work, 'batch')} (run the batch section or "
              "pass --results)")
        return
    payload = n = 0
    size = {"base64": 0, "lists": 0, "repr": 0}
    err = {"base64": 0.0, "lists": 0.0}
    exact = True
    for src in files:
        tr = load_tracks(src)
        n += sum(len(t) for t in tr)
        payload += sum(sum(np.asarray(a).size * 4 for a in (t.rotmats, t.transl, t.joints, t.betas, t.keypoints)
                           if a is not None) + t.frames.size * 4 + t.observed.size for t in tr)
        for mode in ("base64", "lists"):
            path = os.path.join(args.work, f"results_check_{mode}.json")
            save_tracks(path, tr, json_arrays=mode)
            size[mode] += os.path.getsize(path)
            back = load_tracks(path)
            for a, b in zip(tr, back):
                for k in ("rotmats", "transl", "joints"):
                    d = np.abs(getattr(a, k) - getattr(b, k))
                    err[mode] = max(err[mode], float(np.nanmax(d)) if d.size else 0.0)
                    if mode == "base64":
                        exact &= getattr(a, k).tobytes() == getattr(b, k).tobytes()
        # what results.json cost before issue 22: Python's 17-digit repr of every float
        size["repr"] += sum(len(json.dumps({k: _jsonable(v) for k, v in t.to_dict().items()}, separators=(",", ":")))
                            for t in tr)
    print(f"\n## results.json over {len(files)} results ({n} track-frames, float32 payload {payload / n:.0f} B per "
          "track-frame)")
    print("| float arrays as | B per track-frame | x float32 payload | max abs error (rotation entries, metres) |\n"
          "|---|---|---|---|")
    print(f"| base64 float32 (default) | {size['base64'] / n:.0f} | {size['base64'] / payload:.2f} | "
          + ("0 (bit-exact)" if exact else f"{err['base64']:.1e} (NOT exact)") + " |")
    print(f"| lists, 5 decimals (--json-arrays lists) | {size['lists'] / n:.0f} | {size['lists'] / payload:.2f} | "
          f"{err['lists']:.1e} |")
    print(f"| lists, 17-digit floats (before issue 22) | {size['repr'] / n:.0f} | {size['repr'] / payload:.2f} | 0 |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", nargs="+", default=["batch", "refine", "yolo", "json"],
                    choices=["batch", "refine", "yolo", "json"])
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--frames", type=int, default=24, help="frames per clip (10 fps source)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--render", action="store_true", help="render overlay videos too (both sides)")
    ap.add_argument("--work", default=os.path.join(ROOT, "out", "bench-batch"))
    ap.add_argument("--tracks", type=int, default=8, help="refine section: tracks of 300 frames at 30 fps")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--results", help="json section: a results.npz to size")
    args = ap.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    for s in args.sections:
        globals()[f"section_{s}"](args)


if __name__ == "__main__":
    main()
