"""posebert-refine: video in, tracked and refined 3D motion out."""
from __future__ import annotations

import argparse
import os
import sys

EPILOG = """examples:
  posebert-refine examples/vtest_clip.mp4 --estimator yolo --out out/demo
  posebert-refine video.mp4 --estimator hybrik --estimator-output res.pk --out out/hybrik
  posebert-refine video.mp4 --estimator vibe --estimator-output vibe_output.pkl --baseline savgol nearest
  posebert-refine video.mp4 --estimator mediapipe --online --predict-ahead 3
  posebert-refine examples/hand_clip.mp4 --estimator mediapipe-hands --out out/hands
  posebert-refine video.mp4 --estimator hand21 --estimator-output hands.npz   (any 21-keypoint hand file)

outputs in --out: results.npz and results.json (per track: frames, SMPL rotations, camera-frame
translation in metres, joints, observed mask; float arrays in results.json as base64 float32 unless
--json-arrays lists), overlay.mp4, side_by_side.mp4 (input | Savitzky-Golay
| PoseBERT), jitter_and_gaps.png, bvh/track_NNN.bvh, summary.json.

exit codes: 0 success; 1 internal error; 2 bad input or usage (unreadable video, unknown estimator,
unwritable or full output folder, malformed estimator file, bad option value); 3 nobody detected or
tracked; 130 interrupted (Ctrl-C), 143 terminated (SIGTERM): nothing of the run is kept.

a run owns its set of outputs: it replaces the files the previous run into the same --out wrote
(listed in .posebert-manifest.json), e.g. a --no-render run removes the old videos; other files in
the folder are left alone.
"""


def file_estimators(adapters) -> str:
    """The estimators that read a file (--estimator-output), each with its aliases: "4dhumans/phalp, ..."."""
    classes = {}
    for name in adapters.available():
        cls = adapters.get(name)
        if not cls.live:
            classes[cls.name] = "/".join([cls.name, *cls.aliases])
    return ", ".join(classes[n] for n in sorted(classes))


def build_parser():
    import adapters
    from .pipeline import BASELINES
    ap = argparse.ArgumentParser(prog="posebert-refine", description=
                                 "Detect, track and refine people in a video with PoseBERT, render overlays, "
                                 "and compare with a Savitzky-Golay baseline.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", help="input video (any format FFmpeg decodes)")
    ap.add_argument("--estimator", default="yolo", help=f"one of: {', '.join(adapters.available())} (default yolo)")
    ap.add_argument("--estimator-output", metavar="FILE", help="the estimator's output file or folder (for "
                    f"estimators that run as their own project: {file_estimators(adapters)})")
    ap.add_argument("--preset", default="auto", help="PoseBERT preset: auto (from the inputs), smpl, kp3d-h36m17, "
                    "kp3d-mediapipe33, kp2d-coco17, kp3d-hand21 (hands)")
    ap.add_argument("--smpl-dir", metavar="DIR", help="folder with SMPL model files; default: the free body model")
    ap.add_argument("--mano-dir", metavar="DIR", help="folder with MANO_RIGHT.pkl / MANO_LEFT.pkl for hand meshes; "
                    "default: the free hand model")
    ap.add_argument("--out", default="out", help="output folder (default ./out)")
    ap.add_argument("--device", default="auto", help="auto (GPU when present), cpu or cuda")
    ap.add_argument("--baseline", nargs="+", default=["savgol"], choices=BASELINES,
                    help="baselines computed on the same tracks (default savgol)")
    ap.add_argument("--online", action="store_true", help="stream frame by frame (last 64 frames per person)")
    ap.add_argument("--predict-ahead", type=int, default=0, metavar="K",
                    help="with --online: output the pose predicted K frames ahead (cancels pipeline latency)")
    ap.add_argument("--imgsz", type=int, default=None, help="YOLO input size (default: the video's long side, "
                    "at most 960: no upscaling; small people need upscaling, e.g. 960 for a 768 px video)")
    ap.add_argument("--yolo-weights", metavar="PATH", help="YOLO pose weights (default: found offline)")
    ap.add_argument("--renderer", default="auto", choices=["auto", "moderngl", "pyrender"])
    ap.add_argument("--skeleton-only", action="store_true", help="draw skeletons instead of meshes")
    ap.add_argument("--no-render", action="store_true", help="skip the videos")
    ap.add_argument("--no-side-by-side", action="store_true", help="skip the comparison video")
    ap.add_argument("--max-frames", type=int, help="process only the first N frames")
    ap.add_argument("--cuts", default="auto", metavar="auto|none|F1,F2,...", help="shot cuts (frames starting a new "
                    "shot; no track crosses one): auto (found on the frames, default), none, or a list of frames")
    ap.add_argument("--min-observed", type=int, default=None, metavar="N", help="usable frames a track needs "
                    "(default: the larger of 5 and 0.2 s of video); fewer: dropped, listed in summary.json")
    ap.add_argument("--max-fill-seconds", type=float, default=1.0, metavar="S", help="longest gap filled (default "
                    "1.0 s); a longer gap splits the track")
    ap.add_argument("--min-box-height", type=float, default=0.03, metavar="FRAC", help="tracks whose median box is "
                    "lower than this fraction of the frame height are dropped (default 0.03)")
    ap.add_argument("--max-box-aspect", type=float, default=2.5, metavar="R", help="tracks whose median box is more "
                    "than R times wider than tall are dropped (default 2.5)")
    ap.add_argument("--no-fit-2d", action="store_true", help="keep PoseBERT's pose: no reprojection fit to the "
                    "2D keypoints")
    ap.add_argument("--fit", default="default", choices=["default", "close", "loose"], help="how closely the body "
                    "follows the 2D keypoints: default; close (a ten times lighter prior); loose (PoseBERT's "
                    "pose nudged, the fit before the eleventh session: lowest 3D error on rendered test scenes, "
                    "but raised cameras' people bent forward; bench/results/generalize.md)")
    ap.add_argument("--json-arrays", default="base64", choices=["base64", "lists"], help="how results.json writes "
                    "float arrays: base64 (default: exact float32 bytes, 1.33x their size; meta.json_arrays says how "
                    "to decode) or lists (nested lists rounded to 5 decimals, readable by eye, 2.3x)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def summary_table(summary) -> str:
    rows = ["| track | frames | observed | filled | preset |", "|---|---|---|---|---|"]
    for t in summary["tracks"]:
        rows.append(f"| {t['id']} | {t['frames']} | {t['observed']} | {t['filled']} | {t['preset']} |")
    rows.append(f"\npeople: {summary['people']}, video frames: {summary['frames']}, detections: {summary['detections']}")
    tm = summary["timings"]
    n = max(1, summary["frames"])
    rows.append("| stage | seconds | ms/frame |")
    rows.append("|---|---|---|")
    for k, v in tm.items():
        rows.append(f"| {k} | {v:.2f} | {1000 * v / n:.1f} |")
    return "\n".join(rows)


def _cuts_arg(text):
    if text in ("auto", "none"):
        return text
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise SystemExit(f"posebert-refine: error: --cuts takes auto, none or frame numbers like 120,300; got {text!r}") \
            from None


def refine_main(argv=None):
    args = build_parser().parse_args(argv)
    from .pipeline import Pipeline, PipelineError
    from .pipeline_outputs import Terminated
    p = Pipeline(estimator=args.estimator, estimator_output=args.estimator_output, preset=args.preset,
                 smpl_dir=args.smpl_dir, mano_dir=args.mano_dir, device=args.device, baselines=tuple(args.baseline),
                 online=args.online,
                 predict_ahead=args.predict_ahead, imgsz=args.imgsz, yolo_weights=args.yolo_weights,
                 renderer=args.renderer, render=not args.no_render, skeleton_only=args.skeleton_only,
                 side_by_side=not args.no_side_by_side, max_frames=args.max_frames, progress=not args.quiet,
                 cuts=_cuts_arg(args.cuts), min_observed=args.min_observed, max_fill_seconds=args.max_fill_seconds,
                 min_box_height=args.min_box_height, max_box_aspect=args.max_box_aspect, fit_2d=not args.no_fit_2d,
                 fit=args.fit, json_arrays=args.json_arrays)
    try:
        summary = p.run(args.video, args.out)
    except PipelineError as e:
        print(f"posebert-refine: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("posebert-refine: interrupted; no partial results were kept", file=sys.stderr)
        return 130
    except Terminated as e:   # SIGTERM/SIGHUP: the staging folder is already removed
        print(f"posebert-refine: terminated by signal {e.signum}; no partial results were kept", file=sys.stderr)
        return e.code
    print(summary_table(summary))
    print(f"results in {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(refine_main())
