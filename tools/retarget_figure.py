"""Figure: source skeleton beside its SMPL-24 retargeting (walk, kick, dance).

    python tools/retarget_figure.py --clips DIR/walk.bvh DIR/kick.bvh DIR/dance.bvh --out docs/retarget.png
"""
from __future__ import annotations

import argparse
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from posebert_plug.body_model import DefaultBodyModel
from posebert_plug.mocap.dataset import Clip, read_source
from posebert_plug.mocap.retarget import retarget
from posebert_plug.skeletons import SMPL24


def draw(ax, pts, parents, color, skip=()):
    for c, p in enumerate(parents):
        if p >= 0 and p not in skip:
            ax.plot([pts[p, 0], pts[c, 0]], [pts[p, 2], pts[c, 2]], [pts[p, 1], pts[c, 1]], color=color, lw=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", nargs="+", required=True)
    ap.add_argument("--frames", type=int, default=4, help="frames shown per clip")
    ap.add_argument("--out", default="docs/retarget.png")
    args = ap.parse_args()
    body = DefaultBodyModel().double()
    fig = plt.figure(figsize=(4 * args.frames, 4 * len(args.clips)))
    for r, path in enumerate(args.clips):
        src, jm = read_source(Clip(os.path.basename(path), path, "bvh"))
        m = retarget(src, jm)
        J = body(torch.as_tensor(m.rotmats), torch.as_tensor(m.transl), return_vertices=False).joints.numpy()
        for k, t in enumerate(np.linspace(0, m.num_frames - 1, args.frames).astype(int)):
            ax = fig.add_subplot(len(args.clips), args.frames, r * args.frames + k + 1, projection="3d")
            offset = np.array([0.8, 0, 0])
            pelvis = src.index(jm.joints["pelvis"])
            draw(ax, src.positions[t], src.parents, "tab:blue", skip=[p for p in range(pelvis)])
            draw(ax, J[t] + offset, SMPL24.parents, "tab:orange")
            c = src.positions[t, pelvis] + offset / 2
            c[1] = 1.0
            ax.set_xlim(c[0] - 1, c[0] + 1)
            ax.set_ylim(c[2] - 1, c[2] + 1)
            ax.set_zlim(0, 2)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_zticks([])
            ax.view_init(elev=10, azim=-80)
            ax.set_title(f"{os.path.basename(path)} t={t}\nsource (blue) | SMPL-24 (orange)", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=70)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
