"""Rendered multi-person scenes with ground truth, from held-out motion capture.

    from posebert_plug.scenes import SceneConfig, generate_scene
    scene = generate_scene(MotionCache("cache/val.npz"), SceneConfig(people=3, seed=0))
    scene.write_video("scene.mp4")          # the frames a detector sees
    scene.gt[0].boxes, scene.gt[0].kp2d      # per person: (T, 4) px, (T, 17, 2) px ...

1-4 people from the validation split walk across a fixed camera (OpenCV frame,
focal ``F_NORM * max(W, H) / 2`` px, principal point at the image centre, level
camera tilted down by ``pitch`` rad) in opposite directions, so they cross and
occlude each other; with ``exit_reenter`` one of them walks out of the picture and
comes back. Bodies are the free mesh (``DefaultBodyModel``) with a clothing colour
each, rendered with headlight shading and z-buffer occlusion over a background
(``"plain"``, ``"noise"``: a textured wall and floor, or ``"frame"``: an image you
pass). Everything is seeded: the same config gives the same video and ground truth.

Ground truth per person (``PersonGT``), over all T frames, camera frame, metres:
rotmats (T, 24, 3, 3) SMPL local rotations (root in the camera frame), transl
(T, 3) pelvis, joints (T, 24, 3), kp2d (T, 17, 2) COCO-17 pixels, boxes (T, 4)
pixels (projected mesh, clipped to the image), visible (T,) bool (at least 30 % of
the unclipped box inside the image).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import synth
from .body_model import DefaultBodyModel
from .camera import F_NORM
from .rotations import sixd_to_rotmat
from .types import VideoInfo

__all__ = ["SceneConfig", "PersonGT", "Scene", "generate_scene", "CLOTHES"]

CLOTHES = np.array([[0.20, 0.35, 0.75], [0.75, 0.25, 0.20], [0.25, 0.55, 0.30], [0.85, 0.70, 0.25],
                    [0.55, 0.35, 0.65], [0.35, 0.35, 0.35]])


@dataclass
class SceneConfig:
    people: int = 3
    frames: int = 150
    width: int = 960
    height: int = 540
    fps: float = 30.0
    depth: tuple = (4.0, 9.0)          # metres from the camera at the start
    speed: tuple = (0.6, 1.4)          # lateral walking speed, m/s
    pitch: float = 0.12                # camera looking down, rad
    exit_reenter: bool = True          # one person leaves the picture and comes back
    background: str = "noise"          # "plain" | "noise" | "frame"
    background_image: np.ndarray | None = None
    seed: int = 0

    @property
    def focal_px(self) -> float:
        return F_NORM * max(self.width, self.height) / 2

    @property
    def video(self) -> VideoInfo:
        return VideoInfo(self.width, self.height, self.fps, num_frames=self.frames, focal_px=self.focal_px)


@dataclass
class PersonGT:
    person_id: int
    rotmats: np.ndarray
    transl: np.ndarray
    joints: np.ndarray
    kp2d: np.ndarray
    boxes: np.ndarray
    visible: np.ndarray
    colour: np.ndarray


@dataclass
class Scene:
    config: SceneConfig
    gt: list = field(default_factory=list)
    body: DefaultBodyModel | None = None

    def frames(self):
        """Yield (index, RGB frame (H, W, 3) uint8), rendered on the fly (never all held)."""
        from render import get_renderer
        c = self.config
        renderer = get_renderer("auto", alpha=1.0)
        bg = _background(c)
        R = torch.as_tensor(np.stack([p.rotmats for p in self.gt])).float()
        T = torch.as_tensor(np.stack([p.transl for p in self.gt])).float()
        for t in range(c.frames):
            out = self.body(R[:, t], T[:, t])
            meshes = [(out.vertices[k].numpy(), self.body.faces, p.colour) for k, p in enumerate(self.gt)
                      if p.transl[t, 2] > 0.5]
            yield t, renderer.render(bg.copy(), meshes, c.focal_px)

    def write_video(self, path) -> str:
        from adapters.video import VideoWriter
        w = VideoWriter(path, self.config.width, self.config.height, self.config.fps)
        try:
            for _, img in self.frames():
                w.write(img)
            w.close()
        except BaseException:
            w.abort()
            raise
        return path


def generate_scene(cache, config: SceneConfig | None = None, body: DefaultBodyModel | None = None) -> Scene:
    """Pick ``people`` validation windows and place them; cache: a MotionCache (val split)."""
    c = config or SceneConfig()
    if not 1 <= c.people <= 6:
        raise ValueError(f"people must be 1..6, got {c.people}")
    body = body or DefaultBodyModel()
    rng = np.random.default_rng(c.seed)
    starts = cache.window_starts(c.frames, c.frames // 2)
    if len(starts) < c.people:
        raise ValueError(f"the cache has only {len(starts)} windows of {c.frames} frames")
    rot6d, tr = cache.windows(np.sort(rng.choice(starts, size=c.people, replace=False)), c.frames)
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    # Depths spread over the range so that people at different distances cross.
    R, cam = synth.place_in_camera(sixd_to_rotmat(rot6d), tr, g, depth=c.depth, u_range=(-0.1, 0.1),
                                   v_range=(0.05, 0.15), pitch=(c.pitch, c.pitch))
    depth0 = np.linspace(c.depth[0], c.depth[1], c.people) + rng.uniform(-0.3, 0.3, c.people)
    cam[:, :, 2] += torch.as_tensor(depth0 - cam[:, 0, 2].numpy(), dtype=cam.dtype)[:, None]
    cam[:, :, 2] = cam[:, :, 2].clamp_min(1.5)
    t = torch.arange(c.frames, dtype=cam.dtype) / c.fps
    half_w = c.width / 2 / c.focal_px                               # tan of half the field of view
    leaver = int(rng.integers(c.people)) if c.exit_reenter else -1
    for p in range(c.people):
        z = cam[p, :, 2]
        direction = 1.0 if p % 2 == 0 else -1.0
        speed = rng.uniform(*c.speed)
        duration = c.frames / c.fps
        if p == leaver:
            # out past the image edge at mid-clip, then back in
            reach = (half_w * float(z.mean()) + 0.8)
            x = direction * reach * np.sin(np.pi * t.numpy() / duration)
            x = torch.as_tensor(x, dtype=cam.dtype) - direction * 0.3 * reach
        else:
            span = speed * duration
            x = direction * (-span / 2 + speed * t)
        cam[p, :, 0] = x + (cam[p, :, 0] - cam[p, :1, 0]) * 0.3 + float(rng.uniform(-0.3, 0.3))
    verts = body(R, cam).vertices                                   # (P, T, V, 3)
    kp3 = body.pose_keypoints(R, cam, "coco17")
    joints = body.pose_keypoints(R, cam, "smpl24")
    f, cx, cy = c.focal_px, c.width / 2, c.height / 2

    def proj(x):
        return torch.stack([f * x[..., 0] / x[..., 2].clamp_min(0.1) + cx, f * x[..., 1] / x[..., 2].clamp_min(0.1) + cy], -1)

    gt = []
    for p in range(c.people):
        v2 = proj(verts[p])                                          # (T, V, 2)
        lo, hi = v2.min(1).values.numpy(), v2.max(1).values.numpy()
        full = np.concatenate([lo, hi], -1)
        clipped = np.stack([full[:, 0].clip(0, c.width), full[:, 1].clip(0, c.height),
                            full[:, 2].clip(0, c.width), full[:, 3].clip(0, c.height)], -1)
        area = lambda b: np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
        visible = area(clipped) >= 0.3 * np.maximum(area(full), 1e-6)
        gt.append(PersonGT(p, R[p].numpy(), cam[p].numpy(), joints[p].numpy(), proj(kp3[p]).numpy(),
                           clipped.astype(np.float32), visible, CLOTHES[(p + c.seed) % len(CLOTHES)]))
    return Scene(c, gt, body)


def _background(c: SceneConfig) -> np.ndarray:
    H, W = c.height, c.width
    if c.background == "frame":
        if c.background_image is None:
            raise ValueError("background='frame' needs background_image (H, W, 3) uint8")
        from PIL import Image
        return np.asarray(Image.fromarray(np.asarray(c.background_image, np.uint8)).resize((W, H)))
    if c.background == "plain":
        return np.full((H, W, 3), 128, np.uint8)
    if c.background != "noise":
        raise ValueError(f"background must be plain, noise or frame, got {c.background!r}")
    rng = np.random.default_rng(c.seed + 7)
    from scipy.ndimage import gaussian_filter
    tex = gaussian_filter(rng.normal(0, 1, (H, W)), 3) * 40
    y = np.arange(H)[:, None] * np.ones((1, W))
    horizon = 0.45 * H
    wall = 150 + 0.0 * y
    floor = 110 + 40 * (y - horizon) / (H - horizon)
    base = np.where(y < horizon, wall, floor) + tex
    img = np.stack([base * 1.0, base * 0.97, base * 0.92], -1)
    return img.clip(0, 255).astype(np.uint8)
