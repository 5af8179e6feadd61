"""Hand preset (kp3d-hand21) vs baselines on held-out generated hand motion (prints markdown tables).

    python bench/hand_bench.py --n 32 --T 160 --out bench/results

Held-out data: sequences from ``posebert_plug.hand_motion`` with a seed the training
cache never used (training: seeds 0/1 of ``posebert-data hands``; here 1000+), placed
0.3-0.9 m in front of the canonical camera like the training data.
- denoise/fill: 3D keypoints with 1 cm Gaussian noise per coordinate and 20 % of the
  frames dropped (blocks of 1-8); PoseBERT vs nearest fill and vs nearest fill +
  Savitzky-Golay (window 31 and 9, order 2) on the keypoints.
- frame-drop sweep (the paper's Fig. 9): the same noisy keypoints with 0..90 % of the frames
  dropped at random; relative MPJPE gain over the nearest-fill input, PoseBERT vs SG (31, 2).
- prediction (the paper's Table 9): 15 observed frames (1 cm noise; and clean), hand keypoints
  at horizons 5/10/15/30 vs no-velocity (repeat the last frame) and velocity propagation.
Errors: MPJPE on the 21 hand keypoints, wrist-relative (mm); PA-MPJPE; Accel
(mm/frame^2), over every ground-truth frame.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from posebert_plug import baselines as B
from posebert_plug import metrics as M
from posebert_plug import synth
from posebert_plug.hand_model import DefaultHandModel
from posebert_plug.hand_motion import HandMotionGenerator
from posebert_plug.presets import get_preset, load_model
from posebert_plug.refine import refine_tracks
from posebert_plug.types import Detection, Track, VideoInfo

HAND = DefaultHandModel("right")
VIDEO = VideoInfo(1024, 1024, 30.0)   # canonical camera


def sequences(n, T, seed):
    """n held-out sequences -> (R (n, T, 16, 3, 3), wrist (n, T, 3), kp3d (n, T, 21, 3)) camera frame."""
    gen = HandMotionGenerator(HAND)
    rng = np.random.default_rng(seed)
    Rs, ps = zip(*[gen.sequence(T, rng) for _ in range(n)])
    g = torch.Generator().manual_seed(seed)
    R, tr = synth.place_in_camera(torch.from_numpy(np.stack(Rs)), torch.from_numpy(np.stack(ps)), g,
                                  **{**get_preset("kp3d-hand21").placement, "depth": (0.3, 0.9)})
    return R, tr, HAND.pose_keypoints(R, tr, "hand21")


def tracks_of(kp, obs):
    out = []
    for i in range(len(kp)):
        dets = [Detection(t, kp3d=kp[i, t].numpy(), layout3d="hand21", side="right") for t in range(kp.shape[1])
                if obs[i, t]]
        out.append(Track.from_detections(i, dets, VIDEO).padded(0, kp.shape[1] - 1))
    return out


def rel(k):
    k = torch.as_tensor(np.asarray(k)).float()
    return k - k[..., :1, :]


def scores(pred, gt):
    P, G = rel(pred), rel(gt)
    return float(M.mpjpe(P, G)), float(M.pa_mpjpe(P, G)), float(M.accel_error(P, G))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--T", type=int, default=160)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--checkpoint", help="a kp3d-hand21 model.pt instead of the shipped weights")
    ap.add_argument("--out", default=None, help="folder for hand_bench.md")
    args = ap.parse_args(argv)
    model = load_model("kp3d-hand21", checkpoint=args.checkpoint)
    lines = []
    R, tr, kp = sequences(args.n, args.T, args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    noisy = kp + 0.01 * torch.randn(kp.shape, generator=g)
    obs = synth.block_mask(args.n, args.T, 0.2, 0.2, 1, 8, g)
    obs[:, 0] = True
    near = np.stack([B.nearest_fill(noisy[i].numpy(), obs[i].numpy()) for i in range(args.n)])
    sg31 = np.stack([B.savgol(noisy[i].double().numpy(), obs[i].numpy(), window=31) for i in range(args.n)])
    sg9 = np.stack([B.savgol(noisy[i].double().numpy(), obs[i].numpy(), window=9) for i in range(args.n)])
    pb = np.stack([r.joints for r in refine_tracks(tracks_of(noisy, obs), model=model)])
    lines += [f"\n### hand denoise + fill: 1 cm keypoint noise, 20% frames dropped in blocks of 1-8 "
              f"({args.n} held-out generated sequences x {args.T} frames)\n",
              "| method | MPJPE | PA-MPJPE | Accel |", "|---|---|---|---|"]
    for name, pred in (("input (nearest fill)", near), ("Savitzky-Golay (31, 2)", sg31), ("Savitzky-Golay (9, 2)", sg9),
                       ("PoseBERT kp3d-hand21", pb)):
        e = scores(pred, kp)
        lines.append(f"| {name} | {e[0]:.1f} | {e[1]:.1f} | {e[2]:.1f} |")

    lines += ["\n### hand frame-drop sweep (the paper's Fig. 9 setting): 1 cm noise, frames dropped at random; "
              "gain = relative MPJPE reduction vs the nearest-fill input\n",
              "| dropped | input MPJPE | SG (31, 2) MPJPE | PoseBERT MPJPE | SG gain % | PoseBERT gain % |",
              "|---|---|---|---|---|---|"]
    for p in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9):
        gs = torch.Generator().manual_seed(args.seed + 2)
        drop = synth.random_mask(args.n, args.T, p, p, gs)
        drop[:, 0] |= ~drop.any(1)
        near = np.stack([B.nearest_fill(noisy[i].numpy(), drop[i].numpy()) for i in range(args.n)])
        sg = np.stack([B.savgol(noisy[i].double().numpy(), drop[i].numpy(), window=31) for i in range(args.n)])
        pb = np.stack([r.joints for r in refine_tracks(tracks_of(noisy, drop), model=model)])
        e0, es, ep = scores(near, kp)[0], scores(sg, kp)[0], scores(pb, kp)[0]
        lines.append(f"| {int(p * 100)}% | {e0:.1f} | {es:.1f} | {ep:.1f} | {100 * (e0 - es) / e0:.0f} | "
                     f"{100 * (e0 - ep) / e0:.0f} |")

    obs_len, hs = 15, [5, 10, 15, 30]
    R, tr, kp = sequences(args.n, obs_len + max(hs), args.seed + 7)
    for label, sigma in (("1 cm noise", 0.01), ("clean", 0.0)):
        past = kp[:, :obs_len] + sigma * torch.randn(kp[:, :obs_len].shape, generator=g)
        fut = refine_tracks(tracks_of(past, torch.ones(args.n, obs_len, dtype=torch.bool)), model=model,
                            extra_frames=max(hs))
        errs = {k: {h: [] for h in hs} for k in ("no-velocity", "velocity", "PoseBERT")}
        for i in range(args.n):
            p = past[i].double().numpy()
            nv, vel = B.predict_no_velocity(p, max(hs)), B.predict_velocity(p, max(hs))
            for h in hs:
                gt = rel(kp[i, obs_len + h - 1])[None]
                errs["no-velocity"][h].append(float(M.mpjpe(rel(nv[h - 1])[None], gt)))
                errs["velocity"][h].append(float(M.mpjpe(rel(vel[h - 1])[None], gt)))
                errs["PoseBERT"][h].append(float(M.mpjpe(rel(fut[i].joints[obs_len + h - 1])[None], gt)))
        lines += [f"\n### hand future prediction from {obs_len} observed frames ({label}), MPJPE (mm) at horizon h\n",
                  "| method | " + " | ".join(f"h={h}" for h in hs) + " |", "|---|" + "---|" * len(hs)]
        for k, v in errs.items():
            lines.append(f"| {k} | " + " | ".join(f"{np.mean(v[h]):.1f}" for h in hs) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "hand_bench.md"), "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
