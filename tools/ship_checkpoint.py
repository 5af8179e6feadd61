"""Copy a trained run's model.pt into the package registry, with its checksum and card.

    python tools/ship_checkpoint.py runs/smpl --command "posebert-train --preset smpl ..." [--bench FILE]

Writes posebert_plug/checkpoints/<preset>.pt, updates index.json (file, sha256, step) and
writes <preset>.md: the command, the data (cache manifest), steps, wall time and the
validation log; --bench appends a benchmark table (text file) to the card.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

import torch

from posebert_plug.presets import sha256_of

DEST = os.path.join(os.path.dirname(__file__), "..", "posebert_plug", "checkpoints")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--command", required=True)
    ap.add_argument("--cache-manifest", default=None)
    ap.add_argument("--bench", action="append", default=[])
    ap.add_argument("--data", default=None, help="the data line of the card (default: the body mocap cache)")
    ap.add_argument("--note", action="append", default=[], help="a paragraph for the card (e.g. the run it started from)")
    args = ap.parse_args()
    blob = torch.load(os.path.join(args.run, "model.pt"), map_location="cpu", weights_only=True)
    preset = blob["preset"]
    dst = os.path.join(DEST, f"{preset}.pt")
    shutil.copyfile(os.path.join(args.run, "model.pt"), dst)
    idx_path = os.path.join(DEST, "index.json")
    index = json.load(open(idx_path)) if os.path.exists(idx_path) else {}
    log = json.load(open(os.path.join(args.run, "log.json"))) if os.path.exists(os.path.join(args.run, "log.json")) else []
    step = blob["meta"].get("step")
    index[preset] = {"file": f"{preset}.pt", "sha256": sha256_of(dst), "step": step, "config": blob["config"],
                     "window": int(blob["meta"].get("args", {}).get("window") or 64)}   # read by checks, no weights
    json.dump(index, open(idx_path, "w"), indent=1, sort_keys=True)
    params = sum(v.numel() for v in blob["state_dict"].values())
    lines = [f"# Checkpoint card: `{preset}`", "", f"- file: `{preset}.pt` (fp16, {os.path.getsize(dst) / 1e6:.1f} MB), "
             f"sha256 `{index[preset]['sha256']}`", f"- model: {blob['config']} ({params / 1e6:.2f} M parameters)",
             f"- steps: {step}; wall time: {log[-1]['minutes']:.0f} min" if log else f"- steps: {step}",
             f"- command: `{args.command}`", "- hardware: 2 CPU cores (shared with development work), fp32",
             "- data: " + (args.data or "all Bandai-Namco 1+2 and CMU 01-03 clips retargeted to SMPL-24 at 30 fps "
                           "(`posebert-data build --src ../shared/data/mocap --out cache`); validation split fixed by "
                           "clip (Bandai style old/elderly, CMU subject 03), never tuned on."),
             *[f"- {n}" for n in args.note], "",
             "## Validation during training (fixed 256 windows of 64 frames, mm; Accel mm/frame²)", "",
             "| step | min | corrupted MPJPE | PA-MPJPE | Accel | root transl err | clean MPJPE | PA-MPJPE | Accel |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in log:
        c, k = e["val_corrupt"], e["val_clean"]
        lines.append(f"| {e['step']} | {e['minutes']:.0f} | {c['MPJPE']:.1f} | {c['PA-MPJPE']:.1f} | {c['Accel']:.1f} | "
                     f"{c['transl_mm']:.0f} | {k['MPJPE']:.1f} | {k['PA-MPJPE']:.1f} | {k['Accel']:.1f} |")
    lines += ["", "Corruption = the training mixture (random/block/heavy/future masks, rotation or keypoint noise, "
              "outlier poses from other sequences), seeded."]
    for b in args.bench:
        lines += ["", open(b).read()]
    open(os.path.join(DEST, f"{preset}.md"), "w").write("\n".join(lines) + "\n")
    print(f"shipped {preset}: {dst}")


if __name__ == "__main__":
    main()
