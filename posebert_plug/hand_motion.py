"""Generated hand motion: plausible MANO-16 sequences for training the hand preset.

There is no free hand mocap here, so hand motion is synthesised from anatomy:

- **Joint model** per finger (index, middle, ring, pinky): MCP flexion and abduction,
  PIP flexion, DIP flexion coupled to PIP (``DIP = DIP_COUPLING * PIP`` plus a little
  independent noise, the tendon coupling of real fingers). Thumb: CMC opposition (a swing
  about the hand's long axis, across the palm) and flexion, MCP and IP flexion.
- **Limits** (radians, ``LIMITS``): MCP flexion -0.35..1.6, abduction -0.35..0.35,
  PIP 0..1.85, DIP 0..1.4; thumb CMC opposition 0..1.1, CMC flexion -0.3..0.9,
  MCP -0.1..1.0, IP -0.25..1.35. Every generated angle is clipped to them.
- **Synergies** (``SYNERGIES``): relax, flat, spread, fist, point, pinch, grasp, ok,
  thumbs-up; a key pose is a random convex mix of one or two synergies plus per-joint
  noise (``key_noise`` rad).
- **Timing**: key poses every ``key_seconds`` (uniform 0.25..1.5 s, so speeds vary),
  joined by smooth-step transitions; occasional holds.
- **Wrist**: global orientation swinging smoothly between random orientations (at most
  ``max_wrist_turn`` rad between keys, slerp with smooth-step), position a smooth random
  walk within ``wrist_range`` metres. With ``wrist_base`` (3, 3) given, every key
  orientation is that base turned by at most ``max_wrist_turn`` (a hand that keeps
  facing one way, e.g. the palm towards a camera) instead of a free random walk.

Output frame: the hand model's frame (``hand_model.py``: Y up for the rest hand's
axes), metres, 30 fps. Angles become local rotations about axes measured on the rest
hand (flexion axis = segment direction x palmar normal), so the same generator drives
the free hand and, through the shared MANO-16 order, a MANO hand.
"""
from __future__ import annotations

import numpy as np
import torch

from .rotations import rotvec_to_rotmat, slerp_rotmat

__all__ = ["HandMotionGenerator", "LIMITS", "SYNERGIES", "FINGERS"]

# MANO-16 joint indices of each finger's three joints.
FINGERS = {"index": (1, 2, 3), "middle": (4, 5, 6), "pinky": (7, 8, 9), "ring": (10, 11, 12), "thumb": (13, 14, 15)}
LONG = ("index", "middle", "ring", "pinky")
DIP_COUPLING = 0.67
# Angle vector: for each long finger (mcp_flex, mcp_abd, pip); thumb (cmc_opp, cmc_flex, mcp, ip).
LIMITS = {"mcp": (-0.35, 1.6), "abd": (-0.35, 0.35), "pip": (0.0, 1.85), "dip": (0.0, 1.4),
          "cmc_opp": (0.0, 1.1), "cmc_flex": (-0.3, 0.9), "t_mcp": (-0.1, 1.0), "t_ip": (-0.25, 1.35)}
# Synergies: long fingers (mcp, pip) per finger, spread (abduction scale), thumb (opp, cmc_flex, mcp, ip).
SYNERGIES = {
    "relax": dict(fingers=[(0.35, 0.45)] * 4, spread=0.1, thumb=(0.35, 0.2, 0.2, 0.25)),
    "flat": dict(fingers=[(0.0, 0.0)] * 4, spread=0.0, thumb=(0.0, 0.0, 0.0, 0.0)),
    "spread": dict(fingers=[(-0.15, 0.0)] * 4, spread=1.0, thumb=(0.0, -0.25, 0.0, -0.1)),
    "fist": dict(fingers=[(1.45, 1.7)] * 4, spread=0.0, thumb=(0.9, 0.5, 0.7, 0.9)),
    "point": dict(fingers=[(0.0, 0.0), (1.45, 1.7), (1.45, 1.7), (1.45, 1.7)], spread=0.0, thumb=(0.8, 0.45, 0.6, 0.7)),
    "pinch": dict(fingers=[(0.75, 0.9), (0.45, 0.5), (0.4, 0.45), (0.35, 0.4)], spread=0.1, thumb=(0.95, 0.4, 0.35, 0.45)),
    "grasp": dict(fingers=[(0.95, 1.05)] * 4, spread=0.1, thumb=(0.75, 0.35, 0.4, 0.45)),
    "ok": dict(fingers=[(0.85, 1.1), (0.1, 0.1), (0.15, 0.1), (0.2, 0.15)], spread=0.5, thumb=(0.95, 0.45, 0.4, 0.6)),
    "thumbs-up": dict(fingers=[(1.45, 1.7)] * 4, spread=0.0, thumb=(0.0, -0.2, 0.0, 0.0)),
}
ABD_SIGN = {"index": 1.0, "middle": 0.3, "ring": -0.5, "pinky": -1.0}
SPREAD_RAD = 0.3


def _smoothstep(t):
    return t * t * (3 - 2 * t)


class HandMotionGenerator:
    """Seeded generator of (rotmats (T, 16, 3, 3), wrist (T, 3)) sequences for a hand model.

    hand: a right-hand model with ``rest_joints`` (16, 3) in MANO order (``DefaultHandModel``);
    left hands are the mirror image of generated right hands (``refine.mirror_x``).
    """

    def __init__(self, hand, fps: float = 30.0, key_seconds=(0.25, 1.5), key_noise: float = 0.15,
                 max_wrist_turn: float = 1.2, wrist_range: float = 0.15, hold_prob: float = 0.15, wrist_base=None):
        self.fps, self.key_seconds, self.key_noise = fps, key_seconds, key_noise
        self.wrist_base = None if wrist_base is None else np.asarray(wrist_base, dtype=np.float64)
        self.max_wrist_turn, self.wrist_range, self.hold_prob = max_wrist_turn, wrist_range, hold_prob
        self.axes = self._joint_axes(hand.rest_joints.detach().double().cpu().numpy())

    @staticmethod
    def _joint_axes(J):
        """Flexion and abduction axes (rest-hand frame) of every joint, from the rest joints (16, 3)."""
        unit = lambda v: v / np.linalg.norm(v)
        d = unit(J[4] - J[0])                                         # long axis: wrist -> middle MCP
        t = J[13] - J[4]
        t = unit(t - d * (t @ d))                                     # towards the thumb, across the palm
        palmar = unit(np.cross(t, d))                                 # right hand: palm normal = t x d
        axes = {}
        for name, (a, b, c) in FINGERS.items():
            tip_dir = [unit(J[b] - J[a]), unit(J[c] - J[b]), unit(J[c] - J[b])]
            flex = [unit(np.cross(s, palmar)) for s in tip_dir]
            axes[name] = dict(flex=flex, abd=palmar)
        axes["thumb"]["opp"] = d
        return axes

    def palm_facing_camera(self) -> np.ndarray:
        """Wrist orientation (3, 3) that shows the palm to an OpenCV camera, fingers up in the image."""
        d, palmar = self.axes["thumb"]["opp"], self.axes["index"]["abd"]
        src = np.stack([d, palmar, np.cross(d, palmar)], 1)
        dst = np.stack([[0, -1.0, 0], [0, 0, -1.0], np.cross([0, -1.0, 0], [0, 0, -1.0])], 1)
        return dst @ src.T

    def _key_angles(self, rng):
        names = list(SYNERGIES)
        k = rng.integers(1, 3)
        picks = rng.choice(len(names), size=k, replace=False)
        w = rng.dirichlet(np.ones(k))
        fingers = sum(wi * np.asarray(SYNERGIES[names[p]]["fingers"]) for wi, p in zip(w, picks))
        spread = sum(wi * SYNERGIES[names[p]]["spread"] for wi, p in zip(w, picks))
        thumb = sum(wi * np.asarray(SYNERGIES[names[p]]["thumb"]) for wi, p in zip(w, picks))
        n = lambda *s: rng.normal(0.0, self.key_noise, s)
        out = {}
        for i, f in enumerate(LONG):
            mcp = np.clip(fingers[i, 0] + n(), *LIMITS["mcp"])
            pip = np.clip(fingers[i, 1] + n(), *LIMITS["pip"])
            abd = np.clip(spread * SPREAD_RAD * ABD_SIGN[f] + 0.5 * n(), *LIMITS["abd"])
            dip = np.clip(DIP_COUPLING * pip + 0.3 * n(), *LIMITS["dip"])
            out[f] = np.array([float(mcp), float(abd), float(pip), float(dip)])
        t = thumb + n(4)
        out["thumb"] = np.clip(t, [LIMITS[k][0] for k in ("cmc_opp", "cmc_flex", "t_mcp", "t_ip")],
                               [LIMITS[k][1] for k in ("cmc_opp", "cmc_flex", "t_mcp", "t_ip")])
        return out

    def _local_rotvecs(self, ang):
        """Angle dict -> local axis-angle (15, 3) for joints 1..15 (MANO order)."""
        rv = np.zeros((16, 3))
        for f in LONG:
            mcp, abd, pip, dip = ang[f]
            a, b, c = FINGERS[f]
            ax = self.axes[f]
            rv[a] = _compose(ax["flex"][0] * mcp, ax["abd"] * abd)
            rv[b] = ax["flex"][1] * pip
            rv[c] = ax["flex"][2] * dip
        opp, cflex, tmcp, tip = ang["thumb"]
        a, b, c = FINGERS["thumb"]
        ax = self.axes["thumb"]
        rv[a] = _compose(ax["opp"] * opp, ax["flex"][0] * cflex)
        rv[b] = ax["flex"][1] * tmcp
        rv[c] = ax["flex"][2] * tip
        return rv[1:]

    def sequence(self, num_frames: int, rng: np.random.Generator) -> tuple:
        """One sequence -> (rotmats (T, 16, 3, 3) float32, wrist (T, 3) float32 metres)."""
        T = int(num_frames)
        keys_t, keys_a, keys_w, keys_p = [0], [], [], []
        while keys_t[-1] < T:
            keys_t.append(keys_t[-1] + max(2, int(rng.uniform(*self.key_seconds) * self.fps)))
        n = len(keys_t)
        ang = self._key_angles(rng)
        w = _random_rotation(rng) if self.wrist_base is None else self.wrist_base
        for i in range(n):
            if i and rng.random() >= self.hold_prob:
                ang = self._key_angles(rng)
            keys_a.append(self._local_rotvecs(ang))
            if i or self.wrist_base is not None:
                axis = rng.normal(size=3)
                axis /= np.linalg.norm(axis)
                turn = _rv_to_R(axis * rng.uniform(0, self.max_wrist_turn))
                w = turn @ w if self.wrist_base is None else turn @ self.wrist_base
            keys_w.append(w)
            keys_p.append(rng.uniform(-self.wrist_range, self.wrist_range, 3))
        frames = np.arange(T)
        seg = np.clip(np.searchsorted(keys_t, frames, side="right") - 1, 0, n - 2)
        t0, t1 = np.asarray(keys_t)[seg], np.asarray(keys_t)[seg + 1]
        s = torch.from_numpy(_smoothstep((frames - t0) / (t1 - t0)))
        A, W, P = (torch.from_numpy(np.stack(k)) for k in (keys_a, keys_w, keys_p))
        seg = torch.from_numpy(seg)
        local = rotvec_to_rotmat(A[seg] * (1 - s)[:, None, None] + A[seg + 1] * s[:, None, None])   # (T, 15, 3, 3)
        wrist = slerp_rotmat(W[seg], W[seg + 1], s)                                                 # (T, 3, 3)
        pos = P[seg] * (1 - s)[:, None] + P[seg + 1] * s[:, None]
        R = torch.cat([wrist[:, None], local], dim=1)
        return R.float().numpy(), pos.float().numpy()

    def build_cache(self, path, num_clips: int, clip_frames: int, seed: int) -> None:
        """Write a cache split (the ``MotionCache`` format: rot6d (F, 16, 6), transl (F, 3), clips)."""
        from .rotations import rotmat_to_6d
        rng = np.random.default_rng(seed)
        rots, trs = [], []
        for _ in range(num_clips):
            R, p = self.sequence(clip_frames, rng)
            rots.append(rotmat_to_6d(torch.from_numpy(R)).numpy())
            trs.append(p)
        n = np.full(num_clips, clip_frames, dtype=np.int64)
        np.savez_compressed(path, rot6d=np.concatenate(rots).astype(np.float32),
                            transl=np.concatenate(trs).astype(np.float32),
                            clip_start=np.concatenate([[0], np.cumsum(n)[:-1]]), clip_len=n,
                            clip_name=np.array([f"hand-{seed}-{i:04d}" for i in range(num_clips)]))


def _rv_to_R(rv):
    return rotvec_to_rotmat(torch.as_tensor(rv, dtype=torch.float64)).numpy()


def _compose(a, b):
    """Axis-angle of R(a) @ R(b) (a, b: (3,))."""
    from .rotations import rotmat_to_rotvec
    return rotmat_to_rotvec(torch.from_numpy(_rv_to_R(a) @ _rv_to_R(b))).numpy()


def _random_rotation(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def finger_angles(rotmats, generator: HandMotionGenerator) -> dict:
    """Per-finger flexion angles (degrees) of hand poses, the joint-space a robot hand takes.

    rotmats (..., 16, 3, 3) MANO-order local rotations (right-hand frame; mirror left hands
    first). Returns {finger: (..., 3)}: index/middle/ring/pinky -> (MCP, PIP, DIP) flexion,
    thumb -> (CMC opposition, MCP, IP); positive = closing the hand. Each angle is the
    component of the joint's axis-angle along that joint's axis on the rest hand.
    """
    from .rotations import rotmat_to_rotvec
    rv = rotmat_to_rotvec(torch.as_tensor(rotmats, dtype=torch.float64))
    out = {}
    for name, joints in FINGERS.items():
        ax = generator.axes[name]
        axes = [ax["opp"], ax["flex"][1], ax["flex"][2]] if name == "thumb" else ax["flex"]
        out[name] = torch.stack([(rv[..., j, :] * torch.as_tensor(a)).sum(-1) for j, a in zip(joints, axes)],
                                -1).rad2deg().numpy()
    return out
