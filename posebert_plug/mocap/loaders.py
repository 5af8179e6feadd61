"""``load_motion``: any supported mocap file -> SMPL-24 :class:`Motion` at a fixed fps."""
from __future__ import annotations

import glob
import os

from ..skeletons import SMPL24
from .amass import read_amass
from .asf_amc import read_amc
from .bvh import read_bvh
from .retarget import Motion, builtin_map, load_joint_map, resample, retarget
from .skeleton_motion import MocapFormatError

BANDAI_JOINTS = {"Hips", "UpperLeg_L", "LowerArm_R", "Toes_L", "Chest"}
DAZ_JOINTS = {"hip", "abdomen", "lShldr", "rForeArm", "lThigh", "rShin"}   # cgspeed "Daz-friendly" CMU BVH


def guess_joint_map(names) -> str:
    names = set(names)
    if BANDAI_JOINTS <= names:
        return "bandai"
    if {"lfemur", "rhumerus", "lowerback"} <= names:
        # CMU ASF joints; exported as BVH (e.g. CMU 16_01) the root is named "hip", not "root"
        return "cmu_asf" if "root" in names else "cmu_asf_bvh"
    if DAZ_JOINTS <= names:
        return "cmu_daz"
    if set(SMPL24.joints) <= names:
        return "smpl24"
    raise KeyError("unknown source skeleton: pass joint_map=<file.json> mapping SMPL-24 joints to its joints "
                   f"(its joints: {', '.join(sorted(names))})")


def find_asf(amc_path) -> str:
    d = os.path.dirname(os.path.abspath(amc_path))
    base = os.path.basename(amc_path).split("_")[0]
    cand = [os.path.join(d, base + ".asf")] + sorted(glob.glob(os.path.join(d, "*.asf")))
    for c in cand:
        if os.path.isfile(c):
            return c
    raise MocapFormatError(amc_path, "no ASF skeleton file beside this AMC file")


def load_motion(path, joint_map=None, calibration_frame=None, fps: float = 30.0, asf=None) -> Motion:
    """Read a BVH, ASF/AMC or AMASS ``.npz`` file and return SMPL-24 motion at ``fps``.

    Returns a :class:`Motion` with ``rotmats`` (T, 24, 3, 3) local rotations,
    ``transl`` (T, 3) pelvis position in metres (Y up) and ``fps``.
    joint_map: a path/dict/JointMap, a built-in name, or None to recognise the
        skeleton (Bandai-Namco, CMU ASF, SMPL-24 names).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such motion file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        return resample(read_amass(path), fps)
    if ext == ".bvh":
        jm = _resolve_map(joint_map, None)
        src = read_bvh(path, scale=jm.scale if jm is not None else None)
        if jm is None:
            jm = builtin_map(guess_joint_map(src.names))
            if jm.scale is not None:
                src = read_bvh(path, scale=jm.scale)
    elif ext == ".amc":
        src = read_amc(path, asf if asf is not None else find_asf(path))
        jm = _resolve_map(joint_map, None) or builtin_map(guess_joint_map(src.names))
    else:
        raise MocapFormatError(path, f"unsupported extension {ext!r}: expected .bvh, .amc or .npz (AMASS)")
    return resample(retarget(src, jm, calibration_frame=calibration_frame), fps)


def _resolve_map(joint_map, default):
    if joint_map is None:
        return default
    if isinstance(joint_map, str) and not os.path.exists(joint_map):
        return builtin_map(joint_map)
    return load_joint_map(joint_map)
