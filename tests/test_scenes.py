"""Rendered multi-person scenes with ground truth (posebert_plug.scenes)."""
import numpy as np
import pytest
import torch

from posebert_plug.scenes import SceneConfig, generate_scene


class TinyCache:
    """MotionCache interface over generated motion (the real val split is in ../shared)."""

    def __init__(self, n=4, T=60):
        from conftest import random_motion
        from posebert_plug.rotations import rotmat_to_6d
        rots, trs = zip(*[random_motion(T, seed=s) for s in range(n)])
        self.rot6d = rotmat_to_6d(torch.as_tensor(np.concatenate(rots))).float()
        self.transl = torch.as_tensor(np.concatenate(trs)).float()
        self.clip_start, self.clip_len = np.arange(n) * T, np.full(n, T)

    def window_starts(self, T, stride):
        return np.concatenate([s + np.arange(0, n - T + 1, stride) for s, n in zip(self.clip_start, self.clip_len)])

    def windows(self, starts, T):
        idx = torch.as_tensor(np.asarray(starts)[:, None] + np.arange(T)[None])
        return self.rot6d[idx], self.transl[idx]


def test_scene_is_deterministic_and_ground_truth_is_consistent(body):
    cache = TinyCache()
    cfg = SceneConfig(people=3, frames=40, width=320, height=180, seed=3)
    a, b = generate_scene(cache, cfg, body), generate_scene(cache, cfg, body)
    assert len(a.gt) == 3
    for p, q in zip(a.gt, b.gt):
        assert np.array_equal(p.transl, q.transl) and np.array_equal(p.boxes, q.boxes)
        assert p.rotmats.shape == (40, 24, 3, 3) and p.joints.shape == (40, 24, 3) and p.kp2d.shape == (40, 17, 2)
        # the 2D keypoints are the projection of the 3D body with the scene's camera
        kp3 = body.pose_keypoints(torch.as_tensor(p.rotmats), torch.as_tensor(p.transl), "coco17").numpy()
        f = cfg.focal_px
        proj = f * kp3[..., :2] / kp3[..., 2:] + np.array([160, 90])
        assert np.allclose(proj, p.kp2d, atol=1e-2)
        # boxes lie inside the image; visible people have boxes with area
        assert (p.boxes[:, [0, 2]] >= 0).all() and (p.boxes[:, [0, 2]] <= 320).all()
        assert ((p.boxes[p.visible, 2] - p.boxes[p.visible, 0]) > 0).all()
    # people walk in opposite directions: their lateral positions cross or diverge, they are not parked
    xs = np.stack([p.transl[:, 0] for p in a.gt])
    assert (np.ptp(xs, axis=1) > 0.3).all()


def test_scene_frames_render_people_over_the_background(body):
    sc = generate_scene(TinyCache(), SceneConfig(people=2, frames=3, width=320, height=180, seed=0,
                                                 exit_reenter=False), body)
    frames = list(sc.frames())
    assert len(frames) == 3 and frames[0][1].shape == (180, 320, 3)
    t, img = frames[1]
    for p in sc.gt:
        if p.visible[t]:
            x0, y0, x1, y1 = p.boxes[t].astype(int)
            patch = img[y0:y1, x0:x1].reshape(-1, 3).astype(float)
            # the body's clothing colour shows inside its box (the background is grey)
            chroma = patch.max(1) - patch.min(1)
            assert (chroma > 40).mean() > 0.05


def test_scene_config_errors(body):
    with pytest.raises(ValueError, match="people"):
        generate_scene(TinyCache(), SceneConfig(people=0), body)
    with pytest.raises(ValueError, match="background"):
        sc = generate_scene(TinyCache(), SceneConfig(people=1, frames=5, background="sky"), body)
        next(sc.frames())
