"""Registry of keypoint layouts: joint names, parents, left/right flips, mappings.

Every layout names its joints in one shared anatomical vocabulary
(``left_shoulder``, ``right_knee``, ...), so that a mapping between two layouts
is the intersection of their names. Shared names mean the same anatomical
joint, not identical positions: an H36M hip centre and an SMPL hip centre are a
few centimetres apart.

Sides are the person's own: ``left_*`` is the subject's left (+X in the SMPL
body frame, Y up, facing +Z).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Skeleton", "get_skeleton", "available_skeletons", "mapping", "register", "to_coco17", "layout_for_count"]


@dataclass(frozen=True)
class Skeleton:
    """A keypoint layout.

    name: registry key, e.g. ``"smpl24"``.
    joints: K joint names in the shared vocabulary, in the layout's order.
    parents: K parent indices, -1 for the root (a tree used for drawing and for
        bone-length normalisation; for layouts without a kinematic tree, e.g.
        COCO, a sensible drawing tree).
    root: index of the root joint.
    """

    name: str
    joints: tuple
    parents: tuple
    aliases: tuple = field(default=())

    def __post_init__(self):
        if len(self.joints) != len(self.parents):
            raise ValueError(f"{self.name}: {len(self.joints)} joints but {len(self.parents)} parents")
        if len(set(self.joints)) != len(self.joints):
            raise ValueError(f"{self.name}: duplicate joint names")
        if sum(p == -1 for p in self.parents) != 1:
            raise ValueError(f"{self.name}: a skeleton needs exactly one root (parent -1)")

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def root(self) -> int:
        return self.parents.index(-1)

    def index(self, joint: str) -> int:
        try:
            return self.joints.index(joint)
        except ValueError:
            raise KeyError(f"layout {self.name!r} has no joint {joint!r}; joints: {', '.join(self.joints)}") from None

    @property
    def flip_map(self) -> np.ndarray:
        """(K,) index of each joint's mirror (itself for central joints)."""
        out = []
        for j in self.joints:
            m = _mirror_name(j)
            out.append(self.joints.index(m) if m in self.joints else self.joints.index(j))
        return np.asarray(out, dtype=np.int64)

    @property
    def bones(self) -> list:
        """(child, parent) pairs, excluding the root."""
        return [(c, p) for c, p in enumerate(self.parents) if p >= 0]

    @property
    def traversal(self) -> np.ndarray:
        """Joint indices in breadth-first order from the root (parents before children)."""
        order, frontier = [], [self.root]
        while frontier:
            order.extend(frontier)
            frontier = [c for p in frontier for c, q in enumerate(self.parents) if q == p]
        return np.asarray(order, dtype=np.int64)


def _mirror_name(name: str) -> str:
    for a, b in (("left_", "right_"), ("right_", "left_"), ("_left", "_right"), ("_right", "_left")):
        if a in name:
            return name.replace(a, b)
    return name


_REGISTRY: dict = {}


def register(skeleton: Skeleton) -> Skeleton:
    """Add a layout to the registry (users can register their own)."""
    for key in (skeleton.name, *skeleton.aliases):
        _REGISTRY[_key(key)] = skeleton
    return skeleton


def _key(name) -> str:
    """Registry key: lower case, ``-`` and ``_`` ignored (``"H36M-17"`` is ``"h36m17"``)."""
    return str(name).lower().replace("-", "").replace("_", "")


def available_skeletons() -> list:
    return sorted({s.name for s in _REGISTRY.values()})


def get_skeleton(name) -> Skeleton:
    """Look a layout up by name (case-insensitive, ``-``/``_`` ignored): ``"coco17"``, ``"H36M-17"``."""
    if isinstance(name, Skeleton):
        return name
    key = _key(name)
    if key not in _REGISTRY:
        raise KeyError(f"unknown keypoint layout {name!r}; known layouts: {', '.join(available_skeletons())}")
    return _REGISTRY[key]


def mapping(src, dst) -> tuple:
    """Indices of the joints two layouts share.

    Returns (src_idx, dst_idx), two int arrays of equal length such that
    ``dst_points[..., dst_idx, :] = src_points[..., src_idx, :]``.
    """
    s, d = get_skeleton(src), get_skeleton(dst)
    pairs = [(s.joints.index(n), j) for j, n in enumerate(d.joints) if n in s.joints]
    if not pairs:
        raise ValueError(f"layouts {s.name!r} and {d.name!r} share no joints")
    a, b = zip(*pairs)
    return np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)


SMPL24 = register(Skeleton(
    "smpl24",
    ("pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
     "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
     "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
     "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand"),
    (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21),
    aliases=("smpl",),
))

HYBRIK29 = register(Skeleton(
    "hybrik29",
    SMPL24.joints + ("head_top", "left_middle_tip", "right_middle_tip", "left_bigtoe", "right_bigtoe"),
    SMPL24.parents + (15, 22, 23, 10, 11),
    aliases=("hybrik",),
))

# H36M-17 as SMPL/HybrIK-family code writes it. Index 9 is the neck/nose point and
# 10 the head; both differ from SMPL's neck/head, hence their own names.
H36M17 = register(Skeleton(
    "h36m17",
    ("pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
     "spine", "thorax", "neck_nose", "head_h36m", "left_shoulder", "left_elbow", "left_wrist",
     "right_shoulder", "right_elbow", "right_wrist"),
    (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15),
    aliases=("h36m",),
))

COCO17 = register(Skeleton(
    "coco17",
    ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
     "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
     "left_knee", "right_knee", "left_ankle", "right_ankle"),
    (-1, 0, 0, 1, 2, 0, 0, 5, 6, 7, 8, 5, 6, 11, 12, 13, 14),
    aliases=("coco",),
))

MEDIAPIPE33 = register(Skeleton(
    "mediapipe33",
    ("nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
     "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right",
     "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
     "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb",
     "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
     "left_heel", "right_heel", "left_foot_index", "right_foot_index"),
    (11, 0, 0, 0, 0, 0, 0, 3, 6, 0, 0, 23, 24, 11, 12, 13, 14, 15, 16, 15, 16, 15, 16,
     -1, 23, 23, 24, 25, 26, 27, 28, 27, 28),
    aliases=("mediapipe", "blazepose33"),
))

_FINGERS = ("thumb", "index", "middle", "ring", "pinky")
HAND21 = register(Skeleton(
    "hand21",
    ("wrist",) + tuple(f"{f}_{p}" for f in _FINGERS for p in
                       (("cmc", "mcp", "ip", "tip") if f == "thumb" else ("mcp", "pip", "dip", "tip"))),
    (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19),
    aliases=("openpose_hand", "hand"),
))

MANO16 = register(Skeleton(
    "mano16",
    ("wrist", "index_mcp", "index_pip", "index_dip", "middle_mcp", "middle_pip", "middle_dip",
     "pinky_mcp", "pinky_pip", "pinky_dip", "ring_mcp", "ring_pip", "ring_dip",
     "thumb_cmc", "thumb_mcp", "thumb_ip"),
    (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14),
    aliases=("mano",),
))

# The fixed permutation of the estimator-formats doc: MANO 16 joints + 5 tips
# (thumb, index, middle, ring, pinky) -> OpenPose Hand-21.
MANO21_TO_OPENPOSE = np.array([0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20])

# Joints that define a body's canonical frame (spine -> +Y, shoulders -> +X).
def canonical_frame_joints(layout) -> dict:
    """Indices used to build the canonical frame of a layout's 3D keypoints.

    Body: ``origin`` (hips), ``up`` (shoulders) and ``side_pos``/``side_neg``
    (left/right shoulders). Hand: wrist -> middle MCP is up, index MCP -> pinky
    MCP the side axis. Each value is a list of indices averaged together.
    """
    s = get_skeleton(layout)
    if "middle_mcp" in s.joints:
        return {"origin": [s.index("wrist")], "up": [s.index("middle_mcp")],
                "side_pos": [s.index("index_mcp")], "side_neg": [s.index("pinky_mcp")]}
    try:
        hips = [s.index("left_hip"), s.index("right_hip")]
        shoulders = [s.index("left_shoulder"), s.index("right_shoulder")]
    except KeyError:
        raise KeyError(f"layout {s.name!r} lacks hips or shoulders: no canonical frame") from None
    return {"origin": hips, "up": shoulders, "side_pos": [shoulders[0]], "side_neg": [shoulders[1]]}


# ---- 2D layouts of other estimators, each mapped to COCO-17 by its joint names ----------------------

# OpenPose BODY_25 (output doc, doc/02_output.md): 8 is the hip centre, 19-24 the feet.
BODY25 = register(Skeleton(
    "body25",
    ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
     "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
     "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe", "left_heel",
     "right_big_toe", "right_small_toe", "right_heel"),
    (1, 8, 1, 2, 3, 1, 5, 6, -1, 8, 9, 10, 8, 12, 13, 0, 0, 15, 16, 14, 14, 14, 11, 11, 11),
    aliases=("openpose", "openpose_body25"),
))

# Halpe-26 (AlphaPose's halpe_26 models): COCO-17 first, then head top, neck, hip centre and the feet.
HALPE26 = register(Skeleton(
    "halpe26",
    COCO17.joints + ("head_top", "neck", "mid_hip", "left_big_toe", "right_big_toe", "left_small_toe",
                     "right_small_toe", "left_heel", "right_heel"),
    (18, 0, 0, 1, 2, 18, 18, 5, 6, 7, 8, 19, 19, 11, 12, 13, 14, 0, 19, -1, 15, 16, 15, 16, 15, 16),
    aliases=("halpe",),
))


def _wholebody133() -> Skeleton:
    """COCO-WholeBody-133 (mmpose/rtmlib wholebody models): COCO-17 body, 6 foot points, 68 face
    points, then the left and the right hand in hand-21 order."""
    feet = ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel")
    face = tuple(f"face_{i}" for i in range(68))
    hands = tuple(f"{s}_hand_{j}" for s in ("left", "right") for j in HAND21.joints)
    parents = list(COCO17.parents) + [15, 15, 15, 16, 16, 16] + [0] * 68
    for wrist in (COCO17.index("left_wrist"), COCO17.index("right_wrist")):
        base = len(parents)
        parents += [wrist if p == -1 else base + p for p in HAND21.parents]
    return Skeleton("coco_wholebody133", COCO17.joints + feet + face + hands, tuple(parents),
                    aliases=("wholebody", "wholebody133", "cocowholebody"))


WHOLEBODY133 = register(_wholebody133())


def to_coco17(layout) -> np.ndarray:
    """(17,) indices into ``layout`` of the COCO-17 joints, in COCO order (BODY_25, Halpe-26,
    COCO-WholeBody-133, ... -> COCO-17); raises ValueError when the layout lacks one of them."""
    src, dst = mapping(layout, "coco17")
    if len(dst) != COCO17.num_joints:
        missing = sorted(set(COCO17.joints) - set(get_skeleton(layout).joints))
        raise ValueError(f"layout {get_skeleton(layout).name!r} lacks COCO-17 joints {missing}")
    out = np.empty(COCO17.num_joints, np.int64)
    out[dst] = src
    return out


def layout_for_count(count: int, candidates=("coco17", "halpe26", "coco_wholebody133", "body25")) -> str:
    """The 2D layout with ``count`` keypoints among ``candidates`` (e.g. 17 -> coco17, 26 -> halpe26)."""
    for name in candidates:
        if get_skeleton(name).num_joints == count:
            return get_skeleton(name).name
    raise ValueError(f"no known layout has {count} keypoints (known: " +
                     ", ".join(f"{get_skeleton(n).name} {get_skeleton(n).num_joints}" for n in candidates) + ")")
