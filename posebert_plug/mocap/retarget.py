"""Retarget any source skeleton onto SMPL-24 local rotations + root translation.

A joint map (JSON or YAML) declares, per SMPL-24 joint, which source joint
drives it, plus the calibration pose:

    {"joints": {"pelvis": "Hips", "left_knee": "LowerLeg_L", ...},
     "calibration": "rest" | {"frame": 0},
     "scale": 0.01,            # BVH only: metres per file unit (optional)
     "hinge_fix": true,        # align elbow/knee hinge axes (twist fix)
     "skip_frames": 0}         # leading source frames to drop (e.g. a T-pose and a blend into the motion)

Method, per mapped joint j driven by source joint s:
``G_smpl_j(t) = G_src_s(t) @ B_j`` with ``B_j = G_src_s(c)^T @ T_j``, where c
is the calibration pose with its heading removed and ``T_j`` the SMPL global
rotation wanted there: identity for the trunk (pelvis, spines, neck, head),
and for limbs the minimal rotation taking the SMPL T-pose bone to the source
bone (so a standing calibration with arms down works as well as a T-pose).
Unmapped joints keep their parent's global rotation. The hinge fix then rolls
the upper arm / thigh about its own axis so that elbow and knee flexion happens
about SMPL's hinge axes. Translation is the source pelvis position scaled by
the ratio of leg lengths (SMPL / source).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from ..kinematics import global_to_local
from ..rotations import rotation_between, slerp_rotmat
from ..skeletons import SMPL24
from .skeleton_motion import SkeletonMotion

__all__ = ["Motion", "JointMap", "load_joint_map", "retarget", "resample", "builtin_map"]

TRUNK = ("pelvis", "spine1", "spine2", "spine3", "neck", "head")
# The SMPL child whose direction defines each limb joint's bone.
PRIMARY_CHILD = {
    "left_hip": "left_knee", "right_hip": "right_knee", "left_knee": "left_ankle", "right_knee": "right_ankle",
    "left_ankle": "left_foot", "right_ankle": "right_foot", "left_collar": "left_shoulder",
    "right_collar": "right_shoulder", "left_shoulder": "left_elbow", "right_shoulder": "right_elbow",
    "left_elbow": "left_wrist", "right_elbow": "right_wrist", "left_wrist": "left_hand", "right_wrist": "right_hand",
}
# Hinge joints: (hinge, its parent, SMPL flexion axis in the parent's rest frame).
HINGES = (("left_elbow", "left_shoulder", (0.0, -1.0, 0.0)), ("right_elbow", "right_shoulder", (0.0, 1.0, 0.0)),
          ("left_knee", "left_hip", (1.0, 0.0, 0.0)), ("right_knee", "right_hip", (1.0, 0.0, 0.0)))


@dataclass
class Motion:
    """SMPL-24 motion. rotmats (T, 24, 3, 3) local rotations (index 0 = root orientation in
    world axes, Y up); transl (T, 3) pelvis position, metres; fps."""

    rotmats: np.ndarray
    transl: np.ndarray
    fps: float
    source: str = ""

    @property
    def num_frames(self) -> int:
        return int(self.rotmats.shape[0])


@dataclass
class JointMap:
    joints: dict
    calibration: object = "rest"
    scale: float | None = None
    hinge_fix: bool = True
    name: str = "custom"
    skip_frames: int = 0

    def validate(self, motion: SkeletonMotion | None = None) -> None:
        unknown = [k for k in self.joints if k not in SMPL24.joints]
        if unknown:
            raise KeyError(f"joint map {self.name!r}: unknown SMPL-24 joint(s) {unknown}; "
                           f"valid names: {', '.join(SMPL24.joints)}")
        if "pelvis" not in self.joints:
            raise KeyError(f"joint map {self.name!r}: 'pelvis' must be mapped")
        if motion is not None:
            missing = [v for v in self.joints.values() if v not in motion.names]
            if missing:
                raise KeyError(f"joint map {self.name!r}: source joint(s) {missing} not in {motion.source} "
                               f"(its joints: {', '.join(motion.names)})")


def builtin_map(name: str) -> JointMap:
    """Shipped maps (``posebert_plug/mocap/maps/*.json``): ``bandai``, ``cmu_asf``, ``cmu_asf_bvh``,
    ``cmu_daz``, ``smpl24``."""
    p = resources.files("posebert_plug") / "mocap" / "maps" / f"{name}.json"
    if not p.is_file():
        raise KeyError(f"no built-in joint map {name!r}; shipped: "
                       f"{', '.join(sorted(f.name[:-5] for f in p.parent.iterdir() if f.name.endswith('.json')))}")
    return load_joint_map(str(p))


def load_joint_map(path_or_dict) -> JointMap:
    """Read a joint map from a JSON/YAML file or a dict."""
    if isinstance(path_or_dict, JointMap):
        return path_or_dict
    if isinstance(path_or_dict, dict):
        d, name = path_or_dict, path_or_dict.get("name", "custom")
    else:
        path = os.fspath(path_or_dict)
        with open(path) as f:
            text = f.read()
        if path.endswith((".yaml", ".yml")):
            import yaml
            d = yaml.safe_load(text)
        else:
            d = json.loads(text)
        name = d.get("name", os.path.basename(path))
    if not isinstance(d, dict) or not isinstance(d.get("joints"), dict):
        raise ValueError(f"joint map {name!r}: expected a mapping with a 'joints' dict (SMPL-24 name -> source joint)")
    jm = JointMap(dict(d["joints"]), d.get("calibration", "rest"), d.get("scale"), bool(d.get("hinge_fix", True)), name,
                  int(d.get("skip_frames", 0)))
    jm.validate()
    return jm


def _heading_removal(motion: SkeletonMotion, jm: JointMap, frame: int) -> np.ndarray:
    """Yaw rotation (3, 3) that makes the calibration frame face +Z (left hip -> +X)."""
    lh, rh = jm.joints.get("left_hip"), jm.joints.get("right_hip")
    if lh is None or rh is None:
        return np.eye(3)
    v = motion.positions[frame, motion.index(lh)] - motion.positions[frame, motion.index(rh)]
    yaw = np.arctan2(-v[2], v[0])  # angle of the hip axis from +X about +Y
    c, s = np.cos(-yaw), np.sin(-yaw)
    # Rotation about +Y by -yaw: takes the hip axis onto +X.
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def retarget(motion: SkeletonMotion, joint_map, rest_joints=None, calibration_frame: int | None = None) -> Motion:
    """Retarget a :class:`SkeletonMotion` to SMPL-24 (same fps; see :func:`resample`).

    rest_joints: (24, 3) SMPL-24 T-pose joints (default: the shipped body model's).
    calibration_frame: overrides the map's calibration with this frame.
    """
    jm = load_joint_map(joint_map)
    jm.validate(motion)
    if rest_joints is None:
        rest_joints = _default_rest()
    rest = np.asarray(rest_joints, dtype=np.float64)
    T = motion.num_frames
    calib = jm.calibration if calibration_frame is None else {"frame": calibration_frame}
    if calib == "rest":
        Gc = np.broadcast_to(np.eye(3), (len(motion.names), 3, 3))
        Pc = motion.rest_positions
    else:
        f = int(calib["frame"])
        if not 0 <= f < T:
            raise ValueError(f"{motion.source}: calibration frame {f} outside 0..{T - 1}")
        Y = _heading_removal(motion, jm, f)
        Gc = Y @ motion.global_rotmats[f]
        Pc = motion.positions[f] @ Y.T

    names = SMPL24.joints
    src = {j: motion.index(s) for j, s in jm.joints.items()}
    target = {}
    G = np.empty((T, 24, 3, 3))
    for j, name in enumerate(names):
        p = SMPL24.parents[j]
        if name not in src:
            G[:, j] = G[:, p] if p >= 0 else np.eye(3)
            target[name] = target[names[p]] if p >= 0 else np.eye(3)
            continue
        Tj = np.eye(3) if name in TRUNK else target[names[p]]
        child = PRIMARY_CHILD.get(name)
        if name not in TRUNK and child in src:
            d_src = Pc[src[child]] - Pc[src[name]]
            d_smpl = rest[names.index(child)] - rest[j]
            if np.linalg.norm(d_src) > 1e-3:
                Tj = rotation_between(torch.as_tensor(d_smpl), torch.as_tensor(d_src)).numpy()
        target[name] = Tj
        B = Gc[src[name]].T @ Tj
        G[:, j] = motion.global_rotmats[:, src[name]] @ B
    if jm.hinge_fix:
        _fix_hinges(G, rest)
    local = global_to_local(torch.as_tensor(G), SMPL24.parents).numpy()

    def leg_length(points, hip, knee, ankle):
        return np.linalg.norm(points[knee] - points[hip]) + np.linalg.norm(points[ankle] - points[knee])

    scale = 1.0
    if all(k in src for k in ("left_hip", "left_knee", "left_ankle")):
        src_len = leg_length(motion.rest_positions, src["left_hip"], src["left_knee"], src["left_ankle"])
        if src_len > 1e-6:
            scale = leg_length(rest, 1, 4, 7) / src_len
    transl = motion.positions[:, src["pelvis"]] * scale
    k = min(jm.skip_frames, max(0, T - 1))   # calibration above may use a skipped frame (the T-pose)
    return Motion(local[k:].astype(np.float64), transl[k:], motion.fps, motion.source)


def _fix_hinges(G: np.ndarray, rest: np.ndarray, min_angle: float = np.deg2rad(20)) -> None:
    """Roll each upper limb about its bone so that the hinge's flexion axis matches SMPL's (in place)."""
    import roma
    for hinge, parent, axis in HINGES:
        h, p = SMPL24.index(hinge), SMPL24.index(parent)
        local = torch.as_tensor(np.swapaxes(G[:, p], -1, -2) @ G[:, h])
        rv = roma.rotmat_to_rotvec(local).numpy()
        angle = np.linalg.norm(rv, axis=-1)
        keep = angle > min_angle
        if keep.sum() < 5:
            continue
        u = rest[h] - rest[p]
        u /= np.linalg.norm(u)
        m = rv[keep].sum(0)
        m -= u * (m @ u)
        a = np.asarray(axis)
        a = a - u * (a @ u)
        if np.linalg.norm(m) < 1e-6:
            continue
        phi = np.arctan2(u @ np.cross(a, m), a @ m)
        Rr = roma.rotvec_to_rotmat(torch.as_tensor(u * phi)).numpy()
        G[:, p] = G[:, p] @ Rr
        G[:, h] = G[:, h] @ Rr


def resample(m: Motion, fps: float = 30.0) -> Motion:
    """Resample to ``fps`` with slerp on rotations and linear interpolation on translation."""
    if abs(m.fps - fps) < 1e-3 * fps or m.num_frames < 2:
        return Motion(m.rotmats, m.transl, fps if abs(m.fps - fps) < 1e-3 * fps else m.fps, m.source)
    duration = (m.num_frames - 1) / m.fps
    t = np.arange(0.0, duration + 1e-3 / fps, 1.0 / fps) * m.fps
    i0 = np.clip(np.floor(t).astype(int), 0, m.num_frames - 1)
    i1 = np.clip(i0 + 1, 0, m.num_frames - 1)
    w = t - i0
    if np.allclose(w, 0):
        return Motion(m.rotmats[i0], m.transl[i0], fps, m.source)
    R0, R1 = torch.as_tensor(m.rotmats[i0]), torch.as_tensor(m.rotmats[i1])
    wt = torch.as_tensor(w)[:, None].expand(-1, 24)
    R = slerp_rotmat(R0, R1, wt).numpy()
    tr = m.transl[i0] * (1 - w)[:, None] + m.transl[i1] * w[:, None]
    return Motion(R, tr, fps, m.source)


def _default_rest() -> np.ndarray:
    """The free body's rest joints (24, 3), metres (read from the shipped asset: a few kB)."""
    p = resources.files("posebert_plug") / "assets" / "body_default.npz"
    with np.load(str(p)) as d:
        return d["rest_joints"].astype(np.float64)
