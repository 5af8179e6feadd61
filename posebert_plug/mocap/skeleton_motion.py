"""A source skeleton's motion in world coordinates, whatever file it came from.

Every reader (BVH, ASF/AMC) produces a :class:`SkeletonMotion`; retargeting
reads only this, so it works for any hierarchy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class MocapFormatError(ValueError):
    """A motion file is malformed. The message names the file and, where known, the line."""

    def __init__(self, path, message, line=None):
        where = f"{path}" + (f", line {line}" if line is not None else "")
        super().__init__(f"{where}: {message}")
        self.path, self.line = path, line


@dataclass
class SkeletonMotion:
    """Motion of an arbitrary joint tree.

    names: J joint names; parents: J parent indices (-1 root, parents before children).
    global_rotmats: (T, J, 3, 3) rotation of each joint relative to the source's
        rest (zero-channel) pose, in world axes: a rest-pose bone vector ``v``
        (world axes) is posed as ``global_rotmats[t, j] @ v``.
    positions: (T, J, 3) joint (pivot) positions in world axes, metres.
    rest_positions: (J, 3) joint positions of the rest pose, metres.
    fps: frames per second. up: the world up axis is +Y for every reader.
    source: a short description, e.g. the path.
    """

    names: list
    parents: list
    global_rotmats: np.ndarray
    positions: np.ndarray
    rest_positions: np.ndarray
    fps: float
    source: str = ""

    @property
    def num_frames(self) -> int:
        return int(self.positions.shape[0])

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"{self.source}: no joint {name!r}; joints are: {', '.join(self.names)}") from None
