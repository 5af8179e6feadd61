"""posebert-train: masked-modeling training of a PoseBERT preset on a mocap cache.

    posebert-train --preset smpl --cache cache/ --steps 20000 --out runs/smpl

Single process on the CPU by default; ``torchrun --nproc_per_node N
posebert-train ...`` trains with DistributedDataParallel (one batch per rank).
Checkpoints: ``<out>/last.pt`` (resumable: model, optimiser, step, RNG) every
``--save-every`` steps and at the end, ``<out>/model.pt`` (weights only, fp16,
the shippable file). Validation on the held-out split prints MPJPE, PA-MPJPE
(mm) and Accel (mm/frame^2) under the full training corruption and clean.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

from . import synth
from .metrics import accel_error, mpjpe, pa_mpjpe
from .model import PoseBERT
from .mocap.dataset import MotionCache
from .presets import build_training_batch, get_preset, save_checkpoint, MODEL_SIZES
from .rotations import sixd_to_rotmat
from .camera import param_to_transl


def compute_loss(outputs, batch, body, w_rot=1.0, w_tr=1.0, w_joint=1.0, w_vel=1.0, layout="smpl24"):
    """Deep-supervised loss over every block's output; returns (loss, dict of the last block's terms).

    The velocity term (joint displacement between consecutive frames vs ground truth, metres)
    penalises jitter directly: per-frame losses alone leave frame-to-frame noise unpunished."""
    L = len(outputs)
    total, terms = 0.0, {}
    gt_R, gt_param = batch["rotmats"], batch["param"]
    gt_j = body.pose_keypoints(gt_R, None, layout)
    J = gt_R.shape[-3]
    for l, (pose6d, param) in enumerate(outputs):
        R = sixd_to_rotmat(pose6d.reshape(*pose6d.shape[:-1], J, 6))
        l_rot = ((R - gt_R) ** 2).sum((-1, -2)).mean()
        l_tr = ((param - gt_param) ** 2).sum(-1).mean()
        j = body.pose_keypoints(R, None, layout)
        l_joint = (j - gt_j).norm(dim=-1).mean()
        l_vel = ((j[:, 1:] - j[:, :-1]) - (gt_j[:, 1:] - gt_j[:, :-1])).norm(dim=-1).mean()
        w = (l + 1) / L
        total = total + w * (w_rot * l_rot + w_tr * l_tr + w_joint * l_joint + w_vel * l_vel)
        terms = {"rot": l_rot.item(), "tr": l_tr.item(), "joint_mm": l_joint.item() * 1000, "vel_mm": l_vel.item() * 1000}
    return total, terms


@torch.no_grad()
def evaluate(model, cache, preset, body, T=64, max_windows=256, seed=1234, corrupt=True, batch=64):
    """Validation metrics (mm) on fixed windows of a cache split with a fixed corruption seed
    (the shipped models' corruption, ``aug=None``, so figures stay comparable across runs);
    ``families``: MPJPE per motion family of the held-out performers."""
    model.eval()
    starts = cache.window_starts(T, T)
    if len(starts) > max_windows:
        starts = starts[np.linspace(0, len(starts) - 1, max_windows).astype(int)]
    g = torch.Generator().manual_seed(seed)
    preds, gts, tr_err = [], [], []
    layout = get_preset(preset).loss_layout
    for i in range(0, len(starts), batch):
        rot6d, tr = cache.windows(starts[i:i + batch], T)
        b = build_training_batch(preset, rot6d, tr, body, g, corrupt=corrupt)
        pose6d, param = model(b["x"], b["observed"])
        R = sixd_to_rotmat(pose6d.reshape(*pose6d.shape[:-1], model.num_joints, 6))
        preds.append(body.pose_keypoints(R, None, layout))
        gts.append(body.pose_keypoints(b["rotmats"], None, layout))
        tr_err.append((param_to_transl(param) - b["transl"]).norm(dim=-1).mean())
    P, G = torch.cat(preds), torch.cat(gts)
    model.train()
    per_window = (P - G).norm(dim=-1).mean((1, 2)) * 1000
    fam = cache.window_family(starts)
    families = {str(f): round(float(per_window[fam == f].mean()), 1) for f in sorted(set(fam.tolist()))}
    return {"MPJPE": float(mpjpe(P, G)), "PA-MPJPE": float(pa_mpjpe(P, G)), "Accel": float(accel_error(P, G)),
            "transl_mm": float(torch.stack(tr_err).mean() * 1000), "windows": len(starts), "families": families}


@torch.no_grad()
def set_mean_pose(model, cache, preset, body, seed, n=2048):
    """Start the regression from the training set's mean pose and root placement (paper eq. 7)."""
    rng, g = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    rot6d, tr = cache.sample(n // 64, 64, rng)
    b = build_training_batch(preset, rot6d, tr, body, g, corrupt=False)
    from .rotations import rotmat_to_6d
    mean6d = rotmat_to_6d(b["rotmats"]).reshape(-1, model.num_joints, 6).mean(0)
    mean6d = rotmat_to_6d(sixd_to_rotmat(mean6d))  # back onto the rotation manifold
    model.mean_theta.copy_(torch.cat([mean6d.flatten(), b["param"].reshape(-1, 3).mean(0)]))
    if hasattr(model, "root_offset"):   # rest pose's canonical rotation (see PoseBERT init_root_from)
        from .features import canonical_rotation
        p = get_preset(preset)
        rest = body.pose_keypoints(torch.eye(3).expand(1, model.num_joints, 3, 3), None, p.layout)[0]
        model.root_offset.copy_(canonical_rotation(rest, p.layout))


def lr_at(step, total, base, warmup=100, final=0.1):
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t)))


def _load_init(path, device, ap):
    """A model.pt for --init (weights only: tensors and builtin containers, never arbitrary classes)."""
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:   # torch raises several kinds for a file that is not a checkpoint
        ap.error(f"--init {path}: not a PoseBERT checkpoint ({type(e).__name__})")
    if not isinstance(blob, dict) or "state_dict" not in blob:
        ap.error(f"--init {path}: not a PoseBERT checkpoint (no state_dict; expected a model.pt of posebert-train)")
    return blob


def _load_resume(path, device, ap):
    """``<out>/last.pt`` to resume from. A run folder may be shared or downloaded, so it is read
    with ``weights_only=True`` (tensors and builtin containers only: a crafted file cannot run code);
    everything a resume needs is stored that way (see ``save`` in :func:`main`)."""
    try:
        st = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:   # UnpicklingError for forbidden classes, RuntimeError for a non-torch file
        ap.error(f"{path}: not a resumable posebert-train checkpoint ({type(e).__name__}); "
                 "pass --no-resume to start afresh")
    if not isinstance(st, dict) or not {"model", "opt", "step"} <= set(st):
        ap.error(f"{path}: not a resumable posebert-train checkpoint (missing model/opt/step); "
                 "pass --no-resume to start afresh")
    return st


def _stop_together(stop: bool, ddp: bool, device="cpu") -> bool:
    """Under DDP every rank stops at the step rank 0 decides (each rank's own clock would let one
    leave the loop while the others wait for it in the next gradient all-reduce, forever)."""
    if not ddp:
        return stop
    flag = torch.tensor([1 if stop else 0], device=device)   # on the GPU for NCCL
    torch.distributed.broadcast(flag, 0)
    return bool(flag.item())


def main(argv=None):
    ap = argparse.ArgumentParser(prog="posebert-train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True,
                    help="smpl | kp3d-h36m17 | kp3d-mediapipe33 | kp2d-coco17 | kp3d-hand21")
    ap.add_argument("--cache", default="cache", help="folder with train.npz / val.npz from posebert-data build")
    ap.add_argument("--out", default=None, help="run folder (default runs/<preset>)")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--size", choices=sorted(MODEL_SIZES), default="cpu", help="cpu: D=256 L=4; paper: D=512")
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--save-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--max-minutes", type=float, default=0, help="stop (and save) after this wall time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-resume", action="store_true", help="start afresh even if <out>/last.pt exists")
    ap.add_argument("--save-rank-params", action="store_true",
                    help="every rank also writes its final weights to <out>/params_rank<R>.pt (checks that "
                         "data-parallel ranks hold identical weights; tests/test_ddp.py)")
    ap.add_argument("--init", metavar="CKPT", help="start from these weights (a model.pt), e.g. to fine-tune; tensors "
                    "of another shape (another preset's input embedding) stay freshly initialised")
    ap.add_argument("--init-masked", choices=["mean", "interp", "smooth"], default=None,
                    help="smpl preset: masked frames start from the mean pose (paper) or the interpolated input; "
                         "smooth: every frame starts from a robust smoothing of the interpolated input "
                         "(default: that of --init's weights, else the preset's: smooth for smpl)")
    ap.add_argument("--w-vel", type=float, default=1.0, help="weight of the joint velocity loss (anti-jitter)")
    ap.add_argument("--mask-mix", default=",".join(map(str, synth.MASK_MIX)), metavar="L,B,H,F",
                    help="training mask mixture: proportions of light random drops, 1-30 frame blocks, heavy "
                         "(50-90%%) drops and hidden futures (validation always uses the default)")
    ap.add_argument("--max-future", type=int, default=None,
                    help="longest hidden future in frames (default window // 2 + 8)")
    ap.add_argument("--heavy-max", type=float, default=0.9,
                    help="largest fraction of frames dropped by the heavy random masks (default 0.9)")
    ap.add_argument("--block-max", type=float, default=0.5,
                    help="largest fraction of a window dropped by the block masks (default 0.5)")
    ap.add_argument("--block-len", type=int, default=30,
                    help="longest dropped block in frames (default 30; occlusions of 1-2 s: 40-60)")
    d = synth.Augment()
    ap.add_argument("--augment", choices=["on", "off"], default="on",
                    help="on: the augmentations below (defaults shown); off: the shipped models' original "
                         "distribution (no mirroring, warping, rig offsets, clean windows, swaps; pitch up to 34 deg)")
    ap.add_argument("--mirror", type=float, default=d.mirror, help="probability of a left-right mirrored window")
    ap.add_argument("--speed", default=f"{d.speed[0]},{d.speed[1]}", metavar="LO,HI",
                    help="play-rate range of windows (time warp, log-uniform)")
    ap.add_argument("--rig-deg", type=float, default=d.rig_deg,
                    help="largest constant rest-rotation offset (degrees) at collars, shoulders, wrists, hips, ankles, "
                         "feet, on half the windows: other rigs' and estimators' joint conventions")
    ap.add_argument("--pitch-max", type=float, default=math.degrees(d.pitch[1]),
                    help="largest camera tilt looking down (degrees)")
    ap.add_argument("--roll-deg", type=float, default=d.roll_deg, help="largest camera roll (degrees)")
    ap.add_argument("--depth-max", type=float, default=d.depth[1], help="farthest camera distance (metres)")
    ap.add_argument("--clean-frac", type=float, default=d.clean_frac,
                    help="fraction of windows with exactly clean input (learn to leave good input alone)")
    ap.add_argument("--heavy-frac", type=float, default=d.heavy_frac,
                    help="fraction of noisy windows with heavy-tailed (Student-t) noise")
    ap.add_argument("--swap-frac", type=float, default=d.swap_frac,
                    help="largest fraction of frames with left/right limbs swapped (on a third of noisy windows)")
    ap.add_argument("--depth-jitter", type=float, default=d.depth_jitter,
                    help="3D keypoint presets: largest relative error of the keypoints' depth scale")
    ap.add_argument("--proportions", type=float, default=d.proportions,
                    help="body proportions of the observed person: bone lengths x (1 +- 1.5 p) globally and "
                         "x (1 +- p) per limb group")
    args = ap.parse_args(argv)
    try:
        speed = tuple(float(v) for v in args.speed.split(","))
    except ValueError:
        speed = ()
    if len(speed) != 2 or not 0 < speed[0] <= speed[1] <= 4:
        ap.error("--speed needs LO,HI with 0 < LO <= HI <= 4, e.g. 0.5,2")
    for flag, value in (("--mirror", args.mirror), ("--clean-frac", args.clean_frac),
                        ("--heavy-frac", args.heavy_frac), ("--swap-frac", args.swap_frac)):
        if not 0 <= value <= 1:
            ap.error(f"{flag} must lie in [0, 1], got {value}")
    aug = synth.Augment.none() if args.augment == "off" else synth.Augment(
        mirror=args.mirror, speed=speed, rig_deg=args.rig_deg, pitch=(-0.1, math.radians(args.pitch_max)),
        roll_deg=args.roll_deg, depth=(2.0, args.depth_max), clean_frac=args.clean_frac,
        heavy_frac=args.heavy_frac, swap_frac=args.swap_frac, depth_jitter=args.depth_jitter,
        proportions=args.proportions)
    try:
        mix = tuple(float(v) for v in args.mask_mix.split(","))
    except ValueError:
        mix = ()
    if len(mix) != 4 or min(mix) < 0 or sum(mix) <= 0:
        ap.error("--mask-mix needs four non-negative proportions, e.g. 0.2,0.45,0.2,0.15")
    if not 0.5 <= args.heavy_max < 1:
        ap.error("--heavy-max must lie in [0.5, 1)")
    if not 0 < args.block_max < 1 or args.block_len < 1:
        ap.error("--block-max must lie in (0, 1) and --block-len be at least 1")
    for flag, value, least in (("--steps", args.steps, 1), ("--batch", args.batch, 1), ("--window", args.window, 2)):
        if value < least:
            ap.error(f"{flag} must be at least {least}, got {value}")
    try:
        preset = get_preset(args.preset)
    except KeyError as e:
        ap.error(str(e).strip("'\""))
    if args.init and not os.path.isfile(args.init):
        ap.error(f"--init {args.init}: no such checkpoint file")
    mask_kw = {"mix": mix, "max_future": args.max_future, "heavy_max": args.heavy_max,
               "block_max": args.block_max, "block_len": args.block_len}
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or os.path.join("runs", preset.name)
    for split in ("train", "val"):
        if not os.path.isfile(os.path.join(args.cache, f"{split}.npz")):
            print(f"posebert-train: error: {args.cache}/{split}.npz missing; build it with "
                  f"posebert-data build --src <mocap> --out {args.cache}", file=sys.stderr)
            return 2

    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if ddp:
        torch.distributed.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
        rank = torch.distributed.get_rank()
        if args.device.startswith("cuda"):
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    device = torch.device(args.device)
    train, val = MotionCache(os.path.join(args.cache, "train.npz")), MotionCache(os.path.join(args.cache, "val.npz"))
    body = preset.make_body().to(device)
    kwargs = preset.model_kwargs(args.size)
    last = os.path.join(out, "last.pt")
    st = _load_resume(last, device, ap) if os.path.isfile(last) and not args.no_resume else None
    blob = _load_init(args.init, device, ap) if args.init and st is None else None
    os.makedirs(out, exist_ok=True)
    # Weights keep the start they were trained for (resumed run, then --init's weights) unless told
    # otherwise: switching it silently (e.g. smooth -> mean) wrecks a model within a few hundred steps.
    inherited = (st or {}).get("args", {}).get("init_masked") or (blob or {}).get("config", {}).get("init_masked")
    if args.init_masked or inherited:
        kwargs["init_masked"] = args.init_masked or inherited
    args.init_masked = kwargs.get("init_masked", "mean")   # recorded in the checkpoints' args
    model = PoseBERT(**kwargs).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    step, log = 0, []
    if st is not None:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, log = st["step"], st.get("log", [])
        print(f"resumed from {last} at step {step}", flush=True)
    elif blob is not None:
        own = model.state_dict()
        # Tensors whose shape differs (the input embedding of another preset) keep their fresh init:
        # a trunk trained on one input kind starts another preset far closer than random weights.
        keep = {k: v.float() for k, v in blob["state_dict"].items() if k in own and own[k].shape == v.shape}
        skipped = sorted(set(own) - set(keep))
        model.load_state_dict(keep, strict=False)
        if skipped or "mean_theta" not in keep or ("root_offset" in own and "root_offset" not in keep):
            set_mean_pose(model, train, preset, body, args.seed)
        print(f"initialised from {args.init}" + (f" (kept fresh: {', '.join(skipped)})" if skipped else ""), flush=True)
    else:
        set_mean_pose(model, train, preset, body, args.seed)
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    rng = np.random.default_rng(args.seed + 1000 * rank + step)
    g = torch.Generator().manual_seed(args.seed + 1000 * rank + step)
    params = sum(p.numel() for p in model.parameters())
    if rank == 0:
        print(f"preset {preset.name}: {params / 1e6:.2f} M parameters, start {model.config.get('init_masked', 'mean')}, "
              f"train {train.num_frames} frames, "
              f"val {val.num_frames} frames, threads {torch.get_num_threads()}", flush=True)
    from tqdm import tqdm
    t0 = time.time()
    bar = tqdm(total=args.steps, initial=step, disable=rank != 0, mininterval=10, unit="step")

    def save():
        if rank != 0:
            return
        tmp = last + ".part"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "log": log,
                    "args": vars(args)}, tmp)
        os.replace(tmp, last)
        save_checkpoint(model, preset, os.path.join(out, "model.pt"),
                        meta={"step": step, "args": vars(args), "log": log[-5:]})

    model.train()
    while step < args.steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr)
        rot6d, tr = train.sample(args.batch, args.window, rng, speed=aug.speed)
        batch = build_training_batch(preset, rot6d, tr, body, g, mask_kw=mask_kw, aug=aug)
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs = net(batch["x"], batch["observed"], return_all=True)
        loss, terms = compute_loss(outputs, batch, body, w_vel=args.w_vel, layout=preset.loss_layout)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", joint_mm=f"{terms['joint_mm']:.1f}")
        if rank == 0 and step % args.save_every == 0:
            save()
        if rank == 0 and (step % args.val_every == 0 or step == args.steps):
            m = evaluate(model, val, preset, body)
            c = evaluate(model, val, preset, body, corrupt=False)
            entry = {"step": step, "minutes": (time.time() - t0) / 60, "train_loss": loss.item(),
                     "val_corrupt": m, "val_clean": c}
            log.append(entry)
            print(f"\nstep {step}: val corrupted MPJPE {m['MPJPE']:.1f} PA {m['PA-MPJPE']:.1f} Accel {m['Accel']:.1f} "
                  f"transl {m['transl_mm']:.0f} mm | clean MPJPE {c['MPJPE']:.1f} PA {c['PA-MPJPE']:.1f} "
                  f"Accel {c['Accel']:.1f} | per family corrupted/clean: "
                  + ", ".join(f"{k} {v}/{c['families'].get(k)}" for k, v in m["families"].items()), flush=True)
            with open(os.path.join(out, "log.json"), "w") as f:
                json.dump(log, f, indent=1)
        if args.max_minutes and _stop_together((time.time() - t0) / 60 > args.max_minutes, ddp, device):
            print(f"\nstopping after {args.max_minutes} minutes at step {step}", flush=True)
            break
    save()
    if args.save_rank_params:
        torch.save(model.state_dict(), os.path.join(out, f"params_rank{rank}.pt"))
    bar.close()
    if ddp:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
