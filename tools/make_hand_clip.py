"""Render the bundled hand clip (examples/hand_clip.mp4) and its ground truth.

    python tools/make_hand_clip.py --out examples/hand_clip.mp4 --frames 180 --seed 7

A right hand of the free hand model (``DefaultHandModel``) driven by the hand motion
generator (palm towards the camera, wrist turning up to 0.5 rad, synergies changing
every 0.25-1.5 s), rendered with skin colour and headlight shading over a soft
gradient background, 640x480 at 30 fps, OpenCV camera with focal 600 px at the
image centre. Ground truth (``<out>_gt.npz``): rotmats (T, 16, 3, 3) MANO-order,
wrist (T, 3) camera-frame metres, kp3d (T, 21, 3), kp2d (T, 21, 2) pixels, focal.
There is no free real hand video with 3D ground truth; this clip is synthetic and says so.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

W, H, FOCAL, FPS = 640, 480, 600.0, 30.0
SKIN = np.array([0.87, 0.68, 0.58])


def background():
    y, x = np.mgrid[0:H, 0:W]
    g = 70 + 50 * (y / H) + 20 * np.sin(x / 90.0)
    return np.repeat(g[..., None], 3, -1).clip(0, 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="examples/hand_clip.mp4")
    ap.add_argument("--frames", type=int, default=180)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    from adapters.video import VideoWriter
    from posebert_plug.hand_model import DefaultHandModel
    from posebert_plug.hand_motion import HandMotionGenerator
    from render import get_renderer

    hand = DefaultHandModel("right")
    base = HandMotionGenerator(hand).palm_facing_camera()
    gen = HandMotionGenerator(hand, max_wrist_turn=0.5, wrist_base=base, wrist_range=0.05)
    R, p = gen.sequence(args.frames, np.random.default_rng(args.seed))
    R = torch.from_numpy(R)
    wrist = torch.from_numpy(p) + torch.tensor([0.0, 0.06, 0.42])
    out = hand(R, wrist)
    kp3d = hand.keypoints(out, "hand21")
    kp2d = FOCAL * kp3d[..., :2] / kp3d[..., 2:] + torch.tensor([W / 2, H / 2])
    renderer = get_renderer("auto", alpha=1.0)
    bg = background()
    writer = VideoWriter(args.out, W, H, FPS)
    try:
        for t in range(args.frames):
            writer.write(renderer.render(bg.copy(), [(out.vertices[t].numpy(), hand.faces, SKIN)], FOCAL))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    gt = args.out.rsplit(".", 1)[0] + "_gt.npz"
    np.savez_compressed(gt, rotmats=R.float().numpy(), wrist=wrist.float().numpy(), kp3d=kp3d.float().numpy(),
                        kp2d=kp2d.float().numpy(), focal=np.array(FOCAL), fps=np.array(FPS))
    print(f"wrote {args.out} and {gt}: {args.frames} frames")


if __name__ == "__main__":
    main()
