"""Presets: which input a model reads, how it is built, and the shipped checkpoints.

Every preset outputs SMPL-24 local rotations (root in the camera frame) and the
root position (x2d, y2d, nearness) in the canonical camera (``camera.py``).

| preset | input per frame | size |
|---|---|---|
| ``smpl`` | 24 x 6D rotations + normalised 2D of the 24 projected joints | 192 |
| ``kp3d-h36m17`` | canonicalised bone-normalised 3D (3K) + 6D of the frame + 2D (2K) | 91 |
| ``kp3d-mediapipe33`` | same for MediaPipe-33 | 171 |
| ``kp2d-coco17`` | normalised 2D (2K) + confidences (K) | 51 |
| ``kp3d-hand21`` | same for the 21 OpenPose hand keypoints -> MANO-16 rotations + wrist | 111 |

Hand presets output MANO-16 local rotations (wrist in the camera frame) and the
wrist position; they train on generated hand motion (``hand_motion.py``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import ClassVar
from importlib import resources

import numpy as np
import torch

from . import features, synth
from .camera import project, transl_to_param
from .model import PoseBERT
from .rotations import rotmat_to_6d, rotvec_to_rotmat, sixd_to_rotmat

__all__ = ["Preset", "PRESETS", "available_presets", "get_preset", "load_model", "save_checkpoint",
           "build_training_batch"]

CHECKPOINT_DIR = "checkpoints"
TRAIN_PITCH = (-0.1, 0.6)  # camera tilt range seen in training (radians, positive = looking down)
MODEL_SIZES = {"cpu": dict(dim=256, depth=4, heads=8, mlp_dim=512),
               "paper": dict(dim=512, depth=4, heads=8, mlp_dim=1024)}


@dataclass(frozen=True)
class Preset:
    """A preset owns everything about one kind of model input: its size and model arguments, how a
    track is encoded into it (:meth:`encode`), how training inputs are synthesised from mocap
    (:meth:`training_inputs`) and which body its output drives. One subclass per kind of input
    (:class:`SmplPreset`, :class:`Kp3dPreset`, :class:`Kp2dPreset`); a preset of an existing kind is
    one line in :data:`PRESETS`.

    name: the preset's name; layout: its input keypoint layout; body: ``"body"`` (SMPL-24 output)
    or ``"hand"`` (MANO-16 output).
    """

    name: str
    layout: str        # input keypoint layout
    description: str = ""
    body: str = "body"  # "body" (SMPL-24 output) | "hand" (MANO-16 output)
    kind: ClassVar[str] = ""   # "smpl" | "kp3d" | "kp2d"

    @property
    def num_joints(self) -> int:
        return 16 if self.body == "hand" else 24

    @property
    def loss_layout(self) -> str:
        """Keypoints the loss and the validation metrics are computed on."""
        return "hand21" if self.body == "hand" else "smpl24"

    def make_body(self):
        """The free model that turns this preset's output into joints and meshes."""
        if self.body == "hand":
            from .hand_model import DefaultHandModel
            return DefaultHandModel("right")
        from .body_model import DefaultBodyModel
        return DefaultBodyModel()

    @property
    def placement(self) -> dict:
        """Camera placement of training sequences (``synth.place_in_camera`` keywords)."""
        if self.body == "hand":   # a hand 0.25-1.2 m from the camera, anywhere in view
            return dict(depth=(0.25, 1.2), u_range=(-0.6, 0.6), v_range=(-0.5, 0.5), min_depth=0.15)
        return dict(pitch=TRAIN_PITCH)

    @property
    def num_keypoints(self) -> int:
        from .skeletons import get_skeleton
        return get_skeleton(self.layout).num_joints

    @property
    def in_dim(self) -> int:
        """Input features per frame."""
        raise NotImplementedError

    def model_kwargs(self, size: str = "cpu") -> dict:
        """PoseBERT's constructor arguments for this preset (``size``: a key of :data:`MODEL_SIZES`)."""
        return dict(in_dim=self.in_dim, num_joints=self.num_joints, **MODEL_SIZES[size])

    def accepts(self, track) -> bool:
        """Whether a track carries this preset's input (``refine.choose_preset`` asks the shipped
        presets in the order SMPL > 3D keypoints > 2D keypoints)."""
        raise NotImplementedError

    def encode(self, track, body, policy, f_norm: float, bones=None) -> tuple:
        """A track -> (x (N, in_dim) tensor, usable (N,) bool array: frames whose input is complete
        and plausible). ``body``: the preset's prior body; ``policy``: a ConfidencePolicy;
        ``f_norm``: the camera's normalised focal; ``bones``: bone lengths of the layout (kp3d)."""
        raise NotImplementedError

    def training_inputs(self, b: "TrainingDraw") -> torch.Tensor:
        """The model input x (B, T, in_dim) of a training batch from the posed ground truth and the
        corruption drawn for it (:func:`build_training_batch`)."""
        raise NotImplementedError


@dataclass(frozen=True)
class SmplPreset(Preset):
    """SMPL rotations (+ 2D of the projected joints when the estimator gives a translation)."""

    kind: ClassVar[str] = "smpl"

    @property
    def in_dim(self) -> int:
        return 24 * 8

    def model_kwargs(self, size: str = "cpu") -> dict:
        # every frame starts from a robust smoothing of the input, as the shipped model
        return {**super().model_kwargs(size), "init_from_input": (0, 144), "init_masked": "smooth"}

    def accepts(self, track) -> bool:
        return track.rotmats is not None

    def encode(self, track, body, policy, f_norm, bones=None):
        if track.rotmats is None:
            raise ValueError(f"preset 'smpl' needs SMPL rotations; track {track.track_id} has none")
        N = len(track)
        R = torch.as_tensor(np.nan_to_num(track.rotmats, nan=0.0))
        ok = np.isfinite(track.rotmats).all((1, 2, 3))
        R[~torch.as_tensor(ok)] = torch.eye(3)
        if track.transl is not None:
            tr = torch.as_tensor(np.nan_to_num(track.transl, nan=0.0))
            ok &= np.isfinite(track.transl).all(-1)
            kp2d = project(body.pose_keypoints(R, tr, "smpl24"), f_norm)
        else:
            kp2d = torch.zeros(N, 24, 2)
        return features.smpl_features(rotmat_to_6d(R), kp2d), ok

    def training_inputs(self, b):
        R, tr, g, B = b.R, b.tr, b.g, b.R.shape[0]
        if b.corrupt:
            sigma = synth._u(g, (B,), 0.0, 0.15) * b.level
            eps = torch.randn(R.shape[:-2] + (3,), generator=g)
            if b.heavy.any():
                eps = torch.where(b.heavy[:, None, None, None], synth.heavy_tailed(eps.shape, g), eps)
            Rin = R @ rotvec_to_rotmat(eps * sigma[:, None, None, None])
            frac = synth._u(g, (B,), 0.0, 0.15) * (torch.rand(B, generator=g) < 0.5) * ~b.clean
            Rin, _ = synth.replace_with_other(Rin, frac, g)
            Rin = synth.swap_limbs(Rin, b.swap, g, conj=synth.MIRROR_X) if b.swap.any() else Rin
        else:
            Rin = R
        kp2d = project(b.body.pose_keypoints(Rin, tr, "smpl24", bone_scale=b.scale))
        if b.corrupt:
            kp2d = kp2d + b.noise(kp2d.shape, 0.01 * b.noise_scale)
        return features.smpl_features(rotmat_to_6d(Rin), kp2d)


@dataclass(frozen=True)
class _KeypointPreset(Preset):
    def _training_keypoints(self, b):
        """Posed keypoints (B, T, K, 3) with the detector's failures: outlier poses, left/right swaps."""
        R, tr, g = b.R, b.tr, b.g
        B, T = R.shape[:2]
        kp = b.body.pose_keypoints(R, tr, self.layout, **({"bone_scale": b.scale} if b.scale is not None else {}))
        if b.corrupt:
            frac = synth._u(g, (B,), 0.0, 0.1) * (torch.rand(B, generator=g) < 0.5) * ~b.clean
            kp, _ = synth.replace_with_other(kp - tr[..., None, :], frac, g)
            kp = kp + tr[..., None, :]
            if b.swap.any():   # a left/right confusion of the detector: every lateral keypoint swapped
                from .skeletons import get_skeleton
                flip = torch.as_tensor(get_skeleton(self.layout).flip_map, dtype=torch.long)
                hit = torch.rand((B, T), generator=g) < b.swap[:, None]
                kp = torch.where(hit[..., None, None], kp[:, :, flip], kp)
        return kp


@dataclass(frozen=True)
class Kp3dPreset(_KeypointPreset):
    """3D keypoints of a layout (+ their 2D when given, or projected when not root-relative)."""

    kind: ClassVar[str] = "kp3d"

    @property
    def in_dim(self) -> int:
        return 5 * self.num_keypoints + 6

    def model_kwargs(self, size: str = "cpu") -> dict:
        # the root starts at the keypoints' canonical frame, smoothed
        K = self.num_keypoints
        return {**super().model_kwargs(size), "init_root_from": (3 * K, 3 * K + 6), "init_masked": "smooth"}

    def accepts(self, track) -> bool:
        return track.kp3d is not None and track.layout3d == self.layout

    def encode(self, track, body, policy, f_norm, bones=None):
        from .camera import pixels_to_norm
        from .skeletons import get_skeleton
        if track.kp3d is None or track.layout3d != self.layout:
            raise ValueError(f"preset {self.name!r} needs 3D keypoints in layout {self.layout}; track "
                             f"{track.track_id} has {track.layout3d}")
        N, v = len(track), track.video
        k3 = torch.as_tensor(track.kp3d, dtype=torch.float32)
        ok = torch.isfinite(k3).all(-1).all(-1).numpy()
        k3 = torch.nan_to_num(k3)
        if ok.sum() >= 3:  # implausible skeletons (bone lengths far from the track's) are not trusted
            bl = torch.stack([(k3[:, c] - k3[:, q]).norm(dim=-1) for c, q in get_skeleton(self.layout).bones], -1)
            med = bl[torch.as_tensor(ok)].median(0).values.clamp_min(1e-6)
            ratio = (bl / med).median(-1).values.numpy()
            ok &= np.abs(ratio - 1) <= policy.bone_outlier_ratio
        if track.kp2d is not None and track.layout2d == self.layout:
            k2 = pixels_to_norm(torch.as_tensor(np.nan_to_num(track.kp2d), dtype=torch.float32), v.width, v.height)
        elif not track.kp3d_root_relative:
            k2 = project(k3, f_norm)
        else:
            k2 = torch.zeros(N, k3.shape[1], 2)
        if track.side == "left":   # left hands mirrored in X into right hands, the hand the models know
            k3, k2 = k3 * torch.tensor([-1.0, 1.0, 1.0]), k2 * torch.tensor([-1.0, 1.0])
        return features.kp3d_features(k3, k2, self.layout, bone_lengths(body, self.layout) if bones is None else bones), ok

    def training_inputs(self, b):
        kp = self._training_keypoints(b)
        kp3 = kp
        if b.corrupt:
            max_noise = 0.02 if self.body == "hand" else 0.03     # metres; a hand is ~18 cm long
            kp3 = kp3 + b.noise(kp3.shape, max_noise * b.noise_scale)
            if b.body_aug and b.aug.depth_jitter > 0:   # monocular 3D: the depth scale of the body is uncertain
                B = kp.shape[0]
                s = 1 + synth._u(b.g, (B, 1, 1), -b.aug.depth_jitter, b.aug.depth_jitter) * ~b.clean[:, None, None]
                root = kp3.mean(-2, keepdim=True)
                kp3 = torch.cat([kp3[..., :2], root[..., 2:] + (kp3[..., 2:] - root[..., 2:]) * s[..., None]], -1)
        kp2d = project(kp)
        if b.corrupt:
            kp2d = kp2d + b.noise(kp2d.shape, 0.01 * b.noise_scale)
        return features.kp3d_features(kp3, kp2d, self.layout, bone_lengths(b.body, self.layout))


@dataclass(frozen=True)
class Kp2dPreset(_KeypointPreset):
    """2D keypoints with confidences (any 2D layout that contains this preset's joints)."""

    kind: ClassVar[str] = "kp2d"

    @property
    def in_dim(self) -> int:
        return 3 * self.num_keypoints

    def accepts(self, track) -> bool:
        """2D keypoints in a layout that contains every joint of this preset's layout."""
        from .skeletons import get_skeleton, mapping
        if track.kp2d is None:
            return False
        try:
            mapping(track.layout2d, self.layout)
        except ValueError:
            return False
        return set(get_skeleton(self.layout).joints) <= set(get_skeleton(track.layout2d).joints)

    def encode(self, track, body, policy, f_norm, bones=None):
        from .camera import pixels_to_norm
        from .skeletons import get_skeleton, mapping
        if track.kp2d is None:
            raise ValueError(f"preset {self.name!r} needs 2D keypoints; track {track.track_id} has none")
        N, v = len(track), track.video
        src, dst = mapping(track.layout2d, self.layout)
        K = get_skeleton(self.layout).num_joints
        if len(dst) != K:
            raise ValueError(f"2D layout {track.layout2d} lacks joints of {self.layout}")
        k2 = np.zeros((N, K, 2), np.float32)
        c = np.zeros((N, K), np.float32)
        k2[:, dst] = np.nan_to_num(track.kp2d[:, src])
        c[:, dst] = np.nan_to_num(track.kp2d_conf[:, src]) * np.isfinite(track.kp2d[:, src]).all(-1)
        c = np.where(c >= policy.min_joint_conf, c, 0.0)
        ok = (c > 0).sum(-1) >= policy.min_visible_joints
        return features.kp2d_features(pixels_to_norm(torch.as_tensor(k2), v.width, v.height), torch.as_tensor(c)), ok

    def training_inputs(self, b):
        kp = self._training_keypoints(b)
        g = b.g
        B, T, K = kp.shape[:3]
        kp2d = project(kp)
        conf = torch.ones(B, T, K)
        if b.corrupt:
            conf = torch.where(b.clean[:, None, None], conf, synth._u(g, (B, T, K), 0.3, 1.0))
            sigma = synth._u(g, (B, 1, 1, 1), 0.0, 0.012 * b.noise_scale) * b.level.reshape(B, 1, 1, 1) * \
                (1.6 - conf[..., None])
            n = torch.randn(kp2d.shape, generator=g)
            if b.heavy.any():
                n = torch.where(b.heavy[:, None, None, None], synth.heavy_tailed(n.shape, g), n)
            kp2d = kp2d + n * sigma
            conf = synth.drop_joints(conf, synth._u(g, (B,), 0.0, 0.2) * ~b.clean, g)
        return features.kp2d_features(kp2d, conf)


PRESETS = {p.name: p for p in [
    SmplPreset("smpl", "smpl24", "SMPL rotations (HybrIK, SPIN, VIBE, 4D-Humans)"),
    Kp3dPreset("kp3d-h36m17", "h36m17", "H36M-17 3D keypoints"),
    Kp3dPreset("kp3d-mediapipe33", "mediapipe33", "MediaPipe Pose 33 world landmarks"),
    Kp2dPreset("kp2d-coco17", "coco17", "COCO-17 2D keypoints (YOLO-pose, HRNet/mmpose)"),
    Kp3dPreset("kp3d-hand21", "hand21", "21 hand keypoints (MediaPipe Hands, mmpose hand)", body="hand"),
]}


def available_presets() -> list:
    return sorted(PRESETS)


def get_preset(name) -> Preset:
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; available: {', '.join(available_presets())}")
    return PRESETS[name]


def bone_lengths(body, layout) -> torch.Tensor:
    """Bone lengths (K,) of a layout on ``body``'s rest pose (a :class:`~posebert_plug.refine.Refiner`
    keeps them per preset)."""
    rest = body.pose_keypoints(torch.eye(3).expand(1, body.num_joints, 3, 3), None, layout)[0]
    return features.bone_lengths_of(rest, layout)


def build_training_batch(preset, rot6d, transl_world, body, g, corrupt: bool = True, obs=None,
                         noise_scale: float = 1.0, mask_kw=None, aug: "synth.Augment | None" = None) -> dict:
    """Ground truth + corrupted inputs for one batch.

    rot6d (B, T, J, 6), transl_world (B, T, 3) from the cache (J = 24 body, 16 hand; ``body``
    is the preset's ``make_body()``). Returns a dict with
    ``x`` (B, T, in_dim), ``observed`` (B, T), ``rotmats`` (B, T, J, 3, 3) target
    (camera-frame root), ``transl`` (B, T, 3) target camera-frame pelvis, ``param`` (B, T, 3).
    ``mask_kw``: options of ``synth.training_mask`` (mask mixture, longest hidden future).
    ``aug``: a :class:`synth.Augment` (mirroring, rig offsets, cameras, clean windows, heavy-tailed
    noise, limb swaps; body presets only); None keeps the shipped models' original distribution.
    Time warping happens when windows are sampled (``MotionCache.sample(speed=...)``).
    """
    p = get_preset(preset)
    B, T = rot6d.shape[:2]
    placement = dict(p.placement)
    body_aug = aug is not None and p.body == "body"
    if body_aug:
        rot6d, transl_world = synth.mirror_motion(rot6d, transl_world, torch.rand(B, generator=g) < aug.mirror)
        if aug.rig_deg > 0:   # half the windows keep the source rig's convention
            shifted = synth.rig_offsets(rot6d, g, aug.rig_deg)
            rot6d = torch.where((torch.rand(B, generator=g) < 0.5)[:, None, None, None], shifted, rot6d)
        placement.update(pitch=aug.pitch, roll=math.radians(aug.roll_deg), depth=aug.depth)
    R, tr = synth.place_in_camera(sixd_to_rotmat(rot6d), transl_world, g, **placement)
    out = {"rotmats": R, "transl": tr, "param": transl_to_param(tr)}
    if obs is None:
        obs = synth.training_mask(B, T, g, **(mask_kw or {})) if corrupt else torch.ones(B, T, dtype=torch.bool)
    out["observed"] = obs
    # per-window noise scale: 1 = the preset's full range; 0 = exactly clean input
    level = synth.noise_level(g, B, aug.clean_frac) if body_aug and corrupt else torch.ones(B)
    clean = level == 0
    heavy = (torch.rand(B, generator=g) < aug.heavy_frac) if body_aug else torch.zeros(B, dtype=torch.bool)
    swap = synth._u(g, (B,), 0.0, aug.swap_frac) * (torch.rand(B, generator=g) < 1 / 3) * ~clean \
        if body_aug else torch.zeros(B)
    # the observed person's proportions (inputs only: targets stay on the model's body)
    scale = synth.bone_scales(g, B, aug.proportions) if body_aug and aug.proportions > 0 else None

    def noise(shape, hi):
        """Gaussian or (for ``heavy`` windows) Student-t noise, per-window scale U(0, hi) * level.
        (Draw order as the shipped models' training: the noise, then its scale.)"""
        n = torch.randn(shape, generator=g)
        if heavy.any():
            n = torch.where(heavy.reshape(B, *([1] * (len(shape) - 1))), synth.heavy_tailed(shape, g), n)
        return n * (synth._u(g, (B,), 0.0, hi) * level).reshape(B, *([1] * (len(shape) - 1)))

    out["x"] = p.training_inputs(TrainingDraw(R, tr, body, g, corrupt, noise_scale, level, clean, heavy, swap, scale,
                                              noise, aug, body_aug))
    return out


@dataclass
class TrainingDraw:
    """What :func:`build_training_batch` drew for one batch, for :meth:`Preset.training_inputs`:
    the ground truth posed in the camera (R (B, T, J, 3, 3), tr (B, T, 3)), the preset's body, the
    generator, and the corruption (per-window noise ``level`` (B,), ``clean``/``heavy`` (B,) bool,
    limb-``swap`` rate (B,), bone ``scale`` or None, ``noise(shape, hi)``, the Augment)."""

    R: torch.Tensor
    tr: torch.Tensor
    body: object
    g: torch.Generator
    corrupt: bool
    noise_scale: float
    level: torch.Tensor
    clean: torch.Tensor
    heavy: torch.Tensor
    swap: torch.Tensor
    scale: torch.Tensor | None
    noise: object
    aug: object
    body_aug: bool


def trained_window(model) -> int:
    """The window length a model was trained on: its position embeddings past it are untrained."""
    return int(getattr(model, "meta", {}).get("args", {}).get("window") or 64)


def shipped_presets() -> list:
    """Presets whose weights ship with the package."""
    reg = _registry_path() / "index.json"
    return sorted(json.loads(reg.read_text())) if reg.is_file() else []


def shipped_window(preset) -> int:
    """The window a shipped preset's model was trained on, read from the checkpoint index (no weights
    loaded; 64 for entries that do not say)."""
    reg = _registry_path() / "index.json"
    index = json.loads(reg.read_text()) if reg.is_file() else {}
    return int(index.get(get_preset(preset).name, {}).get("window") or 64)


def _registry_path():
    return resources.files("posebert_plug") / CHECKPOINT_DIR


def save_checkpoint(model: PoseBERT, preset, path, meta: dict | None = None, half: bool = True) -> str:
    """Write a checkpoint (tensors and plain data only, loadable with weights_only=True); returns sha256."""
    sd = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    blob = {"preset": get_preset(preset).name, "config": dict(model.config), "state_dict": sd, "meta": meta or {}}
    tmp = f"{path}.part"
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return sha256_of(path)


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(preset="smpl", checkpoint=None, device="cpu") -> PoseBERT:
    """Load a shipped (or given) checkpoint for a preset; verifies the shipped checksum.

    Returns a :class:`PoseBERT` in eval mode with ``.preset`` set.
    """
    p = get_preset(preset) if checkpoint is None or preset in PRESETS else None
    if checkpoint is None:
        reg = _registry_path()
        index = json.loads((reg / "index.json").read_text()) if (reg / "index.json").is_file() else {}
        if p.name not in index:
            raise FileNotFoundError(f"no shipped checkpoint for preset {p.name!r} "
                                    f"(shipped: {', '.join(sorted(index)) or 'none'}); "
                                    f"train one with: posebert-train --preset {p.name}")
        checkpoint = str(reg / index[p.name]["file"])
        digest = sha256_of(checkpoint)
        if digest != index[p.name]["sha256"]:
            raise RuntimeError(f"checksum mismatch for {checkpoint}: expected {index[p.name]['sha256']}, got {digest} "
                               "(file corrupted or replaced)")
    blob = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for key in ("config", "state_dict", "preset"):
        if key not in blob:
            raise ValueError(f"{checkpoint}: not a posebert-plug checkpoint (missing {key!r})")
    cfg = dict(blob["config"])
    if cfg.get("init_from_input") is not None:
        cfg["init_from_input"] = tuple(cfg["init_from_input"])
    if cfg.get("init_root_from") is not None:
        cfg["init_root_from"] = tuple(cfg["init_root_from"])
    model = PoseBERT(**cfg)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    model.preset = get_preset(blob["preset"])
    model.meta = blob.get("meta", {})
    return model.eval().to(device)
