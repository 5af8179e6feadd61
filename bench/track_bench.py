"""Tracker benchmark: our Hungarian tracker vs ultralytics' ByteTrack on the same detections.

    python bench/track_bench.py --cache cache --scenes 48 --seed 0

Scenes (seeded): 2-4 people driven by held-out mocap (validation split), walking
across a 1280x720 canonical camera view at 30 fps, crossing each other. Their
COCO-17 keypoints are projected from the free body model, with 2 px noise; boxes
come from the keypoints. Detections are then degraded the way a detector fails:
10 % random misses, the farther person of an overlapping pair (IoU > 0.3) missed
with probability 0.7, one person leaving for 20 frames in half of the scenes, and
false positives (1 % of frames, one random box). Ground-truth identities are known.
Prints MOTA / IDF1 / ID switches (motmetrics, IoU >= 0.5) per tracker and the
median time per frame of our tracker with 4 people.
"""
from __future__ import annotations

import argparse
import os
import time
import types

import numpy as np
import torch

from posebert_plug import synth
from posebert_plug.body_model import DefaultBodyModel
from posebert_plug.mocap.dataset import MotionCache
from posebert_plug.rotations import sixd_to_rotmat
from posebert_plug.types import Detection, FrameDetections, VideoInfo
from tracking import HungarianTracker, iou_matrix

W, H, S = 1280, 720, 640.0   # image size, normalisation scale max(W, H) / 2
BODY = DefaultBodyModel()


def make_scene(cache, rng, T=150, people=3, occlude=True):
    """Ground truth per frame: {frame: [(gt_id, box, kp (17,2), conf)]} and the degraded detections."""
    starts = cache.window_starts(T, T)
    pick = rng.choice(starts, size=people, replace=False)
    rot6d, tr = cache.windows(pick, T)
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    R, cam = synth.place_in_camera(sixd_to_rotmat(rot6d), tr, g, depth=(4.0, 9.0), u_range=(-0.5, 0.5),
                                   v_range=(0.0, 0.3), random_yaw=True)
    # Lateral walks in opposite directions so that people cross.
    for p in range(people):
        speed = rng.uniform(0.8, 1.6) * (1 if p % 2 == 0 else -1)
        cam[p, :, 0] = -speed * 2.0 + speed * torch.arange(T) / 30.0 + cam[p, :, 0] - cam[p, :1, 0]
    kp = BODY.pose_keypoints(R, cam, "coco17")
    px = kp[..., :2] / kp[..., 2:].clamp_min(0.1) * (2.5 * S) + torch.tensor([W / 2, H / 2])
    px = (px + torch.randn(px.shape, generator=g) * 2.0).numpy()
    depth = cam[..., 2].numpy()
    gt, dets = {}, {}
    gone = (int(rng.integers(0, people)), int(rng.integers(30, T - 50))) if occlude else (-1, -1)
    for t in range(T):
        boxes = np.stack([np.r_[px[p, t].min(0) - 8, px[p, t].max(0) + 8] for p in range(people)])
        inside = (boxes[:, 2] > 0) & (boxes[:, 0] < W) & (boxes[:, 3] > 0) & (boxes[:, 1] < H)
        gt[t] = [(p, boxes[p]) for p in range(people) if inside[p]]
        iou = iou_matrix(boxes, boxes)
        out = []
        for p in range(people):
            if not inside[p] or rng.random() < 0.1 or (p == gone[0] and gone[1] <= t < gone[1] + 20):
                continue
            hidden = any(iou[p, q] > 0.3 and depth[q, t] < depth[p, t] for q in range(people) if q != p)
            if hidden and rng.random() < 0.7:
                continue
            out.append(Detection(t, box=boxes[p], score=float(rng.uniform(0.5, 0.95)), kp2d=px[p, t],
                                 kp2d_conf=np.full(17, 0.8), layout2d="coco17"))
        if rng.random() < 0.01:
            c = rng.uniform([100, 100], [W - 100, H - 100])
            out.append(Detection(t, box=[c[0] - 30, c[1] - 80, c[0] + 30, c[1] + 80], score=0.4,
                                 kp2d=c + rng.normal(0, 30, (17, 2)), kp2d_conf=np.full(17, 0.3), layout2d="coco17"))
        dets[t] = out
    return gt, dets


def run_ours(dets, T):
    video = VideoInfo(W, H, 30)
    tr = HungarianTracker(video=video)
    times = []
    for t in range(T):
        t0 = time.perf_counter()
        tr.update(FrameDetections(t, dets[t]))
        times.append(time.perf_counter() - t0)
    hyp = {t: [] for t in range(T)}
    for k in tr.tracks():
        for i, f in enumerate(k.frames):
            if k.observed[i]:
                hyp[int(f)].append((k.track_id, k.boxes[i]))
    return hyp, times


def run_bytetrack(dets, T):
    from ultralytics.trackers.byte_tracker import BYTETracker
    args = types.SimpleNamespace(track_high_thresh=0.25, track_low_thresh=0.1, new_track_thresh=0.25, track_buffer=30,
                                 match_thresh=0.8, fuse_score=True)
    bt = BYTETracker(args)

    class Res:
        def __init__(self, xyxy, conf):
            self.xyxy, self.conf = xyxy.reshape(-1, 4), conf
            self.cls = np.zeros(len(conf))
            self.xywh = np.column_stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                                         xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]]) if len(conf) else np.zeros((0, 4))

        def __len__(self):
            return len(self.conf)

        def __getitem__(self, m):
            return Res(self.xyxy[m], self.conf[m])

    hyp = {}
    for t in range(T):
        xyxy = np.array([d.box for d in dets[t]]).reshape(-1, 4)
        conf = np.array([d.score for d in dets[t]])
        out = bt.update(Res(xyxy, conf))
        hyp[t] = [(int(r[4]), r[:4]) for r in out]
    return hyp


def evaluate(scenes_gt, scenes_hyp):
    import motmetrics as mm
    accs = []
    for gt, hyp in zip(scenes_gt, scenes_hyp):
        acc = mm.MOTAccumulator(auto_id=True)
        for t in sorted(gt):
            g, h = gt[t], hyp.get(t, [])
            gb = np.array([b for _, b in g]).reshape(-1, 4)
            hb = np.array([b for _, b in h]).reshape(-1, 4)
            d = 1 - iou_matrix(gb, hb)
            d[d > 0.5] = np.nan
            acc.update([i for i, _ in g], [i for i, _ in h], d)
        accs.append(acc)
    mh = mm.metrics.create()
    s = mh.compute_many(accs, metrics=["mota", "idf1", "num_switches", "num_fragmentations"], generate_overall=True)
    return s.loc["OVERALL"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default="cache")
    ap.add_argument("--scenes", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cache = MotionCache(os.path.join(args.cache, "val.npz"))
    rng = np.random.default_rng(args.seed)
    gts, ours, byte, times4 = [], [], [], []
    T = 150
    for k in range(args.scenes):
        people = 2 + k % 3
        gt, dets = make_scene(cache, rng, T=T, people=people, occlude=k % 2 == 0)
        gts.append(gt)
        h, times = run_ours(dets, T)
        ours.append(h)
        if people == 4:
            times4 += times
        byte.append(run_bytetrack(dets, T))
    a, b = evaluate(gts, ours), evaluate(gts, byte)
    print(f"\n### tracking on {args.scenes} synthetic mocap scenes (2-4 people, {T} frames each)\n")
    print("| tracker | MOTA | IDF1 | ID switches | fragmentations |\n|---|---|---|---|---|")
    for name, s in (("ours (Hungarian, IoU + keypoints)", a), ("ultralytics ByteTrack", b)):
        print(f"| {name} | {100 * s['mota']:.1f} | {100 * s['idf1']:.1f} | {int(s['num_switches'])} | "
              f"{int(s['num_fragmentations'])} |")
    print(f"\nour tracker with 4 people: median {1000 * np.median(times4):.2f} ms/frame, "
          f"p95 {1000 * np.percentile(times4, 95):.2f} ms/frame ({len(times4)} frames)")


if __name__ == "__main__":
    main()
