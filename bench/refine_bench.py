"""PoseBERT vs baselines on the held-out validation split (prints markdown tables, saves PNG plots).

    python bench/refine_bench.py --cache cache --sections corrupt sweep predict complete long kp2d speed --out bench/results

Sections
- corrupt: shipped `smpl` model vs nearest fill, linear/slerp, Savitzky-Golay (31, 2), One-Euro, under
  rot-noise 0.1 rad + 10 % outlier poses + 25 % frames dropped in blocks of 1-15, and with no corruption.
- sweep: 0..90 % frames dropped (noise 0.1 rad): relative MPJPE gain over nearest-fill input, PoseBERT vs SG.
- predict: 15 observed frames (clean, then with 0.1 rad noise as an estimator gives), MPJPE at horizons
  5/10/15/30 vs no-velocity and velocity propagation (clean: also with the observed frames kept); then
  PoseBERT vs no-velocity across input noise levels 0..0.1 rad.
- complete: in-betweening between exact key poses every 5/10/20/40 frames vs slerp.
- long: one 3,000-frame track (a validation clip played forward/backward) with 40 % frames missing.
- kp2d: `kp2d-coco17` with 5 px 2D noise and 10 % missing keypoints, temporal vs one frame at a time.
- speed: forward latency (batch 1, T=64), offline frames/s per track, online ms/frame (medians).
All errors in mm (Accel in mm/frame^2) on SMPL-24 joints, root-relative, over every ground-truth frame.
Sequences are fixed by --seed; the validation split is the cache's val.npz (never used for tuning).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from posebert_plug import baselines as B
from posebert_plug import metrics as M
from posebert_plug import synth
from posebert_plug.body_model import DefaultBodyModel
from posebert_plug.camera import project
from posebert_plug.mocap.dataset import MotionCache
from posebert_plug.refine import OnlineRefiner, refine_tracks
from posebert_plug.rotations import sixd_to_rotmat
from posebert_plug.types import Detection, Track, VideoInfo

BODY = DefaultBodyModel()
SMPL_MODEL = "smpl"   # or a loaded model (--smpl-checkpoint)
KP2D_MODEL = "kp2d-coco17"
VIDEO = VideoInfo(1024, 1024, 30.0)   # canonical camera: focal F_NORM * 512 px


def sequences(cache, n, T, seed):
    """n ground-truth sequences of T frames placed in the canonical camera: (R (n,T,24,3,3), transl (n,T,3))."""
    starts = cache.window_starts(T, T // 2)
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.choice(starts, size=min(n, len(starts)), replace=False))
    rot6d, tr = cache.windows(starts, T)
    g = torch.Generator().manual_seed(seed)
    return synth.place_in_camera(sixd_to_rotmat(rot6d), tr, g, depth=(3.0, 8.0))


def corrupt(R, tr, g, noise=0.1, outliers=0.1, drop=0.25, blocks=(1, 15), iid=False):
    n, T = R.shape[:2]
    Rn = synth.rotation_noise(R, noise, g) if noise > 0 else R.clone()
    if outliers > 0:
        Rn, _ = synth.replace_with_other(Rn, torch.full((n,), outliers), g)
    if drop <= 0:
        obs = torch.ones(n, T, dtype=torch.bool)
    elif iid:
        obs = synth.random_mask(n, T, drop, drop, g)
    else:
        obs = synth.block_mask(n, T, drop, drop, blocks[0], blocks[1], g)
    obs[:, 0] |= ~obs.any(1)
    return Rn, obs


def smpl_tracks(Rn, tr, obs):
    out = []
    for i in range(len(Rn)):
        dets = [Detection(t, rotmats=Rn[i, t].numpy(), transl=tr[i, t].numpy()) for t in range(Rn.shape[1]) if obs[i, t]]
        tk = Track.from_detections(i, dets, VIDEO)
        out.append(tk.padded(0, Rn.shape[1] - 1))
    return out


def joints(R):
    return BODY.pose_keypoints(torch.as_tensor(np.asarray(R)).float(), None, "smpl24")


def scores(pred_R, gt_R):
    P, G = joints(pred_R), joints(gt_R)
    return float(M.mpjpe(P, G)), float(M.pa_mpjpe(P, G)), float(M.accel_error(P, G))


def run_baselines(Rn, obs):
    out = {k: [] for k in ("nearest fill", "linear/slerp", "Savitzky-Golay", "One-Euro")}
    for i in range(len(Rn)):
        R, o = Rn[i].double().numpy(), obs[i].numpy()
        out["nearest fill"].append(B.nearest_fill(R, o))
        out["linear/slerp"].append(B.interpolate_rotations(R, o))
        out["Savitzky-Golay"].append(B.savgol_rotations(R, o))
        out["One-Euro"].append(B.one_euro_rotations(R, o))
    return {k: np.stack(v) for k, v in out.items()}


def posebert(Rn, tr, obs):
    return np.stack([r.rotmats for r in refine_tracks(smpl_tracks(Rn, tr, obs), model=SMPL_MODEL)])


def section_corrupt(cache, args):
    R, tr = sequences(cache, args.n, args.T, args.seed)
    rows = []
    for name, kw in (("realistic", {}), ("clean", dict(noise=0, outliers=0, drop=0))):
        g = torch.Generator().manual_seed(args.seed + 1)
        Rn, obs = corrupt(R, tr, g, **kw)
        res = run_baselines(Rn, obs)
        res["PoseBERT"] = posebert(Rn, tr, obs)
        for k, v in res.items():
            rows.append((name, k, *scores(v, R)))
    print("\n### (a) PoseBERT vs baselines, smpl preset "
          f"({args.n} validation sequences x {args.T} frames; realistic = rot-noise 0.1 rad + 10% outlier poses + "
          "25% frames dropped in blocks of 1-15)\n")
    print("| corruption | method | MPJPE | PA-MPJPE | Accel |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.1f} |")
    sg = [r for r in rows if r[0] == "realistic" and r[1] == "Savitzky-Golay"][0]
    pb = [r for r in rows if r[0] == "realistic" and r[1] == "PoseBERT"][0]
    print(f"\nPoseBERT / SG MPJPE ratio (realistic): {pb[2] / sg[2]:.2f}; Accel {pb[4]:.1f} vs {sg[4]:.1f}")


def section_sweep(cache, args):
    R, tr = sequences(cache, args.n, args.T, args.seed)
    rates = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]
    rows = []
    for p in rates:
        g = torch.Generator().manual_seed(args.seed + 2)
        Rn, obs = corrupt(R, tr, g, noise=0.1, outliers=0.0, drop=p, iid=True)
        near = np.stack([B.nearest_fill(Rn[i].numpy(), obs[i].numpy()) for i in range(len(Rn))])
        sg = np.stack([B.savgol_rotations(Rn[i].double().numpy(), obs[i].numpy()) for i in range(len(Rn))])
        pb = posebert(Rn, tr, obs)
        e0, es, ep = scores(near, R)[0], scores(sg, R)[0], scores(pb, R)[0]
        rows.append((p, e0, es, ep, 100 * (e0 - es) / e0, 100 * (e0 - ep) / e0))
    print("\n### (b) frame-drop sweep (noise 0.1 rad; gain = relative MPJPE reduction vs nearest-fill input)\n")
    print("| dropped | input MPJPE | SG MPJPE | PoseBERT MPJPE | SG gain % | PoseBERT gain % |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {int(r[0] * 100)}% | {r[1]:.1f} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.0f} | {r[5]:.0f} |")
    _plot(args, "sweep.png", [r[0] * 100 for r in rows], {"SG": [r[4] for r in rows], "PoseBERT": [r[5] for r in rows]},
          "frames dropped (%)", "MPJPE gain over input (%)")


def section_predict(cache, args):
    """Prediction from clean observations, and from estimator-like ones (0.1 rad rotation noise):
    the paper's Table 9 predicts from image-based estimates, which the baselines then copy."""
    obs_len, hs = 15, [5, 10, 15, 30]
    R, tr = sequences(cache, args.n, obs_len + max(hs), args.seed)
    levels = (0.0, 0.02, 0.03, 0.05, 0.1)
    noisy, futs = {}, {}   # per noise level: observed inputs, PoseBERT's (N, obs_len + 30, 24, 3, 3) outputs
    for noise in levels:
        noisy[noise] = synth.rotation_noise(R, noise, torch.Generator().manual_seed(args.seed + 3)) if noise else R
        tracks = smpl_tracks(noisy[noise][:, :obs_len], tr[:, :obs_len], torch.ones(len(R), obs_len, dtype=torch.bool))
        futs[noise] = np.stack([f.rotmats for f in refine_tracks(tracks, model=SMPL_MODEL, extra_frames=max(hs))])
    for noise in (0.0, 0.1):
        Ro, fut = noisy[noise], futs[noise]
        kinds = ("no-velocity", "velocity", "PoseBERT") + (() if noise else ("PoseBERT, observed kept",))
        errs = {k: {h: [] for h in hs} for k in kinds}
        tracks = smpl_tracks(Ro[:, :obs_len], tr[:, :obs_len], torch.ones(len(R), obs_len, dtype=torch.bool))
        kept = refine_tracks(tracks, model=SMPL_MODEL, extra_frames=max(hs), keep_observed=True) if not noise else None
        for i in range(len(R)):
            past = Ro[i, :obs_len].double().numpy()
            nv = B.predict_no_velocity(past, max(hs))
            vel = B.predict_velocity(past, max(hs), rotations=True)
            for h in hs:
                gt = joints(R[i, obs_len + h - 1][None])
                errs["no-velocity"][h].append(float(M.mpjpe(joints(nv[h - 1][None]), gt)))
                errs["velocity"][h].append(float(M.mpjpe(joints(vel[h - 1][None]), gt)))
                errs["PoseBERT"][h].append(float(M.mpjpe(joints(fut[i, obs_len + h - 1][None]), gt)))
                if kept is not None:
                    errs["PoseBERT, observed kept"][h].append(
                        float(M.mpjpe(joints(kept[i].rotmats[obs_len + h - 1][None]), gt)))
        kind = "clean" if not noise else f"noisy ({noise} rad rotation noise, estimator-like)"
        print(f"\n### (c) future prediction from {obs_len} {kind} frames (MPJPE at horizon h, {len(R)} sequences)\n")
        print("| method | " + " | ".join(f"h={h}" for h in hs) + " |\n|---|" + "---|" * len(hs))
        for k, v in errs.items():
            print(f"| {k} | " + " | ".join(f"{np.mean(v[h]):.1f}" for h in hs) + " |")
        _plot(args, "predict.png" if not noise else "predict_noisy.png", hs,
              {k: [np.mean(v[h]) for h in hs] for k, v in errs.items()}, "horizon (frames)", "MPJPE (mm)")
    # Where does PoseBERT overtake the last pose? Input noise between the two tables above.
    print(f"\n### (c) prediction vs input noise: no-velocity / PoseBERT MPJPE at horizon h ({len(R)} sequences; "
          "input = MPJPE of the last observed frame)\n")
    print("| rotation noise (rad) | input | " + " | ".join(f"h={h}" for h in hs) + " |\n|---|---|" + "---|" * len(hs))
    for noise in levels:
        Ro, fut = noisy[noise], futs[noise]
        last = joints(Ro[:, obs_len - 1])
        cells = []
        for h in hs:
            gt = joints(R[:, obs_len + h - 1])
            cells.append(f"{float(M.mpjpe(last, gt)):.1f} / {float(M.mpjpe(joints(fut[:, obs_len + h - 1]), gt)):.1f}")
        inp = float(M.mpjpe(last, joints(R[:, obs_len - 1])))
        print(f"| {noise} | {inp:.1f} | " + " | ".join(cells) + " |")


def section_complete(cache, args):
    """In-betweening between exact key poses (clean ground truth every k frames)."""
    R, tr = sequences(cache, args.n, args.T, args.seed)
    G = joints(R)
    print(f"\n### motion completion: exact key poses every k frames ({args.n} sequences x {args.T} frames), "
          "MPJPE on the frames between keys\n")
    print("| keys every | slerp | PoseBERT | PoseBERT, exact keys (complete_motion default) |\n|---|---|---|---|")
    for k in (5, 10, 20, 40):
        obs = torch.zeros(len(R), args.T, dtype=torch.bool)
        obs[:, ::k] = True
        obs[:, -1] = True
        tracks = smpl_tracks(R, tr, obs)
        res = [np.stack([B.interpolate_rotations(R[i].double().numpy(), obs[i].numpy()) for i in range(len(R))]),
               np.stack([r.rotmats for r in refine_tracks(tracks, model=SMPL_MODEL)]),
               np.stack([r.rotmats for r in refine_tracks(tracks, model=SMPL_MODEL, keep_observed=True)])]
        gap = ~obs
        e = [float((joints(v) - G).norm(dim=-1).mean(-1)[gap].mean() * 1000) for v in res]
        print(f"| {k} | {e[0]:.1f} | {e[1]:.1f} | {e[2]:.1f} |")


def section_long(cache, args):
    i = int(np.argmax(cache.clip_len))
    s, n = cache.clip_start[i], cache.clip_len[i]
    idx = np.concatenate([np.arange(n), np.arange(n)[::-1], np.arange(n)])[:3000] + s
    rot6d, trw = cache.rot6d[idx][None], cache.transl[idx][None]
    g = torch.Generator().manual_seed(args.seed)
    R, tr = synth.place_in_camera(sixd_to_rotmat(rot6d), trw, g, depth=(4.0, 4.0))
    Rn, obs = corrupt(R, tr, g, noise=0.05, outliers=0.0, drop=0.4, iid=True)
    t0 = time.time()
    out = refine_tracks(smpl_tracks(Rn, tr, obs), model=SMPL_MODEL)[0]
    dt = time.time() - t0
    o = obs[0].numpy()
    lin = B.interpolate_rotations(Rn[0].double().numpy(), o)
    P, G, I, L = joints(out.rotmats), joints(R[0]), joints(Rn[0]), joints(lin)
    print(f"\n### long track: {cache.clip_name[i]} forward/backward, 3,000 frames, 40% frames missing (iid), "
          "rot-noise 0.05 rad on observed frames\n")
    print(f"- returned {len(out)} frames ({int((~out.observed).sum())} filled) in {dt:.1f} s")
    print("| frames | method | MPJPE | PA-MPJPE |\n|---|---|---|---|")
    for name, mask in (("observed", o), ("filled", ~o)):
        m = torch.as_tensor(mask)
        print(f"| {name} | input | {float(M.mpjpe(I[m], G[m])) if mask.any() and name == 'observed' else float('nan'):.1f} | - |")
        print(f"| {name} | linear/slerp | {float(M.mpjpe(L[m], G[m])):.1f} | {float(M.pa_mpjpe(L[m], G[m])):.1f} |")
        print(f"| {name} | PoseBERT | {float(M.mpjpe(P[m], G[m])):.1f} | {float(M.pa_mpjpe(P[m], G[m])):.1f} |")
    print(f"- PoseBERT output vs its own input on observed frames: "
          f"{float(M.mpjpe(P[torch.as_tensor(o)], I[torch.as_tensor(o)])):.1f} mm")


def section_kp2d(cache, args):
    R, tr = sequences(cache, args.n, args.T, args.seed)
    g = torch.Generator().manual_seed(args.seed + 3)
    kp = BODY.pose_keypoints(R, tr, "coco17")
    uv = project(kp)
    px = uv * 512 + 512
    px = px + torch.randn(px.shape, generator=g) * 5.0
    conf = (torch.rand(px.shape[:-1], generator=g) >= 0.1).float()
    tracks = []
    for i in range(len(R)):
        dets = [Detection(t, kp2d=px[i, t].numpy(), kp2d_conf=conf[i, t].numpy() * 0.9, layout2d="coco17", score=0.9)
                for t in range(args.T)]
        tracks.append(Track.from_detections(i, dets, VIDEO))
    res = {}
    res["temporal (window 64)"] = refine_tracks(tracks, model=KP2D_MODEL)
    res["single frame (window 1)"] = refine_tracks(tracks, model=KP2D_MODEL, window=1, stride=1, model_fps=0)
    G = joints(R)
    print(f"\n### kp2d-coco17: 5 px 2D noise, 10% keypoints missing ({len(R)} sequences x {args.T} frames, "
          "1024 px image, canonical focal)\n")
    print("| input | MPJPE | PA-MPJPE | Accel | root translation error (mm) |\n|---|---|---|---|---|")
    for k, out in res.items():
        P = joints(np.stack([o.rotmats for o in out]))
        T = np.stack([o.transl for o in out])
        te = np.linalg.norm(T - tr.numpy(), axis=-1).mean() * 1000
        print(f"| {k} | {float(M.mpjpe(P, G)):.1f} | {float(M.pa_mpjpe(P, G)):.1f} | "
              f"{float(M.accel_error(P, G)):.1f} | {te:.0f} |")


def section_speed(cache, args):
    from posebert_plug.presets import load_model
    m = load_model("smpl")
    x, o = torch.randn(1, 64, 192), torch.ones(1, 64, dtype=torch.bool)
    with torch.inference_mode():
        for _ in range(5):
            m(x, o)
        lat = []
        for _ in range(50):
            t = time.perf_counter()
            m(x, o)
            lat.append(time.perf_counter() - t)
    R, tr = sequences(cache, 1, 64, args.seed)
    idx = np.arange(3000) % 64
    long_tracks = smpl_tracks(R[:, idx], tr[:, idx], torch.ones(1, 3000, dtype=torch.bool))
    thr = {}
    for stride in (32, 16):
        refine_tracks(long_tracks, model="smpl", stride=stride)
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            refine_tracks(long_tracks, model="smpl", stride=stride)
            ts.append(time.perf_counter() - t)
        thr[stride] = 3000 / np.median(ts)
    # the SMPL checks' cost (stride 16): mirror average (2 model runs), gap check (2 more per mirror side on
    # a track with interior gaps); a track with 25% of its frames dropped in blocks of 1-15
    g = torch.Generator().manual_seed(args.seed)
    gap_tracks = smpl_tracks(R[:, idx], tr[:, idx], synth.block_mask(1, 3000, 0.25, 0.25, 1, 15, g))
    checks = {}
    for name, trk, kw in (("no gaps, checks off", long_tracks, {"mirror_average": False, "gap_check": False}),
                          ("no gaps, default (mirror average)", long_tracks, {}),
                          ("25% dropped, checks off", gap_tracks, {"mirror_average": False, "gap_check": False}),
                          ("25% dropped, default (mirror average + gap check)", gap_tracks, {})):
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            refine_tracks(trk, model="smpl", stride=16, **kw)
            ts.append(time.perf_counter() - t)
        checks[name] = 3000 / np.median(ts)
    dets = [Detection(t, rotmats=R[0, t].numpy(), transl=tr[0, t].numpy()) for t in range(64)]
    online = {}
    for ahead in (0, 10):
        on = OnlineRefiner("smpl", video=VIDEO, predict_ahead=ahead)
        on_lat = []
        for k in range(200):
            t = time.perf_counter()
            on.step(0, dets[k % 64])
            on_lat.append(time.perf_counter() - t)
        online[ahead] = np.median(on_lat[64:])
    dev = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"\n### (d) speed, shipped smpl model, {dev}\n")
    print("| measure | median |\n|---|---|")
    print(f"| forward latency, batch 1, T=64 | {1000 * np.median(lat):.1f} ms |")
    for s, v in thr.items():
        print(f"| offline refine_tracks, 3,000-frame track, window 64 stride {s} | {v:,.0f} frames/s |")
    for name, v in checks.items():
        print(f"| offline refine_tracks, 3,000-frame track, stride 16, {name} | {v:,.0f} frames/s |")
    print(f"| online OnlineRefiner.step (history 64), per frame per person | {1000 * online[0]:.1f} ms |")
    print(f"| online, also predicting 10 frames ahead (54 frames + 10 mask tokens) | {1000 * online[10]:.1f} ms |")


def _plot(args, name, x, series, xl, yl):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for k, v in series.items():
        ax.plot(x, v, marker="o", label=k)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.legend()
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    fig.savefig(os.path.join(args.out, name), dpi=90)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default="cache")
    ap.add_argument("--sections", nargs="+", default=["corrupt", "sweep", "predict", "complete", "long", "kp2d", "speed"])
    ap.add_argument("--n", type=int, default=48, help="validation sequences per section")
    ap.add_argument("--T", type=int, default=192, help="frames per sequence")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--smpl-checkpoint", help="evaluate this smpl checkpoint instead of the shipped one")
    ap.add_argument("--kp2d-checkpoint", help="evaluate this kp2d-coco17 checkpoint instead of the shipped one")
    args = ap.parse_args()
    if args.smpl_checkpoint:
        global SMPL_MODEL
        from posebert_plug.presets import load_model
        SMPL_MODEL = load_model("smpl", checkpoint=args.smpl_checkpoint)
    if args.kp2d_checkpoint:
        global KP2D_MODEL
        from posebert_plug.presets import load_model as _lm
        KP2D_MODEL = _lm("kp2d-coco17", checkpoint=args.kp2d_checkpoint)
    cache = MotionCache(os.path.join(args.cache, "val.npz"))
    for s in args.sections:
        globals()[f"section_{s}"](cache, args)


if __name__ == "__main__":
    main()
