"""Mocap folder -> compact training cache, and the data the trainer samples from.

    posebert-data build --src ../shared/data/mocap --out cache/

``--src`` may hold unpacked clips (``*.bvh``, ``*.amc`` + ``*.asf``, AMASS
``*.npz``) or ``*.tar.xz`` / ``*.tar.gz`` archives of them (unpacked to a
temporary folder that is removed afterwards).

Cache layout (``--out``):
- ``train.npz`` and ``val.npz``: ``rot6d`` (F, 24, 6) float16 local rotations
  in 6D, ``transl`` (F, 3) float32 pelvis positions (metres, Y up),
  ``clip_start`` / ``clip_len`` (C,) int64 frame ranges, ``clip_name`` (C,),
  ``clip_source``, ``clip_performer``, ``clip_family`` (C,); every clip at 30 fps.
- ``manifest.json``: the split rule, per-source counts, skipped clips and why.

Split (fixed, by performer, never tuned on; ``clip_meta``): a clip is validation when its
performer is held out, whole:
- CMU subject 03 (locomotion on uneven ground, ASF/AMC), CMU subject 14 (everyday actions,
  boxing), the salsa couple (CMU 60 and 61, dance; the BVH files do not say which partner is
  which, so both are held out) and CMU 135 (martial arts): performers and motion families
  that no training clip contains;
- Bandai-Namco styles ``old`` (dataset 1) and ``elderly`` (dataset 2): the Bandai files carry no
  performer label, so the style is the closest proxy there is;
- user clips (AMASS or other BVH): by performer too, the first folder of the clip's path (an
  AMASS subject folder) when ``crc32(folder) % 10 == 0``.
Every clip also carries a motion family (``locomotion``, ``dance``, ``martial_arts``,
``everyday``; sport-like motion counts as everyday) for per-family benchmarks.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from ..rotations import rotmat_to_6d
from .asf_amc import read_amc, read_asf
from .bvh import read_bvh
from .loaders import find_asf, guess_joint_map
from .retarget import Motion, builtin_map, resample, retarget
from .amass import read_amass
from .skeleton_motion import MocapFormatError

SPLIT_RULE = ("by performer: validation = CMU subjects 03, 14, 60+61 (salsa couple), 135 (martial arts); "
              "Bandai-Namco styles 'old' (dataset-1) and 'elderly' (dataset-2) (no performer labels); "
              "user clips: crc32(performer folder) % 10 == 0")
FAMILIES = ("locomotion", "dance", "martial_arts", "everyday")
VAL_CMU_SUBJECTS = {"03", "14", "60", "61", "135"}
# CMU subjects of the shared archives -> motion family (mocap.cs.cmu.edu subject index)
_CMU_FAMILY = {"01": "everyday", "02": "locomotion", "03": "locomotion", "08": "locomotion", "09": "locomotion",
               "10": "everyday", "12": "locomotion", "13": "everyday", "14": "everyday", "16": "locomotion",
               "60": "dance", "61": "dance", "94": "dance", "135": "martial_arts"}
# the acrnn archive names folders by motion; each folder is one CMU performer (or the salsa couple)
_ACRNN_SUBJECT = {"salsa": "60", "indian": "94", "martial": "135"}
_BANDAI_FAMILY = (("dance", "dance"), ("kick", "martial_arts"), ("punch", "martial_arts"), ("slash", "martial_arts"),
                  ("walk", "locomotion"), ("run", "locomotion"), ("dash", "locomotion"))


def clip_meta(name: str, source: str) -> tuple[str, str, str]:
    """(performer, family, split) of a clip from its path under the mocap folder (no extension).

    >>> clip_meta("cmu-bvh-acrnn/train_data_bvh/martial/03", "cmu-bvh-acrnn")
    ('cmu-135', 'martial_arts', 'val')
    """
    parts = name.replace(os.sep, "/").split("/")
    base = parts[-1]
    if source.startswith("bandai"):
        m = re.match(r"dataset-\d_(.+)_([a-z-]+)_\d+$", base)
        content, style = (m.group(1), m.group(2)) if m else (base, "unknown")
        family = next((f for key, f in _BANDAI_FAMILY if key in content), "everyday")
        return f"{source}-{style}", family, "val" if style in ("old", "elderly") else "train"
    subject = None
    if "train_data_bvh" in parts and len(parts) >= 2 and parts[-2] in _ACRNN_SUBJECT:
        subject = _ACRNN_SUBJECT[parts[-2]]
    m = re.match(r"(\d+)_\d+$", base)
    if subject is None and m and source.startswith("cmu"):
        subject = m.group(1)
    if subject is not None and subject in _CMU_FAMILY:
        performer = "cmu-60+61" if subject in ("60", "61") else f"cmu-{subject}"
        return performer, _CMU_FAMILY[subject], "val" if subject in VAL_CMU_SUBJECTS else "train"
    folder = "/".join(parts[-3:-1]) if len(parts) >= 2 else base   # AMASS: <dataset>/<subject>/<clip>_poses
    performer = f"{source}-{folder}"
    return performer, "everyday", "val" if zlib.crc32(performer.encode()) % 10 == 0 else "train"


@dataclass
class Clip:
    name: str
    path: str
    source: str

    @property
    def meta(self) -> tuple[str, str, str]:
        """(performer, family, split), see :func:`clip_meta`."""
        return clip_meta(self.name, self.source)

    @property
    def split(self) -> str:
        return self.meta[2]


def _source_of(rel: str) -> str:
    top = rel.split(os.sep)[0]
    m = re.search(r"Motiondataset-(\d)", top)
    if m:
        return f"bandai-namco-{m.group(1)}"
    if rel.endswith(".amc"):
        return "cmu"
    if rel.endswith(".npz"):
        return "amass"
    if rel.endswith(".bvh") and re.match(r"\d+_\d+\.bvh$", os.path.basename(rel)) and not top.startswith("cmu"):
        return "cmu-bvh"   # a CMU clip (subject_trial.bvh) outside the shared archives' folders
    return top if os.sep in rel else "bvh"


@contextlib.contextmanager
def list_clips(src):
    """Yield the sorted list of :class:`Clip` under ``src`` (unpacking archives to a temp folder)."""
    src = os.fspath(src)
    if not os.path.isdir(src):
        raise FileNotFoundError(f"mocap source {src!r} is not a folder")
    tmp = None
    try:
        roots = [src]
        archives = sorted(f for f in os.listdir(src) if f.endswith((".tar.xz", ".tar.gz", ".tgz", ".tar", ".tar.bz2")))
        if archives:
            tmp = tempfile.mkdtemp(prefix="posebert-mocap-")
            for a in archives:
                print(f"unpacking {a} ...", file=sys.stderr, flush=True)
                with tarfile.open(os.path.join(src, a)) as tf:
                    tf.extractall(tmp, filter="data")
            roots.append(tmp)
        clips = []
        for root in roots:
            for dirpath, _, files in os.walk(root, followlinks=True):
                if tmp is not None and root == src and dirpath.startswith(tmp):
                    continue
                for f in files:
                    # AMASS folders hold a shape.npz (betas only) per subject beside the clips
                    if f.endswith((".bvh", ".amc")) or (f.endswith(".npz") and not f.startswith(("train", "val"))
                                                        and f not in ("shape.npz", "manifest.npz")):
                        p = os.path.join(dirpath, f)
                        rel = os.path.relpath(p, root)
                        clips.append(Clip(os.path.splitext(rel)[0], p, _source_of(rel)))
        clips.sort(key=lambda c: c.name)
        yield clips
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def read_source(clip: Clip):
    """Read a BVH/AMC clip -> (SkeletonMotion, JointMap). AMASS clips return (Motion, None)."""
    if clip.path.endswith(".npz"):
        return read_amass(clip.path), None
    if clip.path.endswith(".amc"):
        asf_path = find_asf(clip.path)
        src = read_amc(clip.path, read_asf(asf_path))
        return src, builtin_map("cmu_asf")
    src = read_bvh(clip.path, scale=1.0)
    jm = builtin_map(guess_joint_map(src.names))
    scale = jm.scale if jm.scale is not None else (0.01 if np.ptp(src.rest_positions[:, 1]) > 10 else 1.0)
    src.positions *= scale
    src.rest_positions *= scale
    return src, jm


def clip_motion(clip: Clip, fps: float = 30.0) -> Motion:
    src, jm = read_source(clip)
    m = src if jm is None else retarget(src, jm)
    m = resample(m, fps)
    if not (np.isfinite(m.rotmats).all() and np.isfinite(m.transl).all()):
        raise MocapFormatError(clip.path, "retargeting produced NaNs")
    return m


def build_cache(src, out, fps: float = 30.0, min_frames: int = 16, progress: bool = True) -> dict:
    """Build the cache; returns the manifest dict. Bad clips are skipped with a warning."""
    from tqdm import tqdm
    os.makedirs(out, exist_ok=True)
    parts = {"train": [], "val": []}
    skipped, stats, families = [], {}, {}
    with list_clips(src) as clips:
        if not clips:
            raise FileNotFoundError(f"no .bvh, .amc or AMASS .npz clips under {src!r}")
        for clip in tqdm(clips, desc="retargeting", unit="clip", disable=not progress):
            try:
                m = clip_motion(clip, fps)
            except Exception as e:  # one bad clip must not sink the build
                warnings.warn(f"skipping {clip.path}: {e}")
                skipped.append({"clip": clip.name, "error": str(e)})
                continue
            if m.num_frames < min_frames:
                skipped.append({"clip": clip.name, "error": f"only {m.num_frames} frames"})
                continue
            rot6d = rotmat_to_6d(torch.as_tensor(m.rotmats)).numpy().astype(np.float16)
            parts[clip.split].append((clip, rot6d, m.transl.astype(np.float32)))
            s = stats.setdefault(clip.source, {"clips": 0, "frames": 0, "train_clips": 0, "val_clips": 0})
            performer, family, split = clip.meta
            fam = families.setdefault(f"{split}/{family}", {"clips": 0, "frames": 0, "performers": []})
            fam["clips"] += 1
            fam["frames"] += m.num_frames
            if performer not in fam["performers"]:
                fam["performers"].append(performer)
            s["clips"] += 1
            s["frames"] += m.num_frames
            s[f"{clip.split}_clips"] += 1
    for split, items in parts.items():
        if not items:
            continue
        lens = np.array([r.shape[0] for _, r, _ in items])
        tmp = os.path.join(out, f"{split}.part.npz")
        np.savez(tmp, rot6d=np.concatenate([r for _, r, _ in items]),
                 transl=np.concatenate([t for _, _, t in items]),
                 clip_start=np.concatenate([[0], np.cumsum(lens)[:-1]]), clip_len=lens,
                 clip_name=np.array([c.name for c, _, _ in items]),
                 clip_source=np.array([c.source for c, _, _ in items]),
                 clip_performer=np.array([c.meta[0] for c, _, _ in items]),
                 clip_family=np.array([c.meta[1] for c, _, _ in items]))
        os.replace(tmp, os.path.join(out, f"{split}.npz"))
    for s in stats.values():
        s["hours"] = s["frames"] / fps / 3600
    manifest = {"fps": fps, "split_rule": SPLIT_RULE, "sources": stats, "skipped": skipped,
                "families": dict(sorted(families.items())),
                "frames": {k: int(sum(r.shape[0] for _, r, _ in v)) for k, v in parts.items()}}
    with open(os.path.join(out, "manifest.json.part"), "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(os.path.join(out, "manifest.json.part"), os.path.join(out, "manifest.json"))
    return manifest


def summary_table(manifest: dict) -> str:
    rows = ["| source | clips | train / val clips | frames | hours |", "|---|---|---|---|---|"]
    tot = [0, 0, 0, 0, 0.0]
    for name, s in sorted(manifest["sources"].items()):
        rows.append(f"| {name} | {s['clips']} | {s['train_clips']} / {s['val_clips']} | {s['frames']:,} | {s['hours']:.2f} |")
        tot = [tot[0] + s["clips"], tot[1] + s["train_clips"], tot[2] + s["val_clips"], tot[3] + s["frames"], tot[4] + s["hours"]]
    rows.append(f"| total | {tot[0]} | {tot[1]} / {tot[2]} | {tot[3]:,} | {tot[4]:.2f} |")
    if manifest["skipped"]:
        rows.append(f"\nskipped {len(manifest['skipped'])} clip(s):")
        rows += [f"- {s['clip']}: {s['error']}" for s in manifest["skipped"]]
    return "\n".join(rows)


class MotionCache:
    """A split of the cache in memory: windows of ``T`` frames sampled from clips.

    rot6d (F, 24, 6) float32, transl (F, 3) float32; windows never cross clips.
    """

    def __init__(self, path):
        with np.load(path, allow_pickle=False) as d:
            self.rot6d = torch.from_numpy(d["rot6d"].astype(np.float32))
            self.transl = torch.from_numpy(d["transl"].astype(np.float32))
            self.clip_start = d["clip_start"].astype(np.int64)
            self.clip_len = d["clip_len"].astype(np.int64)
            self.clip_name = d["clip_name"]
            n = len(self.clip_name)   # caches built before the performer split carry no family
            self.clip_family = d["clip_family"] if "clip_family" in d else np.full(n, "unknown")
            self.clip_performer = d["clip_performer"] if "clip_performer" in d else np.full(n, "unknown")

    @property
    def num_frames(self) -> int:
        return int(self.rot6d.shape[0])

    def window_starts(self, T: int, stride: int) -> np.ndarray:
        """All window starts (global frame index) with the given stride; clips shorter than T are skipped."""
        starts = [s + np.arange(0, n - T + 1, stride) for s, n in zip(self.clip_start, self.clip_len) if n >= T]
        return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)

    def sample(self, batch: int, T: int, rng: np.random.Generator, speed=(1.0, 1.0)) -> tuple:
        """Random windows -> (rot6d (B, T, 24, 6), transl (B, T, 3)); clips weighted by length.

        speed: play-rate range (log-uniform per window): a window at speed s covers ``(T - 1) * s + 1``
        source frames resampled to T (``synth.time_warp``); (1, 1) reads frames as they are."""
        if speed[0] == speed[1] == 1.0:
            return self._sample(batch, T, rng)
        from ..synth import time_warp
        s = np.exp(rng.uniform(np.log(speed[0]), np.log(speed[1]), batch))
        s = np.minimum(s, (self.clip_len.max() - 1) / max(1, T - 1))   # no clip is long enough beyond
        rots, trs = [], []
        for si in s:   # one length per window: clips long enough for it
            n = int(np.ceil((T - 1) * si)) + 1
            r, t = self._sample(1, n, rng)
            r, t = time_warp(r, t, torch.tensor([(n - 1) / max(1, T - 1)]), T)   # last frame -> last frame
            rots.append(r)
            trs.append(t)
        return torch.cat(rots), torch.cat(trs)

    def _sample(self, batch: int, T: int, rng: np.random.Generator) -> tuple:
        ok = self.clip_len >= T
        if not ok.any():
            raise ValueError(f"no clip has {T} frames")
        w = (self.clip_len - T + 1) * ok
        c = rng.choice(len(w), size=batch, p=w / w.sum())
        s = self.clip_start[c] + (rng.random(batch) * (self.clip_len[c] - T + 1)).astype(np.int64)
        idx = torch.from_numpy(s[:, None] + np.arange(T)[None])
        return self.rot6d[idx], self.transl[idx]

    def window_family(self, starts) -> np.ndarray:
        """Motion family of the clip holding each window start (global frame index) -> (N,) str."""
        c = np.searchsorted(self.clip_start, np.asarray(starts), side="right") - 1
        return self.clip_family[c]

    def windows(self, starts, T: int) -> tuple:
        idx = torch.from_numpy(np.asarray(starts)[:, None] + np.arange(T)[None])
        return self.rot6d[idx], self.transl[idx]


def build_hand_cache(out, train_clips=400, val_clips=64, frames=600, seed=0) -> int:
    """Generated hand motion into a cache folder (same format as the body cache, J = 16)."""
    from ..hand_model import DefaultHandModel
    from ..hand_motion import HandMotionGenerator
    os.makedirs(out, exist_ok=True)
    gen = HandMotionGenerator(DefaultHandModel("right"))
    for split, n, sd in (("train", train_clips, seed), ("val", val_clips, seed + 1)):
        gen.build_cache(os.path.join(out, f"{split}.npz"), n, frames, sd)
        print(f"{split}: {n} clips x {frames} frames (seed {sd})")
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"kind": "hands", "generator": "posebert_plug.hand_motion.HandMotionGenerator defaults",
                   "train_clips": train_clips, "val_clips": val_clips, "frames": frames, "seed": seed}, f, indent=1)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="posebert-data", description="Build the PoseBERT training cache from mocap.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="retarget a folder of mocap (or archives) into a cache",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--src", required=True, help="folder with .bvh/.amc/.npz clips or .tar.xz archives of them")
    b.add_argument("--out", required=True, help="cache folder to write")
    b.add_argument("--fps", type=float, default=30.0)
    h = sub.add_parser("hands", help="generate a hand-motion cache (hand_motion.py) for the kp3d-hand21 preset")
    h.add_argument("--out", required=True, help="cache folder to write (train.npz, val.npz)")
    h.add_argument("--train-clips", type=int, default=400)
    h.add_argument("--val-clips", type=int, default=64)
    h.add_argument("--frames", type=int, default=600, help="frames per clip (30 fps)")
    h.add_argument("--seed", type=int, default=0, help="train uses seed, val seed + 1 (disjoint draws)")
    args = ap.parse_args(argv)
    if args.cmd == "hands":
        return build_hand_cache(args.out, args.train_clips, args.val_clips, args.frames, args.seed)
    try:
        manifest = build_cache(args.src, args.out, fps=args.fps)
    except (FileNotFoundError, MocapFormatError) as e:
        print(f"posebert-data: error: {e}", file=sys.stderr)
        return 2
    print(summary_table(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
