"""A long test input for the memory check: the bundled clip resized and looped, plus an
mmpose-format JSON of YOLO11n-pose's detections on the clip, tiled with the frame offset
(so the long run needs no hour of detection).

    python tools/make_long_video.py --minutes 20 --out /tmp/long   # -> long.mp4, long_mmpose.json
    posebert-refine /tmp/long/long.mp4 --estimator mmpose --estimator-output /tmp/long/long_mmpose.json
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
from PIL import Image

import adapters
from adapters.video import VideoWriter, iter_frames, probe


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", default="examples/vtest_clip.mp4")
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    v = probe(args.clip)
    W, H = args.size
    frames = [np.asarray(Image.fromarray(im).resize((W, H))) for _, im in iter_frames(args.clip)]
    dets = list(adapters.get("yolo")().run(args.clip, v))
    sx, sy = W / v.width, H / v.height
    loops = max(1, int(args.minutes * 60 * v.fps / len(frames)))
    with VideoWriter(os.path.join(args.out, "long.mp4"), W, H, v.fps) as w:
        for _ in range(loops):
            for im in frames:
                w.write(im)
    out = [{"frame_id": k * len(frames) + f.frame,
            "instances": [{"keypoints": (d.kp2d * [sx, sy]).tolist(), "keypoint_scores": d.kp2d_conf.tolist(),
                           "bbox": [(d.box * [sx, sy, sx, sy]).tolist()], "bbox_score": d.score}
                          for d in f.detections]}
           for k in range(loops) for f in dets]
    with open(os.path.join(args.out, "long_mmpose.json"), "w") as f:
        json.dump(out, f)
    print(f"{loops} loops, {loops * len(frames)} frames at {v.fps} fps -> {args.out}")


if __name__ == "__main__":
    main()
