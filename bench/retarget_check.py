"""Bone-direction agreement between source mocap and its SMPL-24 retargeting.

    python bench/retarget_check.py --src ../shared/data/mocap --clips 20 --seed 0

Unpacks nothing: pass a folder of already unpacked clips, or the archives'
folder (they are unpacked to a temporary folder). Prints the mean cosine
between source and SMPL bone directions on limb chains (upper arm, forearm,
thigh, shin; both sides) per clip and overall.
"""
from __future__ import annotations

import argparse
import random

import numpy as np
import torch

from posebert_plug.body_model import DefaultBodyModel
from posebert_plug.mocap.dataset import list_clips, read_source
from posebert_plug.mocap.retarget import retarget
from posebert_plug.skeletons import SMPL24

LIMBS = [("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("right_shoulder", "right_elbow"),
         ("right_elbow", "right_wrist"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
         ("right_hip", "right_knee"), ("right_knee", "right_ankle")]


def limb_cosines(src, jm, motion, body):
    out = body(torch.as_tensor(motion.rotmats), torch.as_tensor(motion.transl), return_vertices=False)
    J = out.joints.numpy()
    cos = []
    for a, b in LIMBS:
        sa, sb = src.index(jm.joints[a]), src.index(jm.joints[b])
        ds = src.positions[:, sb] - src.positions[:, sa]
        dm = J[:, SMPL24.index(b)] - J[:, SMPL24.index(a)]
        c = (ds * dm).sum(-1) / (np.linalg.norm(ds, axis=-1) * np.linalg.norm(dm, axis=-1) + 1e-12)
        cos.append(c.mean())
    return float(np.mean(cos))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", required=True)
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    body = DefaultBodyModel().double()
    with list_clips(args.src) as clips:
        random.Random(args.seed).shuffle(clips)
        rows = []
        for clip in clips[: args.clips]:
            src, jm = read_source(clip)
            m = retarget(src, jm)
            rows.append((clip.name, limb_cosines(src, jm, m, body)))
    for name, c in rows:
        print(f"{name:60s} {c:.4f}")
    print(f"mean limb-chain bone-direction cosine over {len(rows)} clips: {np.mean([c for _, c in rows]):.4f}")


if __name__ == "__main__":
    main()
