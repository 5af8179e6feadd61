"""Acclaim ASF skeleton + AMC motion reader.

Each ASF bone declares its own local axes (``axis ax ay az XYZ``) and degrees
of freedom. A bone's world rotation is ``G_parent @ C @ M @ C^-1`` with ``C``
from the axis line and ``M`` from the AMC values (both extrinsic in the listed
order). The joint of a bone is its head (the parent bone's tail). Lengths are
converted to metres with ``0.0254 / length_unit`` (ASF lengths are inches
divided by the ``:units length`` value).
"""
from __future__ import annotations

import os

import numpy as np
import roma
import torch

from .skeleton_motion import MocapFormatError, SkeletonMotion

__all__ = ["read_asf", "read_amc"]


def _euler(order: str, angles: np.ndarray) -> np.ndarray:
    """Extrinsic rotations in the listed axis order; angles (..., k) radians -> (..., 3, 3)."""
    if not order:
        return np.broadcast_to(np.eye(3), angles.shape[:-1] + (3, 3)).copy()
    return roma.euler_to_rotmat(order.lower(), torch.as_tensor(angles, dtype=torch.float64)).numpy()


def read_asf(path) -> dict:
    """Parse an ASF file into a dict: bones (name -> fields), hierarchy, root info, units."""
    path = os.fspath(path)
    bones, hierarchy, root = {}, {}, {"order": [], "axis": "XYZ", "position": np.zeros(3), "orientation": np.zeros(3)}
    units = {"length": 1.0, "angle": "deg"}
    section, bone = None, None
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        lines = list(enumerate(f, 1))
    i = 0
    try:
        while i < len(lines):
            n, raw = lines[i]
            i += 1
            tok = raw.split()
            if not tok or tok[0].startswith("#"):
                continue
            if tok[0].startswith(":"):
                section = tok[0][1:].lower()
                continue
            if section == "units":
                if tok[0] == "length":
                    units["length"] = float(tok[1])
                elif tok[0] == "angle":
                    units["angle"] = tok[1].lower()
            elif section == "root":
                if tok[0] == "order":
                    root["order"] = [t.upper() for t in tok[1:]]
                elif tok[0] == "axis":
                    root["axis"] = tok[1].upper()
                elif tok[0] in ("position", "orientation"):
                    root[tok[0]] = np.array([float(x) for x in tok[1:4]])
            elif section == "bonedata":
                if tok[0] == "begin":
                    bone = {"dof": [], "axis": np.zeros(3), "axis_order": "XYZ"}
                elif tok[0] == "end":
                    if "name" not in bone or "direction" not in bone or "length" not in bone:
                        raise MocapFormatError(path, "bone without name, direction or length", n)
                    bones[bone["name"]] = bone
                    bone = None
                elif bone is not None:
                    if tok[0] == "name":
                        bone["name"] = tok[1]
                    elif tok[0] == "direction":
                        bone["direction"] = np.array([float(x) for x in tok[1:4]])
                    elif tok[0] == "length":
                        bone["length"] = float(tok[1])
                    elif tok[0] == "axis":
                        bone["axis"] = np.array([float(x) for x in tok[1:4]])
                        bone["axis_order"] = tok[4].upper() if len(tok) > 4 else "XYZ"
                    elif tok[0] == "dof":
                        bone["dof"] = [t.lower() for t in tok[1:]]
            elif section == "hierarchy":
                if tok[0] in ("begin", "end"):
                    continue
                for child in tok[1:]:
                    hierarchy[child] = tok[0]
    except (ValueError, IndexError) as e:
        raise MocapFormatError(path, f"malformed ASF ({e})", n) from None
    if not bones:
        raise MocapFormatError(path, "no :bonedata in ASF")
    for child, parent in hierarchy.items():
        if child not in bones or (parent != "root" and parent not in bones):
            raise MocapFormatError(path, f"hierarchy names an unknown bone ({parent} -> {child})")
    return {"bones": bones, "hierarchy": hierarchy, "root": root, "units": units, "path": path}


def read_amc(path, asf, scale: float | None = None, fps: float = 120.0) -> SkeletonMotion:
    """Read an AMC motion for a parsed ASF (see :func:`read_asf`, or pass the ASF path).

    Returns a :class:`SkeletonMotion` whose joints are ``root`` and every bone
    (at its head), Y up, metres.
    """
    if not isinstance(asf, dict):
        asf = read_asf(asf)
    path = os.fspath(path)
    bones, hierarchy = asf["bones"], asf["hierarchy"]
    deg = asf["units"]["angle"].startswith("deg")
    if scale is None:
        scale = 0.0254 / asf["units"]["length"]
    # Order joints so parents come first.
    names, parents = ["root"], [-1]
    frontier = ["root"]
    while frontier:
        nxt = []
        for p in frontier:
            for c, q in hierarchy.items():
                if q == p:
                    names.append(c)
                    parents.append(names.index(p))
                    nxt.append(c)
        frontier = nxt
    frames, current, n = [], None, 0
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for n, raw in enumerate(f, 1):
            tok = raw.split()
            if not tok or tok[0].startswith("#") or tok[0].startswith(":"):
                continue
            if len(tok) == 1 and tok[0].isdigit():
                current = {}
                frames.append(current)
                continue
            if current is None:
                raise MocapFormatError(path, f"values before the first frame number: {raw.strip()!r}", n)
            try:
                vals = np.array([float(x) for x in tok[1:]])
            except ValueError:
                raise MocapFormatError(path, f"expected numbers after {tok[0]!r}", n) from None
            if not np.all(np.isfinite(vals)):
                raise MocapFormatError(path, f"NaN or infinite values for {tok[0]!r}", n)
            name = tok[0]
            expected = len(asf["root"]["order"]) if name == "root" else len(bones[name]["dof"]) if name in bones else None
            if expected is None:
                raise MocapFormatError(path, f"unknown bone {name!r}", n)
            if len(vals) != expected:
                raise MocapFormatError(path, f"{name!r} has {len(vals)} values, expected {expected} (truncated?)", n)
            current[name] = vals
    if not frames:
        raise MocapFormatError(path, "no frames")
    # A truncated last frame lacks some bones: drop it only if it is the last one.
    full = len(frames[0])
    if len(frames[-1]) < full:
        raise MocapFormatError(path, f"last frame has {len(frames[-1])} of {full} bones (truncated file)", n)
    T, J = len(frames), len(names)
    to_rad = np.pi / 180.0 if deg else 1.0

    root = asf["root"]
    order = root["order"]
    rvals = np.stack([fr.get("root", np.zeros(len(order))) for fr in frames])
    trans = np.zeros((T, 3))
    rot_axes, rot_cols = "", []
    for k, ch in enumerate(order):
        if ch.startswith("T"):
            trans[:, "XYZ".index(ch[1])] = rvals[:, k]
        else:
            rot_axes += ch[1]
            rot_cols.append(k)
    C_root = _euler(root["axis"], root["orientation"][None] * to_rad)[0]
    M_root = _euler(rot_axes, rvals[:, rot_cols] * to_rad)
    G = np.empty((T, J, 3, 3))
    P = np.empty((T, J, 3))
    G[:, 0] = C_root @ M_root @ C_root.T
    P[:, 0] = (trans + root["position"]) * scale
    rest = np.zeros((J, 3))
    rest[0] = root["position"] * scale
    tails_rest, tails = {0: rest[0]}, {0: P[:, 0]}
    for j in range(1, J):
        b = bones[names[j]]
        p = parents[j]
        C = _euler(b["axis_order"], b["axis"][None] * to_rad)[0]
        dofs = b["dof"]
        if dofs:
            vals = np.stack([fr.get(names[j], np.zeros(len(dofs))) for fr in frames]) * to_rad
            M = _euler("".join(d[1] for d in dofs), vals)
        else:
            M = np.broadcast_to(np.eye(3), (T, 3, 3))
        G[:, j] = G[:, p] @ (C @ M @ C.T)
        P[:, j] = tails[p]
        rest[j] = tails_rest[p]
        vec = b["direction"] * b["length"] * scale
        tails[j] = P[:, j] + G[:, j] @ vec
        tails_rest[j] = rest[j] + vec
    return SkeletonMotion(names, parents, G, P, rest, fps, source=path)
