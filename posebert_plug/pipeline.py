"""The whole job: video -> detections -> tracks -> PoseBERT (+ baseline) -> renders and files.

``Pipeline(estimator="yolo", ...).run(video, out_dir)`` mirrors the
``posebert-refine`` command line; every CLI flag is a constructor argument.
Outputs are written into ``<out>/.partial-<pid>/`` and moved into ``<out>``
only when everything succeeded, so an interrupted run never leaves files that
pass for complete.
"""
from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from .body_model import BodyModelNotFound
from .types import Track, VideoInfo


class PipelineError(Exception):
    """A user-facing failure; ``code`` is the process exit status."""

    def __init__(self, message, code=2):
        super().__init__(message)
        self.code = code


EXIT_CODES = {0: "success", 1: "internal error", 2: "bad input or usage (unreadable video, unknown estimator, "
              "unwritable output folder, malformed estimator file, bad option value)",
              3: "nobody detected or tracked in the video"}


BASELINES = ("savgol", "nearest")   # what Pipeline.baseline computes (and --baseline accepts)

# The person detector's input size (YOLO's imgsz): the video's own long side (down to YOLO's stride of 32),
# at most DEFAULT_IMGSZ: never upscaled by default (a 176x144 video runs at 160, not 960, 30x faster).
# Small people do need upscaling: on vtest.avi (768x576, pedestrians ~60 px tall) YOLO11n-pose finds 1.19
# people/frame at 768 and 3.78 at 960; the pipeline says so (SMALL_PEOPLE_PX) and --imgsz 960 is the answer.
from adapters.yolo import DEFAULT_IMGSZ  # noqa: E402  (one place for the detector's default size)
# median detected person height (video pixels) under which the hint above is given: the people found at the
# video's own size are the larger ones (vtest at 768: median 104 px found, many 60-px people missed)
SMALL_PEOPLE_PX = 150


def detector_size(video: VideoInfo, imgsz: int | None = None) -> int:
    """The detector input size used for ``video``: ``imgsz`` when given, else
    ``min(DEFAULT_IMGSZ, the video's long side rounded down to a multiple of 32)`` (at least 32): no upscaling."""
    if imgsz is not None:
        return int(imgsz)
    long_side = max(int(video.width or 0), int(video.height or 0)) or DEFAULT_IMGSZ
    return int(max(32, min(DEFAULT_IMGSZ, long_side // 32 * 32)))


def small_people_hint(frames, video: VideoInfo, imgsz: int | None) -> str | None:
    """A hint when the detector ran at the video's own size and the people it found are small (median box
    height < SMALL_PEOPLE_PX): upscaling finds more of them. None otherwise."""
    size = detector_size(video, imgsz)
    long_side = max(int(video.width or 0), int(video.height or 0))
    if imgsz is not None or not long_side or size >= DEFAULT_IMGSZ:
        return None
    h = [float(d.box[3] - d.box[1]) for fd in frames for d in fd.detections if d.box is not None]
    if len(h) < 10 or np.median(h) >= SMALL_PEOPLE_PX:
        return None
    up = min(DEFAULT_IMGSZ, -(-int(long_side * 1.25) // 32) * 32)
    return (f"the people found are small (median height {np.median(h):.0f} px); the detector ran at the video's own "
            f"size ({size}): --imgsz {up} upscales it and finds more small people, at {(up / size) ** 2:.1f}x the cost")


@dataclass
class Pipeline:
    estimator: str = "yolo"
    estimator_output: str | None = None
    preset: str = "auto"
    smpl_dir: str | None = None
    mano_dir: str | None = None
    device: str = "auto"
    baselines: tuple = ("savgol",)
    online: bool = False
    predict_ahead: int = 0
    imgsz: int | None = None     # None: detector_size(video) (the video's own size, at most 960)
    yolo_weights: str | None = None
    renderer: str = "auto"
    render: bool = True
    skeleton_only: bool = False
    side_by_side: bool = True
    plots: bool = True
    bvh: bool = True
    max_frames: int | None = None
    progress: bool = True
    # Shot cuts: "auto" (found on the frames, posebert_plug.cuts), None/"none" (none), or a list of
    # frames starting a new shot. Evidence (tracking.evidence.EvidenceConfig): usable frames a track
    # needs (None: max(5, 0.2 s of video)), longest gap filled (seconds; longer gaps split the track),
    # smallest median box height (fraction of the frame), widest median box (width / height).
    cuts: object = "auto"
    min_observed: int | None = None
    max_fill_seconds: float = 1.0
    min_box_height: float = 0.03
    max_box_aspect: float = 2.5
    fit_2d: bool = True          # reprojection fit of pose and translation to the 2D keypoints (fit2d)
    fit: str = "default"         # the fit's strength: a name of fit2d.FIT_PRESETS ("default", "close", "loose")
    json_arrays: str = "base64"  # results.json float arrays: "base64" (exact, 1.33x float32) or "lists" (types.save_tracks)
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)   # printed to stderr and kept in summary.json
    # The models of the run (posebert_plug.refine.Refiner: PoseBERT presets, body/hand models from
    # smpl_dir/mano_dir, device); None: built on first use. Batch workers pass one to reuse its models.
    refiner: object = field(default=None, repr=False, compare=False)
    # Loaded detectors (YOLO) by weights and device, kept for the next run of this Pipeline; batch
    # workers pass one dict to all their videos.
    detectors: dict = field(default_factory=dict, repr=False, compare=False)

    def get_refiner(self):
        """The run's :class:`~posebert_plug.refine.Refiner` (built from device, smpl_dir, mano_dir)."""
        if self.refiner is None:
            from .bodies import BodyModels
            from .refine import Refiner
            self.refiner = Refiner(self.device, BodyModels(self.smpl_dir, self.mano_dir))
        return self.refiner

    def output_options(self):
        """The output flags as a typed :class:`~posebert_plug.pipeline_outputs.OutputOptions`."""
        from .pipeline_outputs import OutputOptions
        return OutputOptions(render=self.render, skeleton_only=self.skeleton_only, side_by_side=self.side_by_side,
                             renderer=self.renderer, plots=self.plots, bvh=self.bvh, json_arrays=self.json_arrays,
                             max_frames=self.max_frames, progress=self.progress)

    @property
    def bodies(self):
        """The body/hand model provider used by refinement, results, plots and rendering alike."""
        return self.get_refiner().bodies

    # ---- stages -----------------------------------------------------------------------
    def check(self):
        """Refuse bad settings before any work: a bad flag found after minutes of detection
        would cost the user that time. Raises :class:`PipelineError` (code 2)."""
        from .presets import shipped_presets, shipped_window
        shipped = shipped_presets()
        if self.device not in ("auto", "cpu"):
            try:
                dev = torch.device(self.device)
            except RuntimeError:
                raise PipelineError(f"unknown device {self.device!r}; use auto, cpu or cuda[:N]", 2) from None
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise PipelineError(f"device {self.device!r}: no CUDA GPU on this machine (use auto or cpu)", 2)
        if self.preset != "auto" and self.preset not in shipped:
            raise PipelineError(f"unknown preset {self.preset!r}; choose auto or one of: {', '.join(shipped)}", 2)
        if self.predict_ahead and not self.online:
            raise PipelineError("--predict-ahead needs --online", 2)
        if self.online:
            W = min(shipped_window(p) for p in (shipped if self.preset == "auto" else [self.preset]))
            if not 0 <= self.predict_ahead < W:
                raise PipelineError(f"--predict-ahead must lie in 0..{W - 1} (the model's window is {W} frames)", 2)
        if self.json_arrays not in ("base64", "lists"):
            raise PipelineError(f"unknown --json-arrays {self.json_arrays!r}; choose base64 or lists", 2)
        unknown = set(self.baselines) - set(BASELINES)
        if unknown:
            raise PipelineError(f"unknown baseline(s) {', '.join(sorted(unknown))}; choose from {', '.join(BASELINES)}", 2)
        if self.max_frames is not None and self.max_frames < 1:
            raise PipelineError(f"--max-frames must be at least 1, got {self.max_frames}", 2)
        if self.imgsz is not None and self.imgsz < 32:
            raise PipelineError(f"--imgsz must be at least 32 pixels (YOLO's stride), got {self.imgsz}", 2)
        if self.min_observed is not None and self.min_observed < 1:
            raise PipelineError(f"--min-observed must be at least 1, got {self.min_observed}", 2)
        if not self.max_fill_seconds >= 0:
            raise PipelineError(f"--max-fill-seconds must be >= 0, got {self.max_fill_seconds}", 2)
        if not 0 <= self.min_box_height < 1:
            raise PipelineError(f"--min-box-height must lie in [0, 1) (a fraction of the frame height), "
                                f"got {self.min_box_height}", 2)
        if not self.max_box_aspect > 0:
            raise PipelineError(f"--max-box-aspect must be > 0, got {self.max_box_aspect}", 2)
        if not (self.cuts in (None, "auto", "none") or (not isinstance(self.cuts, str) and
                                                       all(int(c) >= 0 for c in self.cuts))):
            raise PipelineError(f"cuts must be 'auto', 'none' or a list of frames >= 0, got {self.cuts!r}", 2)
        for flag, folder in (("--smpl-dir", self.smpl_dir), ("--mano-dir", self.mano_dir)):
            if folder is not None and not os.path.isdir(folder):
                raise PipelineError(f"{flag} {folder}: no such folder", 2)

    def detect(self, video_path, video: VideoInfo) -> list:
        import adapters
        try:
            cls = adapters.get(self.estimator)
        except KeyError as e:
            raise PipelineError(str(e).strip("'\""), 2) from None
        opts = {"imgsz": detector_size(video, self.imgsz), "weights": self.yolo_weights, "models": self.detectors} \
            if self.estimator.startswith("yolo") else {}
        if self.estimator == "mediapipe":   # its YOLO person detector
            opts = {"imgsz": detector_size(video, self.imgsz), "models": self.detectors}
        ad = cls(**opts)
        if ad.live and self.estimator_output is None:
            from tqdm import tqdm
            frames = []
            total = video.num_frames or None
            if self.max_frames:
                total = min(total or self.max_frames, self.max_frames)
            bar = tqdm(total=total, desc=f"detect ({self.estimator})", unit="frame", disable=not self.progress)
            try:
                for fd in ad.run(video_path, video):
                    if self.max_frames and fd.frame >= self.max_frames:
                        break
                    frames.append(fd)
                    bar.update(1)
            except adapters.AdapterError as e:
                raise PipelineError(str(e), 2) from None
            finally:
                bar.close()
            return frames
        if self.estimator_output is None:
            raise PipelineError(f"estimator {self.estimator!r} runs as its own project: pass its output file with "
                                f"--estimator-output ({cls.reads})", 2)
        if not os.path.exists(self.estimator_output):   # a file, or a folder (OpenPose, mmpose per-image JSON)
            raise PipelineError(f"{self.estimator_output}: no such estimator output file", 2)
        try:
            with warnings.catch_warnings():   # the adapter's warnings come back in out.warnings, said once below
                warnings.simplefilter("ignore", adapters.AdapterWarning)
                out = ad.read(self.estimator_output, video)
        except (adapters.AdapterError, adapters.UnsafeFileError, ValueError) as e:
            raise PipelineError(f"{self.estimator}: {e}", 2) from None
        for message in getattr(out, "warnings", ()):
            self._warn(message)
        if getattr(out, "focal_px", None):   # the camera the estimator's translations are expressed for
            video.focal_px = out.focal_px
        return out

    def find_cuts(self, video_path, video) -> list:
        """Frames starting a new shot: found on the frames ("auto"), given, or none."""
        if self.cuts is None or (isinstance(self.cuts, str) and self.cuts == "none"):
            return []
        if not isinstance(self.cuts, str):
            return sorted(int(c) for c in self.cuts)
        from .cuts import detect_cuts
        return detect_cuts(video_path, stop=self.max_frames)

    def track(self, frames, video, cuts=()) -> list:
        from tracking import track_detections
        dets = [d for f in frames for d in f.detections]
        if dets and all(d.track_id is not None for d in dets):
            groups = {}
            for d in dets:
                groups.setdefault(d.track_id, []).append(d)
            return [Track.from_detections(k, g, video) for k, g in sorted(groups.items())]
        return track_detections(frames, video, progress=self.progress, cuts=cuts)

    def evidence_config(self):
        from tracking.evidence import EvidenceConfig
        return EvidenceConfig(min_observed=self.min_observed, max_fill_seconds=self.max_fill_seconds,
                              min_box_height=self.min_box_height, max_box_aspect=self.max_box_aspect)

    def vet(self, tracks, video, cuts=()) -> list:
        """Split tracks at cuts and long gaps, drop those with too little evidence (reported)."""
        from tracking.evidence import vet_tracks
        kept, dropped, split = vet_tracks(tracks, video, cuts, self.evidence_config())
        for d in split:
            self.split.append(d)
            self._warn(f"track {d['id']} split into tracks {', '.join(map(str, d['into']))}: {d['reason']}")
        for d in dropped:
            self._drop(d["id"], d["reason"])
        return kept

    def _drop_reasons(self, n=3) -> str:
        return "; ".join(f"track {d['id']}: {d['reason']}" for d in self.dropped[:n]) + \
            (f"; and {len(self.dropped) - n} more" if len(self.dropped) > n else "")

    def _drop(self, track_id, reason):
        self.dropped.append({"id": int(track_id), "reason": reason})
        self._warn(f"track {track_id} dropped: {reason}")

    def __post_init__(self):
        self.fit_options   # an unknown fit name fails here, before any video is read

    @property
    def fit_options(self) -> dict | None:
        """The FitOptions fields of :attr:`fit` (None: the defaults)."""
        from .fit2d import FIT_PRESETS
        if self.fit not in FIT_PRESETS:
            raise ValueError(f"fit must be one of {sorted(FIT_PRESETS)}, got {self.fit!r}")
        return FIT_PRESETS[self.fit] or None

    def refine(self, tracks, video) -> list:
        from .refine import OnlineRefiner, choose_preset, refine_tracks, refined_track
        ref = self.get_refiner()
        if not self.online:
            dropped = []
            out = refine_tracks(tracks, model=self.preset, refiner=ref, progress=self.progress,
                                dropped=dropped, fit_2d=self.fit_2d, fit_options=self.fit_options)
            for d in dropped:
                self._drop(d["id"], d["reason"])
            return out
        # Streaming: each frame refined from the frames before it only (OnlineRefiner, the offline path
        # over a ring buffer); the per-frame poses make the track's result through the same builder.
        out = []
        for t in tracks:
            try:
                preset = choose_preset(t) if self.preset == "auto" else self.preset
            except ValueError as e:
                self._drop(t.track_id, str(e))
                continue
            on = OnlineRefiner(preset, video=video, predict_ahead=self.predict_ahead, refiner=ref, fit_2d=self.fit_2d,
                               fit_options=self.fit_options)
            Rs, ts, ok = [], [], []
            for i in range(len(t)):
                cur, ahead = on.step(t.track_id, _detection_of(t, i) if t.observed[i] else None)
                pose = ahead if (self.predict_ahead and ahead is not None) else cur
                ok.append(pose is not None and bool(t.observed[i]))
                if pose is None:   # nothing seen yet: rest pose far away (marked unobserved)
                    pose = (np.tile(np.eye(3), (on.net.num_joints, 1, 1)), np.array([0, 0, 5.0]))
                Rs.append(pose[0])
                ts.append(pose[1])
            if not any(ok):
                self._drop(t.track_id, f"track {t.track_id}: no usable observation")
                continue
            out.append(refined_track(ref, preset, t, np.stack(Rs), np.stack(ts), np.array(ok)))
        return out

    def body_model(self):
        """The output body model (SMPL with ``smpl_dir``, else the free body)."""
        return self.bodies.body

    def per_frame_bodies(self, tracks, video) -> dict:
        """The input as a body, frame by frame, for body tracks without SMPL rotations (2D keypoints, or 3D
        keypoints such as MediaPipe's): the track's preset on one frame at a time (no temporal context)
        fitted to that frame's 2D keypoints (no smoothness): track_id -> (rotmats (N, 24, 3, 3), transl
        (N, 3)). What Savitzky-Golay smooths, so that it is compared with PoseBERT on the same body
        representation (side_by_side.mp4's input and Savitzky-Golay panels)."""
        from .fit2d import FIT_PRESETS
        from .refine import refine_tracks
        todo = [t for t in tracks if t.rotmats is None and (t.kp2d is not None or t.kp3d is not None)
                and t.side is None]
        if not todo:
            return {}
        out = refine_tracks(todo, model=self.preset, window=1, stride=1,
                            refiner=self.get_refiner(), dropped=[], fit_2d=self.fit_2d,
                            fit_options={**FIT_PRESETS["loose"], "w_smooth": 0.0, "knot_seconds": 0.0,
                                         "limit_acceleration": False})
        return {r.track_id: (r.rotmats, r.transl) for r in out}

    def baseline(self, tracks, video, name="savgol", per_frame=None):
        """Per-track baseline on the estimator's own outputs: dict track_id -> dict of arrays
        (``rotmats``/``transl``: the baseline body; ``input_rotmats``/``input_transl``: the input as a
        body; ``kp2d``: the baseline on the 2D keypoints)."""
        from . import baselines as B
        if per_frame is None:
            per_frame = self.per_frame_bodies(tracks, video)
        out = {}
        for t in tracks:
            if t.num_observed == 0:
                continue
            d = {}
            rot, tr = t.rotmats, t.transl
            if rot is None and t.track_id in per_frame:
                rot, tr = per_frame[t.track_id]
                d["input_rotmats"], d["input_transl"] = rot, tr
            if rot is not None:
                from tracking.evidence import usable_frames
                ok = t.observed & np.isfinite(rot).all((1, 2, 3))
                if t.rotmats is None:
                    ok &= usable_frames(t)
                if ok.any():
                    d["rotmats"] = B.savgol_rotations(np.nan_to_num(rot), ok) if name == "savgol" else \
                        B.nearest_fill(rot, ok)
                    if tr is not None:
                        d["transl"] = B.savgol(np.nan_to_num(tr), ok) if name == "savgol" else B.nearest_fill(tr, ok)
            if t.kp2d is not None:
                ok = t.observed & np.isfinite(t.kp2d).all((1, 2))
                if ok.any():
                    d["kp2d"] = B.savgol(np.nan_to_num(t.kp2d), ok) if name == "savgol" else B.nearest_fill(t.kp2d, ok)
            out[t.track_id] = d
        return out

    def _warn(self, message: str):
        self.warnings.append(message)
        print(f"posebert-refine: warning: {message}", file=sys.stderr, flush=True)

    # ---- the whole job ---------------------------------------------------------------
    def run(self, video_path, out_dir) -> dict:
        from .pipeline_outputs import terminate_cleanly
        t0 = time.time()
        self.warnings = []   # this run's only, if the same Pipeline runs again
        self.dropped, self.split = [], []
        self.check()
        from adapters.video import VideoError, probe
        try:
            video = probe(video_path)
        except VideoError as e:
            raise PipelineError(str(e), 2) from None
        stage = _prepare_out(out_dir)
        # SIGTERM/SIGHUP raise (like SIGINT) so that the staging folder is removed below.
        with terminate_cleanly():
            try:
                summary = self._stages(video_path, video, stage, t0)
                _publish(stage, out_dir)
            except BaseException as e:
                shutil.rmtree(stage, ignore_errors=True)
                err = _user_facing(e, out_dir)
                if err is e:
                    raise
                raise err from None
        return summary

    def _stages(self, video_path, video, stage, t0) -> dict:
        """Everything from detection to the summary, written into ``stage``."""
        from .pipeline_outputs import write_json, write_outputs
        # The later stages' heavy imports (scipy.signal ~0.7 s, matplotlib ~0.4 s) load on the
        # other core while the detector runs instead of after it.
        threading.Thread(target=_warm_imports, args=(self.plots,), daemon=True).start()
        t = time.time()
        frames = self.detect(video_path, video)
        if self.estimator in ("yolo", "mediapipe") and self.estimator_output is None:
            hint = small_people_hint(frames, video, self.imgsz)
            if hint:
                self._warn(hint)
        self.timings["detect"] = time.time() - t
        declared = min(video.num_frames, self.max_frames or video.num_frames)
        if self.estimator_output is None and len(frames) < declared:   # live adapters: one entry per frame
            self._warn(f"{video_path}: decoded {len(frames)} of the {declared} frames the container declares "
                       "(truncated or corrupt video); the results cover the decoded frames only")
        n_frames = max([f.frame for f in frames], default=-1) + 1
        if self.estimator_output is not None and 0 < video.num_frames < n_frames:
            self._warn(f"{self.estimator_output} has detections up to frame {n_frames - 1}, but {video_path} "
                       f"declares {video.num_frames} frames: is it the output for this video?")
        n_dets = sum(len(f) for f in frames)
        if n_dets == 0:
            raise PipelineError(f"{video_path}: nobody detected in {len(frames)} frames", 3)
        t = time.time()
        cuts = self.find_cuts(video_path, video)
        self.timings["cuts"] = time.time() - t
        t = time.time()
        tracks = self.track(frames, video, cuts)
        n_tracked = len(tracks)
        tracks = self.vet(tracks, video, cuts)
        self.timings["track"] = time.time() - t
        if not tracks:
            raise PipelineError(f"{video_path}: {n_dets} detections but no track long enough "
                                f"(people seen for fewer than 5 frames)" if not n_tracked else
                                f"{video_path}: none of the {n_tracked} tracks has enough evidence to be refined "
                                f"({self._drop_reasons()})", 3)
        t = time.time()
        refined = self.refine(tracks, video)
        self.timings["refine"] = time.time() - t
        if not refined:
            raise PipelineError(f"{video_path}: no track could be refined ("
                                f"{self._drop_reasons()})", 3)
        kept = {r.track_id for r in refined}
        tracks = [t for t in tracks if t.track_id in kept]
        t = time.time()
        per_frame = self.per_frame_bodies(tracks, video) if (self.render or self.plots) else {}
        base = {name: self.baseline(tracks, video, name, per_frame) for name in self.baselines}
        self.timings["baseline"] = time.time() - t
        summary = write_outputs(self.output_options(), self.bodies, stage, video_path, video, tracks, refined, base,
                                warn=self._warn, timings=self.timings)
        self.timings["total"] = time.time() - t0
        summary.update({"frames": n_frames, "detections": n_dets, "timings": dict(self.timings),
                        "cuts": [int(c) for c in cuts], "dropped_tracks": list(self.dropped),
                        "split_tracks": list(self.split), "warnings": list(self.warnings)})
        write_json(os.path.join(stage, "summary.json"), summary)   # staged too: published with the rest
        return summary


def _user_facing(e: BaseException, out_dir) -> BaseException:
    """The error a failed run reports: a missing/unusable model folder and a full disk are the
    user's to fix (exit 2, one line); anything else goes on as it was."""
    from .pipeline_outputs import is_disk_full
    if isinstance(e, BodyModelNotFound):   # a --smpl-dir/--mano-dir folder without usable model files
        return PipelineError(str(e), 2)
    if is_disk_full(e):
        return PipelineError(f"output folder {os.fspath(out_dir)!r}: {e.strerror or 'no space left'} while writing "
                             "the results; nothing was kept (free some space and run again)", 2)
    return e


def _warm_imports(plots: bool):
    from . import baselines  # noqa: F401  (scipy.signal)
    if plots:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401


def _detection_of(t: Track, i: int):
    from .types import Detection
    g = lambda a: None if a is None else a[i]
    return Detection(int(t.frames[i]), box=g(t.boxes) if t.boxes is not None and np.isfinite(t.boxes[i]).all() else None,
                     score=float(np.nan_to_num(t.scores[i], nan=1.0)), kp2d=g(t.kp2d), kp2d_conf=g(t.kp2d_conf),
                     layout2d=t.layout2d if t.kp2d is not None else None, kp3d=g(t.kp3d),
                     layout3d=t.layout3d if t.kp3d is not None else None, kp3d_root_relative=t.kp3d_root_relative,
                     rotmats=g(t.rotmats), transl=g(t.transl), side=t.side)


def _prepare_out(out_dir) -> str:
    from .pipeline_outputs import prepare_stage
    try:
        return prepare_stage(out_dir)
    except OSError as e:
        raise PipelineError(f"output folder {os.fspath(out_dir)!r} is not writable ({e.strerror})", 2) from None


def _publish(stage, out_dir):
    """Move the results into place; the run's set of outputs replaces the previous run's
    (see pipeline_outputs.publish)."""
    from .pipeline_outputs import publish
    publish(stage, out_dir)
