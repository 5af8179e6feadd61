"""Live estimators and the tracker on the real multi-person video (../shared/data/video/vtest.avi).

    python bench/vtest_report.py --video ../shared/data/video/vtest.avi --frames 200 --sizes 640 960

Prints, per estimator and detector size: people found per frame and ms/frame
(median, CPU); then our tracker's tracks on the YOLO detections at the largest
size: number of tracks, length and observed frames, gap statistics.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import adapters
from adapters.video import probe
from tracking import track_detections


def run_estimator(name, video_path, video, frames, **opts):
    """-> (frames of detections, seconds per frame including model loading: adapters that
    detect in batches yield a whole batch at once, so per-yield timing would read ~0)."""
    t0 = time.perf_counter()
    ad = adapters.get(name)(**opts)
    out = []
    for fd in ad.run(video_path, video):
        out.append(fd)
        if len(out) >= frames:
            break
    return out, (time.perf_counter() - t0) / max(1, len(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", default="../shared/data/video/vtest.avi")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--sizes", type=int, nargs="+", default=[640, 960])
    ap.add_argument("--mediapipe", action="store_true", help="also run MediaPipe (on YOLO crops)")
    args = ap.parse_args()
    video = probe(args.video)
    print(f"\n### live estimators on {args.video} ({video.width}x{video.height}, first {args.frames} frames, CPU)\n")
    print("| estimator | detector size | people / frame | ms / frame (mean, incl. model loading) |\n|---|---|---|---|")
    last = None
    for size in args.sizes:
        fr, ts = run_estimator("yolo", args.video, video, args.frames, imgsz=size)
        print(f"| yolo (YOLO11n-pose) | {size} | {np.mean([len(f) for f in fr]):.2f} | {1000 * ts:.0f} |")
        last = fr
    if args.mediapipe:
        for size in args.sizes:
            fr, ts = run_estimator("mediapipe", args.video, video, min(args.frames, 60), imgsz=size)
            print(f"| mediapipe (on YOLO crops) | {size} | {np.mean([len(f) for f in fr]):.2f} | {1000 * ts:.0f} |")
        fr, ts = run_estimator("mediapipe", args.video, video, min(args.frames, 30), crops=False)
        print(f"| mediapipe (full frame, its own detector) | - | {np.mean([len(f) for f in fr]):.2f} | {1000 * ts:.0f} |")
    t0 = time.perf_counter()
    tracks = track_detections(last, video)
    dt = time.perf_counter() - t0
    lens = np.array([len(t) for t in tracks])
    obs = np.array([t.num_observed for t in tracks])
    gaps = [g for t in tracks for g in _gaps(t.observed)]
    print(f"\n### tracks on YOLO@{args.sizes[-1]} detections ({len(last)} frames, "
          f"tracking {1000 * dt / len(last):.2f} ms/frame)\n")
    print(f"- tracks: {len(tracks)}; length (frames) median {np.median(lens):.0f}, min {lens.min()}, max {lens.max()}")
    print(f"- observed fraction per track: median {np.median(obs / lens):.2f}, min {np.min(obs / lens):.2f}")
    print(f"- gaps: {len(gaps)}; length median {np.median(gaps) if gaps else 0:.0f}, max {max(gaps) if gaps else 0}, "
          f"total missing frames {sum(gaps)}")
    concurrent = [sum(1 for t in tracks if t.frames[0] <= f.frame <= t.frames[-1]) for f in last]
    print(f"- concurrent tracks per frame: {np.mean(concurrent):.2f}")


def _gaps(observed):
    out, run = [], 0
    for o in observed:
        if not o:
            run += 1
        elif run:
            out.append(run)
            run = 0
    return out


if __name__ == "__main__":
    main()
