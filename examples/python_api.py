"""The Python API on the bundled clip: detect, track, refine, predict, save.

    python examples/python_api.py                         # first 90 frames of examples/vtest_clip.mp4
    python examples/python_api.py VIDEO --frames 300 --out out/api

The same steps as ``posebert-refine VIDEO --estimator yolo`` without the rendering:
YOLO11n-pose per frame -> Hungarian tracker -> PoseBERT (``kp2d-coco17``, free body
model) per track, then 10 frames predicted past the end of the longest track. Prints,
per track, how many frames were observed and how many PoseBERT filled; writes
``tracks.npz`` (``posebert_plug.load_tracks`` reads it back). Accuracy against ground
truth, and against the Savitzky-Golay baseline, is what ``bench/e2e.py`` measures.
"""
from __future__ import annotations

import argparse
import itertools
import os


import adapters
from adapters.video import probe
from posebert_plug import predict_future, refine_tracks
from posebert_plug.types import save_tracks
from tracking import track_detections

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", nargs="?", default=os.path.join(HERE, "vtest_clip.mp4"))
    ap.add_argument("--frames", type=int, default=90, help="frames to process from the start")
    ap.add_argument("--out", default=os.path.join("out", "api"))
    args = ap.parse_args(argv)

    video = probe(args.video)                                        # VideoInfo: width, height (px), fps
    detector = adapters.get("yolo")(imgsz=960)
    frames = list(itertools.islice(detector.run(args.video, video), args.frames))   # list[FrameDetections]
    tracks = track_detections(frames, video)                         # list[Track], gaps marked unobserved
    if not tracks:
        raise SystemExit(f"nobody tracked in the first {args.frames} frames of {args.video}")
    refined = refine_tracks(tracks)                                  # list[RefinedTrack], metres, camera frame

    print("| track | frames | observed | filled | pelvis depth (m) |")
    print("|---|---|---|---|---|")
    for r in refined:
        z = r.transl[:, 2]
        print(f"| {r.track_id} | {len(r)} | {int(r.observed.sum())} | {int(r.filled.sum())} | "
              f"{z.min():.1f}-{z.max():.1f} |")

    longest = max(tracks, key=len)
    future = predict_future(longest, 10)                             # the track plus 10 predicted frames
    x, y, z = future.transl[-1]
    print(f"\ntrack {longest.track_id}: {len(longest)} frames, predicted to {len(future)}; 10 frames after "
          f"the last, the pelvis is at x={x:.2f} y={y:.2f} z={z:.2f} m (camera frame)")

    os.makedirs(args.out, exist_ok=True)
    save_tracks(os.path.join(args.out, "tracks.npz"), refined, video)
    print(f"wrote {os.path.join(args.out, 'tracks.npz')}")
    return refined


if __name__ == "__main__":
    main()
