"""Real footage: what a user sees on videos that are not our demo clip.

    python bench/realvideo.py                       # vtest.avi + compilations; table -> bench/results/realvideo.md
    python bench/realvideo.py --clips comp1 --cache /tmp/realvideo   # one clip, detections cached
    python bench/realvideo.py --imgsz 768 --estimator mediapipe --out /tmp/mp.md   # MediaPipe Pose (33 landmarks)

Clips: the full ``../shared/data/video/vtest.avi`` (795 frames of pedestrians seen from a
raised camera, 10 fps) and compilations cut from real videos with known cut frames
(``posebert_plug.cuts.write_compilation``): segments of vtest.avi (plain, mirrored,
zoomed, reversed) and of ``examples/hand_clip.mp4`` (a hand close-up: no person), so
every cut is a hard cut; ``hand`` is the hand clip alone (no person: the run must not
crash). YOLO11n-pose runs once per clip (at the pipeline's default size, or ``--imgsz``)
and its detections are cached (``--cache``); with ``--estimator mediapipe``, MediaPipe Pose
runs on crops around those YOLO people (as ``posebert-refine --estimator mediapipe``),
cached too; cuts, tracking, evidence, PoseBERT, the 2D fit and
the baselines run as ``posebert-refine`` runs them (``Pipeline``'s stages).

Per clip:
- tracks spanning a cut: output tracks holding both frames c - 1 and c of a known cut c;
- ghost frames: output frames whose projected body is, within the frame, more than twice its
  detection box height (the box interpolated in gaps) or lies outside the frame (the gate in
  ``pipeline_outputs`` hides and reports them: counted here before hiding);
- 2D reprojection error (px): per observed frame the median distance between the projected
  keypoints of the body (in the detector's layout: COCO-17, or MediaPipe-33) and the detected
  keypoints of confidence >= 0.5; the median over frames, for the input (the per-frame body: the
  track's preset, ``kp2d-coco17`` or ``kp3d-mediapipe33``, on one frame at a time, fitted to that
  frame's keypoints), Savitzky-Golay of that body (rotations and translation, window 31, order 2)
  and PoseBERT (+ the 2D fit);
- acceleration (px/frame^2): mean over keypoints (confidence >= 0.5) seen at three
  consecutive frames, of the detected keypoints (input), SG's and PoseBERT's projections;
  ``worst PB/input`` is the largest ratio over tracks (<= 1: never worse than the input);
- people found: output tracks (dropped/split tracks in brackets);
- ms/frame per stage.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from posebert_plug.types import Detection, FrameDetections  # noqa: E402

SHARED = os.path.abspath(os.environ.get("POSEBERT_SHARED", os.path.join(ROOT, "..", "shared")))
VTEST = os.path.join(SHARED, "data", "video", "vtest.avi")
HAND = os.path.join(ROOT, "examples", "hand_clip.mp4")
DEMO = os.path.join(ROOT, "examples", "vtest_clip.mp4")

# name -> segments (video, first frame, frames, transform) at 768x576, 10 fps
COMPILATIONS = {
    "comp1": [(VTEST, 0, 120, None), (HAND, 0, 60, None), (VTEST, 300, 120, "mirror"), (VTEST, 600, 100, "zoom")],
    "comp2": [(DEMO, 0, 100, None), (VTEST, 500, 100, "reverse"), (VTEST, 200, 100, ["zoom", "mirror"]),
              (HAND, 60, 40, None), (VTEST, 700, 90, None)],
}


def clip_path(name, folder):
    """(path, known cuts or None) of a clip, building a compilation when needed."""
    if name == "vtest":
        return VTEST, []
    if name == "hand":
        return HAND, []
    if name == "demo":
        return DEMO, []
    from adapters.video import write_compilation
    path = os.path.join(folder, f"{name}.mp4")
    meta = path + ".cuts.json"
    if not (os.path.exists(path) and os.path.exists(meta)):
        cuts = write_compilation(path, COMPILATIONS[name], (768, 576), 10.0)
        with open(meta, "w") as f:
            json.dump(cuts, f)
    with open(meta) as f:
        return path, json.load(f)


def detections(path, video, cache_folder, imgsz=None):
    """YOLO11n-pose detections of a clip, cached as JSON."""
    from posebert_plug.pipeline import detector_size
    size = detector_size(video, imgsz)
    cache = os.path.join(cache_folder, os.path.basename(path) + f".yolo{size}.json")
    if os.path.exists(cache):
        with open(cache) as f:
            rows = json.load(f)
        return [FrameDetections(i, [Detection(d["frame"], box=d["box"], score=d["score"], kp2d=np.array(d["kp2d"]),
                                              kp2d_conf=np.array(d["conf"]), layout2d="coco17") for d in dets])
                for i, dets in enumerate(rows)], None
    import adapters
    t = time.time()
    frames = list(adapters.get("yolo")(imgsz=size).run(path, video))
    dt = time.time() - t
    with open(cache, "w") as f:
        json.dump([[{"frame": d.frame, "box": d.box.tolist(), "score": d.score, "kp2d": d.kp2d.tolist(),
                     "conf": d.kp2d_conf.tolist()} for d in fr.detections] for fr in frames], f)
    return frames, dt


def mediapipe_detections(path, video, cache_folder, imgsz=None, min_cover=None):
    """``--estimator mediapipe`` as posebert-refine runs it (``adapters.mediapipe_adapter``: MediaPipe Pose on
    square crops around YOLO's people, each detection keeping YOLO's box, landmarks that do not fit the box not
    kept), on the cached YOLO boxes. The raw landmarks and their boxes are cached as JSON; the box test
    (``min_cover``, default the adapter's) is applied when they are read.
    Returns (frames, seconds of MediaPipe or None when cached)."""
    from adapters.mediapipe_adapter import MIN_BOX_COVER, detection_from_landmarks, landmarks_on_crop
    from adapters.video import iter_frames
    from posebert_plug.pipeline import detector_size
    size = detector_size(video, imgsz)
    cache = os.path.join(cache_folder, os.path.basename(path) + f".mediapipe{size}.boxes.json")
    cover = MIN_BOX_COVER if min_cover is None else min_cover

    def frames_of(rows):
        out = []
        for i, dets in enumerate(rows):
            ds = (detection_from_landmarks(d["frame"], np.array(d["lm"]), None if d["kp3d"] is None else
                                           np.array(d["kp3d"]), box=np.array(d["box"]), min_cover=cover) for d in dets)
            out.append(FrameDetections(i, [d for d in ds if d is not None]))
        return out
    if os.path.exists(cache):
        with open(cache) as f:
            return frames_of(json.load(f)), None
    import mediapipe as mp
    yolo, _ = detections(path, video, cache_folder, imgsz)
    t = time.time()
    rows = []
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, min_detection_confidence=0.3) as pose:
        for idx, im in iter_frames(path):
            out = []
            for d in (yolo[idx].detections if idx < len(yolo) else []):
                r = landmarks_on_crop(pose, im, d.box)
                if r is not None:
                    out.append({"frame": idx, "lm": r[0].tolist(), "kp3d": None if r[1] is None else r[1].tolist(),
                                "box": [float(v) for v in d.box]})
            rows.append(out)
    dt = time.time() - t
    with open(cache, "w") as f:
        json.dump(rows, f)
    return frames_of(rows), dt


def spans_cut(r, cuts) -> bool:
    f = set(int(x) for x in r.frames)
    return any((c - 1) in f and c in f for c in cuts)


def keypoints_px(body, rotmats, transl, video, layout="coco17"):
    import torch
    from posebert_plug.pipeline_outputs import _project
    kp = body.pose_keypoints(torch.as_tensor(np.asarray(rotmats)).float(), torch.as_tensor(np.asarray(transl)).float(),
                             layout).numpy()
    return _project(kp, video)


def evaluate_clip(name, args):
    from adapters.video import probe
    from posebert_plug.fit2d import acceleration_px, reprojection_error_px
    from posebert_plug.pipeline import Pipeline
    from posebert_plug.pipeline_outputs import ghost_frames
    path, known = clip_path(name, args.cache)
    video = probe(path)
    frames, t_det = (mediapipe_detections(path, video, args.cache, args.imgsz, args.min_box_cover)
                     if args.estimator == "mediapipe" else detections(path, video, args.cache, args.imgsz))
    p = Pipeline(estimator=args.estimator, progress=False, fit=args.fit)
    p.warnings, p.dropped, p.split = [], [], []
    tm = {"detect": t_det}
    t = time.time()
    cuts = p.find_cuts(path, video)
    tm["cuts"] = time.time() - t
    t = time.time()
    tracks = p.track(frames, video, cuts)
    n_tracked = len(tracks)
    tracks = p.vet(tracks, video, cuts)
    tm["track+evidence"] = time.time() - t
    t = time.time()
    refined = p.refine(tracks, video) if tracks else []
    tm["refine+fit"] = time.time() - t
    t = time.time()
    kept = [t_ for t_ in tracks if t_.track_id in {r.track_id for r in refined}]
    base = p.baseline(kept, video) if refined else {}
    tm["baselines"] = time.time() - t
    body = p.body_model()
    n = len(frames)
    row = {"clip": name, "frames": n, "cuts known": known, "cuts found": cuts,
           "tracks spanning a cut": sum(spans_cut(r, known) for r in refined),
           "people": len(refined), "tracked": n_tracked, "dropped": len(p.dropped), "split": len(p.split),
           "ms/frame": {k: (1000 * v / max(n, 1) if v is not None else None) for k, v in tm.items()}}
    tr_by = {t_.track_id: t_ for t_ in tracks}
    ghosts = 0
    err = {"input": [], "SG": [], "PoseBERT": []}
    acc = {"input": [], "SG": [], "PoseBERT": []}
    worst = 0.0
    per_track = []
    for r in refined:
        tr = tr_by[r.track_id]
        ghosts += int(ghost_frames(r, tr, video).sum())
        if tr.kp2d is None:
            continue
        uv, conf = tr.kp2d, np.nan_to_num(tr.kp2d_conf)
        valid = (conf >= 0.5) & tr.observed[:, None]
        ours = keypoints_px(body, r.rotmats, r.transl, video, tr.layout2d)
        b = base.get(r.track_id, {})
        outs = {"PoseBERT": ours}
        if "input_rotmats" in b:
            outs["input"] = keypoints_px(body, b["input_rotmats"], b["input_transl"], video, tr.layout2d)
        if "rotmats" in b:
            outs["SG"] = keypoints_px(body, b["rotmats"], b["transl"], video, tr.layout2d)
        for k, kp in outs.items():
            err[k].append(reprojection_error_px(kp, uv, conf, tr.observed))
        a_in = acceleration_px(uv, valid)
        acc["input"].append(a_in)
        for k in ("SG", "PoseBERT"):
            if k in outs:
                acc[k].append(acceleration_px(outs[k], valid))
        if np.isfinite(a_in) and a_in > 0:
            worst = max(worst, acceleration_px(ours, valid) / a_in)
        per_track.append({"id": int(r.track_id), "observed": int(tr.observed.sum()),
                          **{f"reproj {k}": float(np.nanmedian(e[-1])) if np.isfinite(e[-1]).any() else None
                             for k, e in err.items() if k in outs},
                          "accel input": a_in, "accel PoseBERT": acceleration_px(ours, valid)})
    row["ghost frames"] = ghosts
    for k in err:
        e = np.concatenate(err[k]) if err[k] else np.zeros(0)
        row[f"reproj {k}"] = float(np.nanmedian(e)) if np.isfinite(e).any() else float("nan")
        a = np.array(acc[k], float)
        row[f"accel {k}"] = float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")
    row["worst PB/input accel"] = worst
    row["estimator"] = args.estimator
    row["fit"] = args.fit
    row["tracks"] = per_track
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", nargs="+", default=["vtest", "comp1", "comp2", "hand"])
    ap.add_argument("--cache", default=os.path.join(ROOT, "cache", "realvideo"),
                    help="folder for the compilations and the cached detections")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "realvideo.md"))
    ap.add_argument("--estimator", choices=["yolo", "mediapipe"], default="yolo",
                    help="yolo: YOLO11n-pose (COCO-17 2D); mediapipe: MediaPipe Pose (33 landmarks, 2D + world 3D) "
                         "on crops around YOLO's people, as posebert-refine --estimator mediapipe")
    ap.add_argument("--fit", default="default", help="the 2D fit's strength (fit2d.FIT_PRESETS, as posebert-refine --fit)")
    ap.add_argument("--imgsz", type=int, default=None, help="YOLO's size (default: the pipeline's for the video)")
    ap.add_argument("--min-box-cover", type=float, default=None,
                    help="mediapipe: the adapter's landmarks-fit-the-box test (default: the adapter's; 0: off)")
    args = ap.parse_args(argv)
    if not os.path.exists(VTEST):
        print(f"{VTEST} is absent: the real clips need ../shared", file=sys.stderr)
        return 2
    os.makedirs(args.cache, exist_ok=True)
    rows = []
    for name in args.clips:
        print(f"clip {name} ...", flush=True)
        rows.append(evaluate_clip(name, args))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "tracks"}), flush=True)
        print(json.dumps(rows[-1]["tracks"]), flush=True)
    lines = ["| clip | frames | cuts known / found | tracks spanning a cut | ghost frames | people (tracked, dropped, split) "
             "| reproj. px input / SG / PoseBERT | accel px/f² input / SG / PoseBERT | worst PB/input accel |",
             "|---|---|---|---|---|---|---|---|---|"]
    f = lambda x: "-" if x is None or not np.isfinite(x) else f"{x:.1f}"
    for r in rows:
        lines.append(f"| {r['clip']} | {r['frames']} | {r['cuts known']} / {r['cuts found']} | {r['tracks spanning a cut']} "
                     f"| {r['ghost frames']} | {r['people']} ({r['tracked']}, {r['dropped']}, {r['split']}) | "
                     f"{f(r['reproj input'])} / {f(r['reproj SG'])} / {f(r['reproj PoseBERT'])} | "
                     f"{f(r['accel input'])} / {f(r['accel SG'])} / {f(r['accel PoseBERT'])} | "
                     f"{r['worst PB/input accel']:.2f} |")
    lines += ["", "| clip | " + " | ".join(rows[0]["ms/frame"]) + " |", "|---|" + "---|" * len(rows[0]["ms/frame"])]
    for r in rows:
        lines.append(f"| {r['clip']} | " + " | ".join("cached" if v is None else f"{v:.1f}"
                                                       for v in r["ms/frame"].values()) + " |")
    text = "\n".join(lines)
    print(text)
    with open(args.out, "w") as fh:
        fh.write(f"### real footage (bench/realvideo.py --estimator {args.estimator}; YOLO11n-pose at "
                 f"{args.imgsz or 'the default size'}, --fit {args.fit}, 2-core CPU shared with other jobs)\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
