"""BVH reading and writing.

Reads any hierarchy and any channel order, with or without per-joint position
channels. Rotation channels are intrinsic Euler angles in degrees applied in
the order they are listed (``R = R_c1 @ R_c2 @ R_c3``). The file's length unit
is multiplied by ``scale`` to give metres.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..rotations import euler_to_rotmat
from .skeleton_motion import MocapFormatError, SkeletonMotion

__all__ = ["read_bvh", "write_bvh", "BVHHierarchy"]


@dataclass
class BVHHierarchy:
    names: list
    parents: list
    offsets: np.ndarray   # (J, 3) file units
    channels: list        # per joint, list of channel names e.g. ["Xposition", "Zrotation", ...]


def _tokens(path):
    """Yield (line_number, tokens) of non-empty lines."""
    opener = open(path, "r", encoding="utf-8", errors="replace") if not isinstance(path, io.IOBase) else path
    with opener as f:
        for n, line in enumerate(f, 1):
            tok = line.split()
            if tok:
                yield n, tok


def read_bvh(path, scale: float | None = None) -> SkeletonMotion:
    """Read a BVH file into a :class:`SkeletonMotion` (world Y up, metres).

    scale: metres per file unit; ``None`` guesses from the rest height
        (centimetres when the skeleton is taller than 10 units, else metres).
    Raises :class:`MocapFormatError` naming the file and line on any problem.
    """
    path = os.fspath(path)
    it = _tokens(path)
    names, parents, offsets, channels = [], [], [], []
    stack, n = [], 0
    try:
        n, tok = next(it)
        if tok[0].upper() != "HIERARCHY":
            raise MocapFormatError(path, f"expected HIERARCHY, got {tok[0]!r}", n)
        for n, tok in it:
            key = tok[0].upper()
            if key in ("ROOT", "JOINT"):
                if len(tok) < 2:
                    raise MocapFormatError(path, f"{key} without a name", n)
                names.append(" ".join(tok[1:]))
                parents.append(stack[-1] if stack else -1)
                offsets.append(None)
                channels.append([])
                stack.append(len(names) - 1)
            elif key == "END":
                stack.append(None)
            elif key == "OFFSET":
                vals = _floats(tok[1:4], path, n)
                if stack and stack[-1] is not None:
                    offsets[stack[-1]] = vals
            elif key == "CHANNELS":
                cnt = int(_floats(tok[1:2], path, n)[0])
                chans = tok[2:2 + cnt]
                if len(chans) != cnt:
                    raise MocapFormatError(path, f"CHANNELS declares {cnt} channels, lists {len(chans)}", n)
                bad = [c for c in chans if c.lower()[1:] not in ("position", "rotation") or c[0].upper() not in "XYZ"]
                if bad:
                    raise MocapFormatError(path, f"unknown channel(s) {bad}", n)
                channels[stack[-1]] = chans
            elif key == "{":
                continue
            elif key == "}":
                if not stack:
                    raise MocapFormatError(path, "unbalanced '}'", n)
                stack.pop()
            elif key == "MOTION":
                break
            else:
                raise MocapFormatError(path, f"unexpected token {tok[0]!r} in HIERARCHY", n)
        else:
            raise MocapFormatError(path, "file ends before MOTION (truncated?)", n)
        if not names:
            raise MocapFormatError(path, "no joints in HIERARCHY", n)
        if any(o is None for o in offsets):
            raise MocapFormatError(path, "a joint has no OFFSET", n)
        n, tok = next(it)
        if tok[0].lower() != "frames:":
            raise MocapFormatError(path, f"expected 'Frames:', got {' '.join(tok)!r}", n)
        num_frames = int(tok[1])
        n, tok = next(it)
        if " ".join(tok[:2]).lower() != "frame time:":
            raise MocapFormatError(path, f"expected 'Frame Time:', got {' '.join(tok)!r}", n)
        frame_time = float(tok[2])
        if not frame_time > 0:
            raise MocapFormatError(path, f"frame time must be positive, got {frame_time}", n)
    except StopIteration:
        raise MocapFormatError(path, "file ends inside the header (truncated?)", n) from None
    except (IndexError, ValueError) as e:
        if isinstance(e, MocapFormatError):
            raise
        raise MocapFormatError(path, f"malformed header: {e}", n) from None

    width = sum(len(c) for c in channels)
    data = np.empty((num_frames, width), dtype=np.float64)
    t = 0
    for n, tok in it:
        if t >= num_frames:
            raise MocapFormatError(path, f"more motion lines than the {num_frames} frames declared", n)
        if len(tok) != width:
            raise MocapFormatError(path, f"frame {t} has {len(tok)} values, expected {width} (truncated?)", n)
        row = _floats(tok, path, n)
        if not np.all(np.isfinite(row)):
            raise MocapFormatError(path, f"frame {t} has NaN or infinite channel values", n)
        data[t] = row
        t += 1
    if t < num_frames:
        raise MocapFormatError(path, f"only {t} of {num_frames} declared frames present (truncated?)", n)

    hier = BVHHierarchy(names, parents, np.asarray(offsets, dtype=np.float64), channels)
    fps = 1.0 / frame_time
    if abs(fps - round(fps)) < 1e-3 * fps:  # frame times are printed rounded (0.0333333)
        fps = float(round(fps))
    return _to_motion(hier, data, fps, scale, path)


def _floats(tokens, path, n):
    try:
        return np.array([float(x) for x in tokens], dtype=np.float64)
    except ValueError:
        raise MocapFormatError(path, f"expected numbers, got {' '.join(tokens)!r}", n) from None


def _to_motion(h: BVHHierarchy, data: np.ndarray, fps: float, scale, path) -> SkeletonMotion:
    J, T = len(h.names), data.shape[0]
    local_pos = np.broadcast_to(h.offsets, (T, J, 3)).copy()
    local_rot = np.broadcast_to(np.eye(3), (T, J, 3, 3)).copy()
    col = 0
    for j, chans in enumerate(h.channels):
        rot_axes, rot_cols = "", []
        for c in chans:
            axis, kind = c[0].upper(), c[1:].lower()
            if kind == "position":
                local_pos[:, j, "XYZ".index(axis)] = data[:, col]
            else:
                rot_axes += axis
                rot_cols.append(col)
            col += 1
        if rot_axes:
            angles = torch.as_tensor(data[:, rot_cols])
            if len(rot_axes) < 3:  # pad to a full triple with zero angles
                missing = [a for a in "XYZ" if a not in rot_axes]
                rot_axes += "".join(missing[: 3 - len(rot_axes)])
                angles = torch.cat([angles, torch.zeros(T, 3 - angles.shape[1], dtype=angles.dtype)], 1)
            local_rot[:, j] = euler_to_rotmat(rot_axes, angles, degrees=True).numpy()
    rest = np.zeros((J, 3))
    for j, p in enumerate(h.parents):
        rest[j] = h.offsets[j] + (rest[p] if p >= 0 else 0)
    if scale is None:
        height = rest[:, 1].max() - rest[:, 1].min()
        scale = 0.01 if height > 10 else 1.0
    G = np.empty_like(local_rot)
    P = np.empty_like(local_pos)
    for j, p in enumerate(h.parents):
        if p < 0:
            G[:, j] = local_rot[:, j]
            P[:, j] = local_pos[:, j]
        else:
            G[:, j] = G[:, p] @ local_rot[:, j]
            P[:, j] = P[:, p] + np.einsum("tab,tb->ta", G[:, p], local_pos[:, j])
    return SkeletonMotion(list(h.names), list(h.parents), G, P * scale, rest * scale, fps, source=str(path))


def write_bvh(path, names, parents, rest_joints, rotmats, root_positions, fps: float = 30.0,
              order: str = "ZXY") -> None:
    """Write a BVH file (metres, world Y up).

    names: J joint names; parents: J parents (-1 root, parents first);
    rest_joints: (J, 3) rest-pose joint positions, metres;
    rotmats: (T, J, 3, 3) local rotations; root_positions: (T, 3) root joint position, metres.
    Every joint gets three rotation channels in ``order``; the root also gets positions.
    Leaf joints get an ``End Site`` with a zero offset.
    """
    rest = np.asarray(rest_joints, dtype=np.float64)
    rot = torch.as_tensor(np.asarray(rotmats, dtype=np.float64))
    import roma
    euler = roma.rotmat_to_euler(order, rot, degrees=True).numpy()  # (T, J, 3)
    root = np.asarray(root_positions, dtype=np.float64)
    children = {j: [c for c, p in enumerate(parents) if p == j] for j in range(len(names))}
    lines = ["HIERARCHY"]

    def emit(j, depth):
        pad = "  " * depth
        p = parents[j]
        off = rest[j] - (rest[p] if p >= 0 else 0) if p >= 0 else np.zeros(3)
        lines.append(f"{pad}{'ROOT' if p < 0 else 'JOINT'} {names[j]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {off[0]:.9f} {off[1]:.9f} {off[2]:.9f}")
        chans = " ".join(f"{a}rotation" for a in order)
        if p < 0:
            lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition {chans}")
        else:
            lines.append(f"{pad}  CHANNELS 3 {chans}")
        if children[j]:
            for c in children[j]:
                emit(c, depth + 1)
        else:
            lines.append(f"{pad}  End Site")
            lines.append(f"{pad}  {{")
            lines.append(f"{pad}    OFFSET 0 0 0")
            lines.append(f"{pad}  }}")
        lines.append(f"{pad}}}")

    order_of_joints = []

    def collect(j):
        order_of_joints.append(j)
        for c in children[j]:
            collect(c)

    r = parents.index(-1)
    emit(r, 0)
    collect(r)
    T = rot.shape[0]
    lines += ["MOTION", f"Frames: {T}", f"Frame Time: {1.0 / fps:.8f}"]
    for t in range(T):
        vals = list(root[t])
        for j in order_of_joints:
            vals.extend(euler[t, j])
        lines.append(" ".join(f"{v:.8f}" for v in vals))
    tmp = f"{os.fspath(path)}.part"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
