"""End-to-end benchmark with ground truth: rendered scenes -> YOLO-pose -> tracker -> PoseBERT vs baselines.

    python bench/e2e.py --cache cache --out bench/results          # default: 6 fixed scenes, seeds 0-5

The project's equivalent of the paper's Table 6. Scenes come from
``posebert_plug.scenes`` (1-4 people from the held-out validation split, crossing,
one leaving and re-entering, rendered free-body meshes over a textured background,
960x540 at 30 fps; generated on the fly from the seed, never stored). For each scene
the real YOLO11n-pose detector runs on the rendered video, our Hungarian tracker (and
ultralytics' ByteTrack on the same detections) builds identities, and three estimates
of every person's 3D pose are scored against the motion that drove the render:

- (a) per-frame lifting: the ``kp2d-coco17`` model fed one frame at a time (no temporal
  context; frames the detector missed inside a track are slerp-interpolated);
- (b) nearest-fill + Savitzky-Golay (window 31, order 2) of (a) over each track;
- (c) PoseBERT: ``kp2d-coco17`` with its temporal window over each track (PoseBERT's own pose,
  translation aligned to the 2D keypoints);
- (d) PoseBERT + 2D fit: (c) then pose and translation fitted to the keypoints
  (``posebert_plug.fit2d``, what ``posebert-refine`` writes).

``--raised N`` adds N scenes seen from a raised camera (pitch 0.6 rad, about 35 degrees down,
like a street camera: vtest.avi) scored apart.

Tracks are matched to ground-truth people by box IoU >= 0.5 (the person a track
overlaps most). Errors are over every ground-truth frame where the person is visible
and some matched track spans the frame ("covered"); frames the detector missed count
and are also reported on their own. MPJPE / PA-MPJPE on root-relative SMPL-24 joints
(mm), Accel (mm/frame^2), root translation error (mm, camera frame).
Prints markdown tables, saves ``e2e.png`` and ``e2e_side_by_side.mp4`` under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from posebert_plug import baselines as B
from posebert_plug import metrics as M
from posebert_plug.body_model import DefaultBodyModel
from posebert_plug.mocap.dataset import MotionCache
from posebert_plug.refine import refine_tracks
from posebert_plug.scenes import SceneConfig, generate_scene
from tracking import iou_matrix, track_detections

BODY = DefaultBodyModel()
DEFAULT_SCENES = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 3), (5, 2)]   # (seed, people)


def match_tracks(tracks, gt):
    """track_id -> person_id (or None): the person whose box the track's observed boxes overlap (IoU >= 0.5) most."""
    out = {}
    for t in tracks:
        votes = np.zeros(len(gt))
        for i, f in enumerate(t.frames):
            if not t.observed[i] or not np.isfinite(t.boxes[i]).all():
                continue
            gb = np.stack([p.boxes[f] for p in gt])
            iou = iou_matrix(t.boxes[i][None], gb)[0]
            iou[[not p.visible[f] for p in gt]] = 0
            if iou.max() >= 0.5:
                votes[iou.argmax()] += 1
        out[t.track_id] = int(votes.argmax()) if votes.max() > 0 else None
    return out


def per_person_estimates(tracks, refined, gt, owner, T):
    """For each person: dict method -> (R (T, 24, 3, 3), transl (T, 3), covered (T,), detected (T,))."""
    est = {}
    for p in range(len(gt)):
        mine = [k for k, t in enumerate(tracks) if owner[t.track_id] == p]
        mine.sort(key=lambda k: -tracks[k].num_observed)        # longest track wins where two overlap
        res = {}
        for method, outs in refined.items():
            R = np.tile(np.eye(3, dtype=np.float32), (T, 24, 1, 1))
            tr = np.zeros((T, 3), np.float32)
            cov, det = np.zeros(T, bool), np.zeros(T, bool)
            for k in mine[::-1]:                                 # longest written last
                r, t = outs[k], tracks[k]
                f = r.frames
                R[f], tr[f], cov[f] = r.rotmats, r.transl, True
                det[t.frames] = t.observed
            res[method] = (R, tr, cov, det)
        est[p] = res
    return est


def lift_single_frame(tracks, video, model="kp2d-coco17"):
    return refine_tracks(tracks, model=model, window=1, stride=1, video=video, fit_2d=False)


def savgol_of(outs):
    from posebert_plug.types import RefinedTrack
    sm = []
    for r in outs:
        ok = r.observed.copy()
        if ok.sum() < 1:
            sm.append(r)
            continue
        R = B.savgol_rotations(r.rotmats.astype(np.float64), ok).astype(np.float32)
        tr = B.savgol(r.transl.astype(np.float64), ok).astype(np.float32)
        sm.append(RefinedTrack(r.track_id, r.frames, R, tr, r.joints, r.observed, r.betas, "savgol", r.video))
    return sm


METHODS = ("(a) per-frame lifting", "(b) nearest-fill + SG", "(c) PoseBERT", "(d) PoseBERT + 2D fit")
RAISED_PITCH = 0.6


def run_scene(cache, seed, people, T, tmp, timing, cached=None, model="kp2d-coco17", pitch=None):
    """cached: this scene's detections from --detections (skips rendering and YOLO)."""
    cfg = SceneConfig(people=people, frames=T, seed=seed, **({} if pitch is None else {"pitch": pitch}))
    scene = generate_scene(cache, cfg, BODY)
    path = os.path.join(tmp, f"scene{seed}.mp4")
    if cached is not None:
        frames = cached
    else:
        t0 = time.time()
        scene.write_video(path)
        timing["render"] += time.time() - t0
        import adapters
        t0 = time.time()
        frames = list(adapters.get("yolo")().run(path, cfg.video))
        timing["detect"] += time.time() - t0
    t0 = time.time()
    tracks = track_detections(frames, cfg.video)
    timing["track"] += time.time() - t0
    t0 = time.time()
    pb = refine_tracks(tracks, model=model, video=cfg.video, fit_2d=False) if tracks else []
    timing["refine"] += time.time() - t0
    t0 = time.time()
    fit = refine_tracks(tracks, model=model, video=cfg.video, fit_2d=True, fit_options=FIT_OPTIONS) if tracks else []
    timing["fit"] = timing.get("fit", 0.0) + time.time() - t0
    single = lift_single_frame(tracks, cfg.video, model) if tracks else []
    outs = {"(a) per-frame lifting": single, "(b) nearest-fill + SG": savgol_of(single), "(c) PoseBERT": pb,
            "(d) PoseBERT + 2D fit": fit}
    owner = match_tracks(tracks, scene.gt)
    return scene, frames, tracks, outs, owner, path


def mot_rows(scene, frames, tracks):
    """GT / hypothesis boxes per frame for motmetrics: ours and ByteTrack on the same detections."""
    from track_bench import run_bytetrack
    T = scene.config.frames
    gt = {t: [(p.person_id, p.boxes[t]) for p in scene.gt if p.visible[t]] for t in range(T)}
    ours = {t: [] for t in range(T)}
    for k in tracks:
        for i, f in enumerate(k.frames):
            if k.observed[i]:
                ours[int(f)].append((k.track_id, k.boxes[i]))
    by_frame = {f.frame: f.detections for f in frames}
    dets = {t: [d for d in by_frame.get(t, []) if d.box is not None] for t in range(T)}
    return gt, ours, run_bytetrack(dets, T)


def score(est, gt, T):
    """Rows per method: errors on all covered visible frames, and on detector-missed frames."""
    acc = {}
    for p, person in enumerate(gt):
        G = BODY.pose_keypoints(torch.as_tensor(person.rotmats).float(), None, "smpl24")
        for method, (R, tr, cov, det) in est[p].items():
            P = BODY.pose_keypoints(torch.as_tensor(R).float(), None, "smpl24")
            use = cov & person.visible
            a = acc.setdefault(method, {"err": [], "pa": [], "tr": [], "miss_err": [], "acc": [], "acc_n": 0,
                                        "n": 0, "vis": 0, "missed": 0})
            a["vis"] += int(person.visible.sum())
            if not use.any():
                continue
            e = (P - P[:, :1] - (G - G[:, :1])).norm(dim=-1).mean(-1).numpy() * 1000   # root-relative, per frame
            a["err"].append(e[use])
            a["pa"].append(np.array([float(M.pa_mpjpe(P[i:i + 1], G[i:i + 1])) for i in np.flatnonzero(use)]))
            a["tr"].append(np.linalg.norm(tr[use] - person.transl[use], axis=-1) * 1000)
            a["miss_err"].append(e[use & ~det])
            a["missed"] += int((use & ~det).sum())
            a["n"] += int(use.sum())
            # acceleration error over runs of consecutive covered frames
            idx = np.flatnonzero(use)
            for run in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1):
                if len(run) >= 3:
                    pr, gr = P[run] - P[run][:, :1], G[run] - G[run][:, :1]
                    a["acc"].append(float(M.accel_error(pr, gr)) * (len(run) - 2))
                    a["acc_n"] += len(run) - 2
    return acc


FIT_OPTIONS = None   # --fit-options


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default="cache", help="cache folder with val.npz (posebert-data build)")
    ap.add_argument("--scenes", type=int, default=len(DEFAULT_SCENES), help="number of scenes (default the fixed set)")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--no-video", action="store_true", help="skip the side-by-side video")
    ap.add_argument("--save-detections", metavar="JSON", help="also write the YOLO detections of every scene")
    ap.add_argument("--detections", metavar="JSON", help="reuse detections saved by --save-detections "
                    "(no rendering or YOLO: re-scores tracking and refinement in seconds)")
    ap.add_argument("--checkpoint", help="a kp2d-coco17 model.pt instead of the shipped weights")
    ap.add_argument("--raised", type=int, default=0, metavar="N",
                    help=f"also N scenes from a raised camera (pitch {RAISED_PITCH} rad), reported apart")
    ap.add_argument("--fit-options", type=json.loads, metavar="JSON",
                    help='FitOptions fields for (d), e.g. \'{"fit_depth": true}\' (default: the shipped ones)')
    args = ap.parse_args(argv)
    global FIT_OPTIONS
    FIT_OPTIONS = args.fit_options
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cache = MotionCache(os.path.join(args.cache, "val.npz"))
    model = "kp2d-coco17"
    if args.checkpoint:
        from posebert_plug.presets import load_model
        model = load_model("kp2d-coco17", checkpoint=args.checkpoint)
    saved = _load_detections(args.detections) if args.detections else {}
    to_save = {}
    plan = DEFAULT_SCENES[:args.scenes] + [(s, 1 + s % 4) for s in range(len(DEFAULT_SCENES), args.scenes)]
    raised = [(100 + s, people) for s, people in DEFAULT_SCENES[:args.raised]]
    totals_raised = {}
    timing = dict.fromkeys(("render", "detect", "track", "refine"), 0.0)
    os.makedirs(args.out, exist_ok=True)
    totals, mot_gt, mot_ours, mot_byte, det_hits, det_vis = {}, [], [], [], 0, 0
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for seed, people in raised:
            scene, frames, tracks, outs, owner, path = run_scene(cache, seed, people, args.frames, tmp, timing,
                                                                 saved.get(seed), model, pitch=RAISED_PITCH)
            to_save[seed] = frames
            est = per_person_estimates(tracks, outs, scene.gt, owner, args.frames)
            for method, a in score(est, scene.gt, args.frames).items():
                tot = totals_raised.setdefault(method, {})
                for k, v in a.items():
                    tot[k] = tot.get(k, 0) + v if not isinstance(v, list) else tot.get(k, []) + v
            print(f"raised-camera scene (seed {seed}, {people} people): {len(tracks)} tracks", flush=True)
        for n, (seed, people) in enumerate(plan):
            scene, frames, tracks, outs, owner, path = run_scene(cache, seed, people, args.frames, tmp, timing,
                                                                 saved.get(seed), model)
            to_save[seed] = frames
            g, o, b = mot_rows(scene, frames, tracks)
            mot_gt.append(g), mot_ours.append(o), mot_byte.append(b)
            # detection rate: visible GT boxes matched by some YOLO box at IoU >= 0.5
            by_frame = {f.frame: f.detections for f in frames}
            for t in range(args.frames):
                for p in scene.gt:
                    if p.visible[t]:
                        det_vis += 1
                        db = np.array([d.box for d in by_frame.get(t, [])]).reshape(-1, 4)
                        det_hits += int(len(db) > 0 and iou_matrix(p.boxes[t][None], db).max() >= 0.5)
            est = per_person_estimates(tracks, outs, scene.gt, owner, args.frames)
            for method, a in score(est, scene.gt, args.frames).items():
                tot = totals.setdefault(method, {})
                for k, v in a.items():
                    tot[k] = tot.get(k, 0) + v if not isinstance(v, list) else tot.get(k, []) + v
            print(f"scene {n + 1}/{len(plan)} (seed {seed}, {people} people): {len(tracks)} tracks, "
                  f"{sum(len(f) for f in frames)} detections", flush=True)
            if n == len(plan) - 1 and not args.no_video:
                side_by_side(scene, frames, tracks, outs, os.path.join(args.out, "e2e_side_by_side.mp4"))
    if args.save_detections:
        _save_detections(args.save_detections, to_save)
    from track_bench import evaluate
    mo, mb = evaluate(mot_gt, mot_ours), evaluate(mot_gt, mot_byte)
    wall = time.time() - t_start
    lines = [f"\n### end-to-end on {len(plan)} rendered scenes ({args.frames} frames, 960x540, 30 fps; "
             f"YOLO11n-pose -> tracker -> refinement), wall time {wall / 60:.1f} min on this CPU\n",
             f"- detection rate (visible ground-truth people with a YOLO box at IoU >= 0.5): "
             f"{100 * det_hits / max(det_vis, 1):.1f}% of {det_vis}",
             f"- time: render {timing['render']:.0f} s, detect {timing['detect']:.0f} s, track {timing['track']:.1f} s, "
             f"PoseBERT refine {timing['refine']:.1f} s, 2D fit {timing.get('fit', 0.0):.1f} s\n",
             "| tracker | MOTA | IDF1 | ID switches | fragmentations |", "|---|---|---|---|---|"]
    for name, s in (("ours (Hungarian)", mo), ("ultralytics ByteTrack (same detections)", mb)):
        lines.append(f"| {name} | {100 * s['mota']:.1f} | {100 * s['idf1']:.1f} | {int(s['num_switches'])} | "
                     f"{int(s['num_fragmentations'])} |")
    k = len(DEFAULT_SCENES)
    if len(plan) > k:   # the tracker's defaults were chosen on the default scenes: report the others apart
        lines += ["", "| scenes | tracker | MOTA | IDF1 | ID switches |", "|---|---|---|---|---|"]
        for part, sl in ((f"default (seeds {plan[0][0]}-{plan[k - 1][0]})", slice(0, k)),
                         (f"held out (seeds {plan[k][0]}-{plan[-1][0]})", slice(k, None))):
            for name, hyp in (("ours (Hungarian)", mot_ours), ("ByteTrack", mot_byte)):
                s = evaluate(mot_gt[sl], hyp[sl])
                lines.append(f"| {part} | {name} | {100 * s['mota']:.1f} | {100 * s['idf1']:.1f} | "
                             f"{int(s['num_switches'])} |")
    lines += method_table(totals)
    if totals_raised:
        lines += ["", f"raised camera (pitch {RAISED_PITCH} rad), {len(raised)} scenes:", ""] + method_table(totals_raised)
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "e2e.md"), "w") as f:
        f.write(text + "\n")
    plot(totals, os.path.join(args.out, "e2e.png"))
    return 0


def method_table(totals):
    lines = ["", "| method | MPJPE | PA-MPJPE | Accel | root transl. err | MPJPE on missed frames | frames (missed) | coverage |",
             "|---|---|---|---|---|---|---|---|"]
    for method in METHODS:
        a = totals[method]
        cat = lambda k: np.concatenate(a[k]) if a[k] else np.zeros(0)
        accel = sum(a["acc"]) / max(a["acc_n"], 1)
        miss = cat("miss_err")
        lines.append(f"| {method} | {cat('err').mean():.1f} | {cat('pa').mean():.1f} | {accel:.1f} | "
                     f"{cat('tr').mean():.0f} | {miss.mean() if len(miss) else float('nan'):.1f} | "
                     f"{a['n']} ({a['missed']}) | {100 * a['n'] / max(a['vis'], 1):.1f}% |")
    return lines


def _save_detections(path, by_seed):
    import json
    rows = {str(seed): [[{"frame": d.frame, "box": d.box.tolist(), "score": d.score, "kp2d": d.kp2d.tolist(),
                          "conf": d.kp2d_conf.tolist()} for d in f.detections] for f in frames]
            for seed, frames in by_seed.items()}
    with open(path, "w") as f:
        json.dump(rows, f)


def _load_detections(path):
    import json
    from posebert_plug.types import Detection, FrameDetections
    with open(path) as f:
        rows = json.load(f)
    return {int(seed): [FrameDetections(i, [Detection(d["frame"], box=d["box"], score=d["score"],
                                                      kp2d=np.array(d["kp2d"]), kp2d_conf=np.array(d["conf"]),
                                                      layout2d="coco17") for d in dets])
                        for i, dets in enumerate(frames)]
            for seed, frames in rows.items()}


def plot(totals, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(9, 3))
    names = list(totals)
    for k, (key, title) in enumerate((("err", "MPJPE (mm), all covered frames"), ("miss_err", "MPJPE (mm), missed frames"))):
        vals = [np.concatenate(totals[m][key]).mean() if totals[m][key] else 0 for m in names]
        ax[k].bar(range(len(names)), vals, color=["tab:gray", "tab:orange", "tab:blue", "tab:green"][:len(names)])
        ax[k].set_xticks(range(len(names)), [m.split(") ")[1] for m in names], fontsize=7)
        ax[k].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def side_by_side(scene, frames, tracks, outs, path):
    """input detections | nearest-fill + SG | PoseBERT, half resolution, for one scene."""
    from adapters.video import VideoWriter
    from posebert_plug.pipeline_outputs import _draw_skeletons, _half, _label
    from render import get_renderer, track_colour
    c = scene.config
    r = get_renderer("auto")
    hw, hh = c.width // 2, c.height // 2
    by_frame = {f.frame: f.detections for f in frames}
    w = VideoWriter(path, 3 * hw, hh, c.fps)
    try:
        for t, img in scene.frames():
            panels = []
            inp = _draw_skeletons(img, [(d.kp2d, d.kp2d_conf, "coco17", (1.0, 1.0, 1.0))
                                        for d in by_frame.get(t, []) if d.kp2d is not None], radius=3)
            panels.append(_label(_half(inp, hw, hh), "YOLO-pose input"))
            for name in ("(b) nearest-fill + SG", "(d) PoseBERT + 2D fit"):
                meshes = []
                for k, o in enumerate(outs[name]):
                    i = t - int(o.frames[0])
                    if 0 <= i < len(o):
                        v = BODY(torch.as_tensor(o.rotmats[i:i + 1]), torch.as_tensor(o.transl[i:i + 1])).vertices[0]
                        meshes.append((v.numpy(), BODY.faces, track_colour(o.track_id)))
                panels.append(_label(_half(r.render(img, meshes, c.focal_px) if meshes else img, hw, hh),
                                     name.split(") ")[1]))
            w.write(np.concatenate(panels, 1))
        w.close()
    except BaseException:
        w.abort()
        raise


if __name__ == "__main__":
    sys.exit(main())
