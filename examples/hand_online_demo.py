"""Online hand demo: webcam (or a video file) -> MediaPipe Hands -> streaming PoseBERT -> robot joint angles.

    python examples/hand_online_demo.py                       # webcam if one exists, else examples/hand_clip.mp4
    python examples/hand_online_demo.py --source my_hands.mp4 --ahead 3 --out out/hand_stream.jsonl

Per frame and hand: MediaPipe Hands gives 21 keypoints (2D pixels + 3D metres); the
OnlineRefiner keeps the last ``--history`` frames (64) of that hand and returns the
refined pose of the newest frame and the pose ``--ahead`` frames later (a prediction
that cancels the pipeline's latency, as in the paper's teleoperation use). Each line
of ``--out`` is one JSON object a robot-hand controller can read:

    {"frame": 12, "time_s": 0.4, "side": "right", "latency_ms": 7.9, "ahead": 3,
     "wrist_m": [x, y, z], "fingers_deg": {"thumb": [opp, mcp, ip], "index": [mcp, pip, dip], ...}}

Angles are of the predicted pose when ``--ahead`` > 0 (else the current one), in
degrees, positive = closing. The console shows per-frame refinement latency and,
at the end, the median; with the bundled clip it also scores against the clip's
ground truth (examples/hand_clip_gt.npz).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CLIP = os.path.join(HERE, "hand_clip.mp4")


def frames_from(source):
    """Yield (index, RGB frame) from a webcam device (/dev/videoN) or a video file, streamed."""
    import av
    if source.startswith("/dev/video"):
        container = av.open(source, format="v4l2")
    else:
        container = av.open(source)
    with container:
        for i, frame in enumerate(container.decode(video=0)):
            yield i, frame.to_ndarray(format="rgb24")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="auto", help="auto (webcam /dev/video0 if present, else the bundled clip), "
                                                     "a /dev/videoN device, or a video file")
    ap.add_argument("--ahead", type=int, default=3, help="frames to predict ahead (0 = current pose only)")
    ap.add_argument("--history", type=int, default=64, help="frames kept per hand")
    ap.add_argument("--out", default="out/hand_stream.jsonl", help="JSON-lines stream of joint angles")
    ap.add_argument("--mirrored", action="store_true", help="the source is already mirrored (selfie view)")
    ap.add_argument("--max-frames", type=int, default=0)
    ap.add_argument("--quiet", action="store_true", help="no per-frame lines, only the summary")
    ap.add_argument("--checkpoint", help="a kp3d-hand21 model.pt instead of the shipped weights")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for refinement (0 = all cores; "
                    "MediaPipe and refinement run one after the other, so they do not compete)")
    args = ap.parse_args(argv)
    source = args.source
    if source == "auto":
        source = "/dev/video0" if os.path.exists("/dev/video0") else CLIP
    if not source.startswith("/dev/video") and not os.path.isfile(source):
        print(f"hand demo: error: no such video {source!r}", file=sys.stderr)
        return 2

    import mediapipe as mp
    import torch
    from adapters.hands import MediaPipeHandsAdapter
    from adapters.video import probe
    from posebert_plug.hand_model import DefaultHandModel
    from posebert_plug.hand_motion import HandMotionGenerator, finger_angles
    from posebert_plug.refine import OnlineRefiner, mirror_x
    from posebert_plug.types import VideoInfo

    if args.threads:
        torch.set_num_threads(args.threads)
    video = probe(source) if not source.startswith("/dev/video") else VideoInfo(640, 480, 30.0)
    gt = None
    if os.path.abspath(source) == CLIP:
        g = np.load(os.path.join(HERE, "hand_clip_gt.npz"))
        gt = g["kp3d"]
        video = VideoInfo(video.width, video.height, video.fps, focal_px=float(g["focal"]))
    from posebert_plug.presets import load_model
    model = load_model("kp3d-hand21", checkpoint=args.checkpoint)
    refiner = OnlineRefiner(model, video=video, history=args.history, predict_ahead=args.ahead)
    axes = HandMotionGenerator(DefaultHandModel("right"))
    mph = MediaPipeHandsAdapter()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    lat, det_ms, errs_in, errs_out = [], [], [], []
    tmp = args.out + ".part"
    with open(tmp, "w") as stream, mp.solutions.hands.Hands(static_image_mode=False, max_num_hands=2,
                                                            model_complexity=1, min_detection_confidence=0.5) as hands:
        for idx, rgb in frames_from(source):
            if args.max_frames and idx >= args.max_frames:
                break
            t0 = time.perf_counter()
            dets = {d.side: d for d in mph.detect(hands, rgb, idx, video.width, video.height, args.mirrored)}
            det_ms.append(1000 * (time.perf_counter() - t0))
            for side in ("left", "right"):
                if side not in dets and side not in refiner.buffers:
                    continue
                t1 = time.perf_counter()
                cur, ahead = refiner.step(side, dets.get(side))
                ms = 1000 * (time.perf_counter() - t1)
                if cur is None:
                    continue
                lat.append(ms)
                R, wrist = ahead if ahead is not None else cur
                Rr = torch.as_tensor(R)
                if side == "left":   # angles are read on the right-hand frame
                    Rr, _ = mirror_x(Rr, torch.zeros(3))
                ang = {k: [round(float(a), 1) for a in v] for k, v in finger_angles(Rr, axes).items()}
                stream.write(json.dumps({"frame": idx, "time_s": round(idx / video.fps, 3), "side": side,
                                         "latency_ms": round(ms, 2), "ahead": args.ahead,
                                         "wrist_m": [round(float(x), 4) for x in wrist], "fingers_deg": ang}) + "\n")
                if gt is not None and side in dets and idx < len(gt):
                    # Shape accuracy, wrist-centred (MediaPipe's world landmarks have their own scale and origin).
                    from posebert_plug.metrics import pa_mpjpe
                    hand = refiner.ref.output_body("kp3d-hand21", side)
                    mine = hand.pose_keypoints(torch.as_tensor(cur[0])[None], None, "hand21")[0]
                    ref = torch.as_tensor(gt[idx])[None].float()
                    errs_out.append(float(pa_mpjpe(mine[None].float(), ref)))
                    errs_in.append(float(pa_mpjpe(torch.as_tensor(dets[side].kp3d)[None].float(), ref)))
                if not args.quiet:
                    print(f"frame {idx:4d} {side:5s} refine {ms:6.2f} ms  mediapipe {det_ms[-1]:6.1f} ms  "
                          f"index MCP/PIP/DIP {ang['index']}")
    os.replace(tmp, args.out)
    if not lat:
        print("hand demo: no hand found in the source", file=sys.stderr)
        return 3
    print(f"\nframes {idx + 1}, hand-frames refined {len(lat)}; median refinement latency "
          f"{statistics.median(lat):.2f} ms (p90 {np.percentile(lat, 90):.2f}), median MediaPipe "
          f"{statistics.median(det_ms):.1f} ms per frame; stream: {args.out}")
    if errs_out:
        print(f"vs the clip's ground truth (PA-MPJPE, mm, frames with a detection): MediaPipe "
              f"{np.mean(errs_in):.1f}, PoseBERT online {np.mean(errs_out):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
