"""Generalisation benchmark: held-out performers, per motion family (prints markdown tables).

    python bench/generalize.py --cache cache [--smpl-checkpoint runs/x/model.pt] [--sections corrupt sweep predict]

The validation split of the cache holds whole performers out (``posebert_plug.mocap.dataset``:
CMU 03 locomotion, CMU 14 everyday, the CMU 60/61 salsa couple, CMU 135 martial arts, and the
Bandai 'old'/'elderly' styles). Every table is printed per motion family and over all of them.

Sections (smpl preset unless said; MPJPE in mm on SMPL-24 joints, root-relative, every frame):
- corrupt: input (nearest fill), Savitzky-Golay (31, 2) and PoseBERT under
  realistic = 0.1 rad + 10% outlier poses + 25% dropped in blocks of 1-15;
  swaps = left/right arms or legs swapped on 5% of frames + 0.05 rad;
  heavy = Student-t (3 dof) rotation noise with a median angle of 0.05 rad;
  gaps = 60% dropped in blocks of 10-40 + 0.05 rad; clean = the ground truth itself;
  rig shift = realistic on the same motion retargeted with 25-degree rest offsets at the rig joints.
- sweep: 0..90% of frames dropped (iid, 0.1 rad): MPJPE gain over the nearest-fill input; the oracle
  column slerps between the noise-free poses of the observed frames (what perfect denoising followed
  by interpolation would reach).
- predict: 15 observed frames (clean, 0.05 rad), MPJPE at h = 5, 10, 15, 30 vs no-velocity.
- kp2d: kp2d-coco17 from cameras 30-60 degrees above the horizon: median torso pitch error of
  upright frames, and median 2D reprojection error of the output vs the input's.
- kp3d: kp3d-h36m17 from clean keypoints and from 3 cm noise + +-10% depth-scale jitter: the
  refined keypoints and the fitted body's keypoints vs SG on the input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refine_bench as RB  # noqa: E402  (sequences, corrupt, tracks, scores: one definition)

from posebert_plug import baselines as B  # noqa: E402
from posebert_plug import synth  # noqa: E402
from posebert_plug.mocap.dataset import FAMILIES, MotionCache  # noqa: E402
from posebert_plug.refine import refine_tracks  # noqa: E402
from posebert_plug.rotations import sixd_to_rotmat  # noqa: E402

MODELS = {"PoseBERT": "smpl"}   # name -> preset name or loaded model
FIT_OPTIONS = None                 # --fit-options (kp2d section)


def family_sequences(cache, family, n, T, seed, rig_deg=0.0):
    """n windows of T frames from the family's held-out clips, placed in the camera as refine_bench does."""
    ok = np.flatnonzero(cache.clip_family == family)
    starts = np.concatenate([s + np.arange(0, L - T + 1, T // 2) for s, L in
                             zip(cache.clip_start[ok], cache.clip_len[ok]) if L >= T] or [np.zeros(0, int)])
    if len(starts) == 0:
        return None
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.choice(starts, size=min(n, len(starts)), replace=False))
    rot6d, tr = cache.windows(starts, T)
    if rig_deg:
        rot6d = synth.rig_offsets(rot6d, torch.Generator().manual_seed(seed + 7), rig_deg)
    return synth.place_in_camera(sixd_to_rotmat(rot6d), tr, torch.Generator().manual_seed(seed), depth=(3.0, 8.0))


def heavy_noise(R, median_angle, g):
    """Student-t (3 dof) axis-angle noise scaled so the median rotation angle is ``median_angle``."""
    eps = synth.heavy_tailed(R.shape[:-2] + (3,), g)
    eps = eps * (median_angle / eps.norm(dim=-1).median())
    from posebert_plug.rotations import rotvec_to_rotmat
    return R @ rotvec_to_rotmat(eps)


def corruption(name, R, tr, seed):
    g = torch.Generator().manual_seed(seed + 1)
    if name == "realistic" or name == "rig shift":
        return RB.corrupt(R, tr, g)
    if name == "clean":
        return RB.corrupt(R, tr, g, noise=0, outliers=0, drop=0)
    if name == "swaps":
        Rn, obs = RB.corrupt(R, tr, g, noise=0.05, outliers=0, drop=0)
        return synth.swap_limbs(Rn, torch.full((len(R),), 0.05), g, conj=synth.MIRROR_X), obs
    if name == "heavy":
        return heavy_noise(R, 0.05, g), torch.ones(R.shape[:2], dtype=torch.bool)
    if name == "gaps":
        return RB.corrupt(R, tr, g, noise=0.05, outliers=0, drop=0.6, blocks=(10, 40))
    raise KeyError(name)


def refine(model, Rn, tr, obs, **kw):
    return np.stack([r.rotmats for r in refine_tracks(RB.smpl_tracks(Rn, tr, obs), model=model, **kw)])


def section_corrupt(cache, args):
    names = ["realistic", "swaps", "heavy", "gaps", "clean", "rig shift"]
    print(f"\n### corruptions per held-out family ({args.n} windows x {args.T} frames per family; MPJPE mm; "
          "ratio = PoseBERT / SG)\n")
    cols = ["input", "SG"] + list(MODELS)
    print("| family | corruption | " + " | ".join(cols) + " | " + " | ".join(f"{m} / SG" for m in MODELS) + " |")
    print("|---|---|" + "---|" * (len(cols) + len(MODELS)))
    total = {}
    for fam in FAMILIES:
        for name in names:
            seq = family_sequences(cache, fam, args.n, args.T, args.seed, rig_deg=25.0 if name == "rig shift" else 0.0)
            if seq is None:
                continue
            R, tr = seq
            Rn, obs = corruption(name, R, tr, args.seed)
            res = {"input": np.stack([B.nearest_fill(Rn[i].numpy(), obs[i].numpy()) for i in range(len(R))]),
                   "SG": np.stack([B.savgol_rotations(Rn[i].double().numpy(), obs[i].numpy()) for i in range(len(R))])}
            for m, model in MODELS.items():
                res[m] = refine(model, Rn, tr, obs)
            e = {k: RB.scores(v, R)[0] for k, v in res.items()}
            for k, v in e.items():
                total.setdefault((name, k), []).append((v, len(R)))
            print(f"| {fam} | {name} | " + " | ".join(f"{e[c]:.1f}" for c in cols) + " | "
                  + " | ".join(f"{e[m] / max(e['SG'], 1e-9):.2f}" for m in MODELS) + " |")
    for name in names:
        e = {k: sum(v * n for v, n in total[(name, k)]) / sum(n for _, n in total[(name, k)]) for k in cols
             if (name, k) in total}
        print(f"| **all** | {name} | " + " | ".join(f"{e[c]:.1f}" for c in cols) + " | "
              + " | ".join(f"{e[m] / max(e['SG'], 1e-9):.2f}" for m in MODELS) + " |")


def section_sweep(cache, args):
    rates = [0.0, 0.5, 0.7, 0.9]
    print("\n### frame-drop sweep per family (0.1 rad; gain % = MPJPE reduction vs nearest-fill input; "
          "oracle = slerp between the noise-free poses of the observed frames: perfect denoising, then "
          "slerp)\n")
    print("| family | dropped | input | SG | " + " | ".join(MODELS) + " | SG gain % | "
          + " | ".join(f"{m} gain %" for m in MODELS) + " | oracle gain % |")
    print("|---|---|---|---|" + "---|" * (2 * len(MODELS) + 2))
    total = {}
    for fam in list(FAMILIES):
        seq = family_sequences(cache, fam, args.n, args.T, args.seed)
        if seq is None:
            continue
        R, tr = seq
        for p in rates:
            g = torch.Generator().manual_seed(args.seed + 2)
            Rn, obs = RB.corrupt(R, tr, g, noise=0.1, outliers=0.0, drop=p, iid=True)
            e = {"input": RB.scores(np.stack([B.nearest_fill(Rn[i].numpy(), obs[i].numpy()) for i in range(len(R))]), R)[0],
                 "SG": RB.scores(np.stack([B.savgol_rotations(Rn[i].double().numpy(), obs[i].numpy())
                                           for i in range(len(R))]), R)[0],
                 "oracle": RB.scores(np.stack([B.interpolate_rotations(R[i].double().numpy(), obs[i].numpy())
                                               for i in range(len(R))]), R)[0]}
            for m, model in MODELS.items():
                e[m] = RB.scores(refine(model, Rn, tr, obs), R)[0]
            for k, v in e.items():
                total.setdefault((p, k), []).append((v, len(R)))
            gain = {k: 100 * (e["input"] - v) / e["input"] for k, v in e.items()}
            print(f"| {fam} | {int(p * 100)}% | {e['input']:.1f} | {e['SG']:.1f} | "
                  + " | ".join(f"{e[m]:.1f}" for m in MODELS) + f" | {gain['SG']:.0f} | "
                  + " | ".join(f"{gain[m]:.0f}" for m in MODELS) + f" | {gain['oracle']:.0f} |")
    for p in rates:
        e = {k: sum(v * n for v, n in total[(p, k)]) / sum(n for _, n in total[(p, k)])
             for k in ["input", "SG", "oracle", *MODELS]}
        gain = {k: 100 * (e["input"] - v) / e["input"] for k, v in e.items()}
        print(f"| **all** | {int(p * 100)}% | {e['input']:.1f} | {e['SG']:.1f} | "
              + " | ".join(f"{e[m]:.1f}" for m in MODELS) + f" | {gain['SG']:.0f} | "
              + " | ".join(f"{gain[m]:.0f}" for m in MODELS) + f" | {gain['oracle']:.0f} |")


def section_predict(cache, args):
    obs_len, hs = 15, [5, 10, 15, 30]
    print(f"\n### prediction from {obs_len} frames, MPJPE at horizon h: no-velocity / "
          + " / ".join(MODELS) + "\n")
    print("| family | input noise (rad) | " + " | ".join(f"h={h}" for h in hs) + " |\n|---|---|" + "---|" * len(hs))
    total = {}
    for fam in FAMILIES:
        seq = family_sequences(cache, fam, args.n, obs_len + max(hs), args.seed)
        if seq is None:
            continue
        R, tr = seq
        gt = RB.joints(R)
        for noise in (0.0, 0.05):
            Ro = synth.rotation_noise(R, noise, torch.Generator().manual_seed(args.seed + 3)) if noise else R
            ones = torch.ones(len(R), obs_len, dtype=torch.bool)
            last = RB.joints(Ro[:, obs_len - 1])
            outs = {m: RB.joints(refine(model, Ro[:, :obs_len], tr[:, :obs_len], ones, extra_frames=max(hs)))
                    for m, model in MODELS.items()}
            cells = []
            for h in hs:
                g = gt[:, obs_len + h - 1]
                errs = [float((last - g).norm(dim=-1).mean() * 1000)] + \
                       [float((o[:, obs_len + h - 1] - g).norm(dim=-1).mean() * 1000) for o in outs.values()]
                total.setdefault((noise, h), []).append((errs, len(R)))
                cells.append(" / ".join(f"{x:.1f}" for x in errs))
            print(f"| {fam} | {noise} | " + " | ".join(cells) + " |")
    for noise in (0.0, 0.05):
        cells = []
        for h in hs:
            rows = total[(noise, h)]
            errs = np.sum([np.array(e) * n for e, n in rows], 0) / sum(n for _, n in rows)
            cells.append(" / ".join(f"{x:.1f}" for x in errs))
        print(f"| **all** | {noise} | " + " | ".join(cells) + " |")


def kp3d_tracks(kp, video, root_relative=False):
    from posebert_plug.types import Detection, Track
    return [Track.from_detections(i, [Detection(t, kp3d=kp[i, t].numpy(), layout3d="h36m17", score=0.9,
                                                kp3d_root_relative=root_relative)
                                      for t in range(kp.shape[1])], video) for i in range(len(kp))]


def section_kp3d(cache, args):
    """kp3d-h36m17: refined keypoints vs their input (clean), and vs SG under 3 cm noise + depth-scale jitter."""
    print("\n### kp3d-h36m17: refined keypoints (`RefinedTrack.keypoints`) and the fitted body "
          f"({args.n} windows x {args.T} frames per family; mm, root-relative keypoint error vs ground truth)\n")
    print("| family | input | input error | SG (31, 2) | refined keypoints | body joints (h36m17 of the fitted body) |")
    print("|---|---|---|---|---|---|")
    body = RB.BODY
    for fam in FAMILIES:
        seq = family_sequences(cache, fam, args.n, args.T, args.seed)
        if seq is None:
            continue
        R, tr = seq
        kp = body.pose_keypoints(R, tr, "h36m17")
        g = torch.Generator().manual_seed(args.seed + 5)
        root = kp[:, :, :1]
        scale = 1 + (torch.rand(len(R), 1, 1, 1, generator=g) * 2 - 1) * 0.1
        noisy = kp + torch.randn(kp.shape, generator=g) * 0.03
        noisy = torch.cat([noisy[..., :2], root[..., 2:] + (noisy[..., 2:] - root[..., 2:]) * scale], -1)
        for name, inp in (("clean", kp), ("3 cm + depth scale +-10%", noisy)):
            out = refine_tracks(kp3d_tracks(inp, RB.VIDEO), model=KP3D_MODEL)
            ref = torch.as_tensor(np.stack([o.keypoints for o in out]))
            bj = body.pose_keypoints(torch.as_tensor(np.stack([o.rotmats for o in out])), None, "h36m17")
            obs = torch.ones(inp.shape[:2], dtype=torch.bool)
            sg = torch.as_tensor(np.stack([B.savgol(inp[i].double().numpy(), obs[i].numpy()) for i in range(len(R))]))

            def err(p):
                p, q = p - p[:, :, :1], kp - kp[:, :, :1]
                return float((p.float() - q).norm(dim=-1).mean() * 1000)
            print(f"| {fam} | {name} | {err(inp):.1f} | {err(sg):.1f} | {err(ref):.1f} | {err(bj):.1f} |")


KP3D_MODEL = "kp3d-h36m17"
KP2D_MODEL = "kp2d-coco17"


def torso_pitch(R):
    """Pitch (degrees) of the pelvis->neck direction in the camera frame (OpenCV: y down, z forward);
    R (..., 24, 3, 3) with the root in the camera frame -> (...)."""
    j = RB.BODY.pose_keypoints(torch.as_tensor(np.asarray(R)).float(), None, "smpl24")
    up = j[..., 12, :] - j[..., 0, :]
    return torch.rad2deg(torch.atan2(up[..., 2], -up[..., 1]))


def section_kp2d(cache, args):
    """kp2d-coco17 seen from raised cameras (30-60 degrees down): torso pitch error of upright frames,
    and the 2D reprojection error of the output vs the input's (pixels, observed frames, 1024 px)."""
    from posebert_plug.camera import project
    from posebert_plug.types import Detection, Track
    noise = "3 px noise" if args.kp2d_noise == "iid" else "3 px slow noise (AR(1), 0.9 per frame)"
    print(f"\n### kp2d-coco17 from raised cameras (30-60 degrees looking down; {noise} + 5% 50-px outliers, "
          f"{args.n} windows x {args.T} frames per family; 1024 px image)\n")
    print("| family | upright frames | median torso pitch error (deg) | 2D error input (px) | 2D error output (px) |")
    print("|---|---|---|---|---|")
    for fam in FAMILIES:
        ok = np.flatnonzero(cache.clip_family == fam)
        starts = np.concatenate([s + np.arange(0, L - args.T + 1, args.T // 2) for s, L in
                                 zip(cache.clip_start[ok], cache.clip_len[ok]) if L >= args.T] or [np.zeros(0, int)])
        if len(starts) == 0:
            continue
        rng = np.random.default_rng(args.seed)
        starts = np.sort(rng.choice(starts, size=min(args.n, len(starts)), replace=False))
        rot6d, trw = cache.windows(starts, args.T)
        g = torch.Generator().manual_seed(args.seed)
        R, tr = synth.place_in_camera(sixd_to_rotmat(rot6d), trw, g, depth=(4.0, 10.0), u_range=(-0.3, 0.3),
                                      v_range=(-0.1, 0.3), pitch=(np.radians(30), np.radians(60)))
        kp = RB.BODY.pose_keypoints(R, tr, "coco17")
        px = project(kp) * 512 + 512
        eps = torch.randn(px.shape, generator=g)
        if args.kp2d_noise == "slow":   # AR(1) in time, as YOLO's error on rendered bodies (lag-1 correlation 0.82)
            for t in range(1, args.T):
                eps[:, t] = 0.9 * eps[:, t - 1] + np.sqrt(1 - 0.9 ** 2) * eps[:, t]
        noisy = px + eps * 3.0
        out_mask = torch.rand(px.shape[:-1], generator=g) < 0.05
        noisy = torch.where(out_mask[..., None], noisy + torch.randn(px.shape, generator=g) * 50, noisy)
        tracks = [Track.from_detections(i, [Detection(t, kp2d=noisy[i, t].numpy(), kp2d_conf=np.full(17, 0.9),
                                                      layout2d="coco17", score=0.9) for t in range(args.T)], RB.VIDEO)
                  for i in range(len(R))]
        out = refine_tracks(tracks, model=KP2D_MODEL, fit_options=FIT_OPTIONS)
        Ro = np.stack([o.rotmats for o in out])
        # upright: the ground truth torso within 15 degrees of the world vertical (root pitch in the world)
        j = RB.BODY.pose_keypoints(R, None, "smpl24")
        up = torch.nn.functional.normalize(j[..., 12, :] - j[..., 0, :], dim=-1)
        # the world vertical in each window's camera frame: replay place_in_camera's draws (yaw, then tilt);
        # its camera rotation is Rx(tilt) @ R_CAM, which takes the world's +Y to (0, -cos tilt, -sin tilt)
        g2 = torch.Generator().manual_seed(args.seed)
        synth._u(g2, (len(R),), 0.0, 2 * np.pi)
        tilt = synth._u(g2, (len(R),), np.radians(30), np.radians(60))
        vert = torch.stack([torch.zeros(len(R)), -torch.cos(tilt), -torch.sin(tilt)], -1)
        upright = (up * vert[:, None]).sum(-1) > np.cos(np.radians(15))
        err = (torso_pitch(Ro) - torso_pitch(R)).abs()[upright]
        P = RB.BODY.pose_keypoints(torch.as_tensor(Ro).float(), torch.as_tensor(np.stack([o.transl for o in out])).float(),
                                   "coco17")
        e_in = float((noisy - px).norm(dim=-1).median())
        e_out = float((project(P) * 512 + 512 - px).norm(dim=-1).median())
        print(f"| {fam} | {int(upright.sum())} | {float(err.median()) if len(err) else float('nan'):.1f} | "
              f"{e_in:.1f} | {e_out:.1f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default="cache")
    ap.add_argument("--sections", nargs="+", default=["corrupt", "sweep", "predict"])
    ap.add_argument("--n", type=int, default=24, help="held-out windows per family")
    ap.add_argument("--T", type=int, default=128, help="frames per window")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smpl-checkpoint", nargs="*", default=[],
                    help="also evaluate these smpl checkpoints (columns named by their folder)")
    ap.add_argument("--kp3d-checkpoint", help="evaluate this kp3d-h36m17 checkpoint instead of the shipped one")
    ap.add_argument("--kp2d-checkpoint", help="evaluate this kp2d-coco17 checkpoint instead of the shipped one")
    ap.add_argument("--no-shipped", action="store_true", help="leave the shipped smpl weights out")
    ap.add_argument("--kp2d-noise", choices=["iid", "slow"], default="iid",
                    help="kp2d section: noise independent per frame (the issue's test) or slow (AR(1), as a detector's)")
    ap.add_argument("--fit-options", type=json.loads, metavar="JSON",
                    help='FitOptions fields for the kp2d section, e.g. \'{"fit_depth": true}\' (default: the shipped ones)')
    args = ap.parse_args()
    global FIT_OPTIONS
    FIT_OPTIONS = args.fit_options
    from posebert_plug.presets import load_model
    if args.no_shipped:
        MODELS.clear()
    for c in args.smpl_checkpoint:
        MODELS[os.path.basename(os.path.dirname(os.path.abspath(c))) or c] = load_model("smpl", checkpoint=c)
    if args.kp3d_checkpoint:
        global KP3D_MODEL
        KP3D_MODEL = load_model("kp3d-h36m17", checkpoint=args.kp3d_checkpoint)
    if args.kp2d_checkpoint:
        global KP2D_MODEL
        KP2D_MODEL = load_model("kp2d-coco17", checkpoint=args.kp2d_checkpoint)
    cache = MotionCache(os.path.join(args.cache, "val.npz"))
    if (cache.clip_family == "unknown").all():
        sys.exit("this cache has no motion families: rebuild it with posebert-data build")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"<!-- python bench/generalize.py --cache {args.cache} --sections {' '.join(args.sections)} --n {args.n} "
          f"--T {args.T} {' '.join('--smpl-checkpoint ' + c for c in args.smpl_checkpoint)} -->")
    for s in args.sections:
        globals()[f"section_{s}"](cache, args)


if __name__ == "__main__":
    main()
