"""Video reading with PyAV: frame indices, size, fps, batched decoding.

Frames are numbered 0.. in decoding order; frames that fail to decode are
skipped and their index stays unused (later frames are not shifted).
Images are (H, W, 3) uint8 RGB.
"""
from __future__ import annotations

import math
import os

import numpy as np

from posebert_plug.types import VideoInfo

__all__ = ["VideoError", "probe", "iter_frames", "iter_batches", "VideoWriter", "write_compilation"]


class VideoError(ValueError):
    pass


def _open(path):
    import av
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoError(f"{path}: no such video file")
    if os.path.getsize(path) == 0:
        raise VideoError(f"{path}: the file is empty")
    try:
        c = av.open(path)
    except Exception as e:
        raise VideoError(f"{path}: not a readable video ({type(e).__name__}: {e})") from None
    if not c.streams.video:
        c.close()
        raise VideoError(f"{path}: contains no video stream")
    return c


def probe(path) -> VideoInfo:
    """Size, fps and frame count (0 when the container does not say; then ``duration_frames`` bounds it
    from the duration, 0 when that is unknown too) of a video."""
    c = _open(path)
    try:
        s = c.streams.video[0]
        fps = float(s.average_rate or s.guessed_rate or 30)
        w, h = s.codec_context.width, s.codec_context.height
        if not w or not h:
            raise VideoError(f"{path}: video stream has no frame size")
        n = int(s.frames or 0)
        if n == 0 and _is_image_container(c):
            n = _count_packets(c, s)   # a still image renamed as a video: say it has one frame
        info = VideoInfo(int(w), int(h), fps, n)
        if n == 0:
            info.duration_frames = _frames_in_duration(c, s, fps)
        return info
    finally:
        c.close()


def _frames_in_duration(c, s, fps) -> int:
    """An upper bound of the frame count of a container that declares none (MKV, WebM, MPEG-TS): its
    duration times the frame rate, plus a second of margin (variable frame rates); 0 when unknown.
    File adapters drop detections past it, so one corrupt frame number cannot size a track of millions
    of frames (num_frames itself stays 0: it is a count the container declares)."""
    seconds = float(s.duration * s.time_base) if s.duration and s.time_base else (c.duration or 0) / 1e6
    if not math.isfinite(seconds) or seconds <= 0:
        return 0
    return int(math.ceil(seconds * fps)) + int(math.ceil(fps)) + 1


# Demuxers of still images (PNG, JPEG, ...): a "video" read through one of these is a single picture (or an
# image sequence), whose frame count the container never declares.
_IMAGE_DEMUXERS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "gif", "jpegls_pipe")


def _is_image_container(c) -> bool:
    names = set(str(getattr(c.format, "name", "")).split(","))
    return bool(names & set(_IMAGE_DEMUXERS)) or any(n.endswith("_pipe") for n in names)


def _count_packets(c, s, limit: int = 100_000) -> int:
    """Number of video packets (one per frame for image demuxers), read without decoding; 0 if unknown."""
    n = 0
    try:
        for packet in c.demux(s):
            if packet.size:
                n += 1
                if n >= limit:
                    return 0
    except Exception:
        return 0
    return n


def iter_frames(path, start: int = 0, stop: int | None = None, step: int = 1):
    """Yield (frame_index, image (H, W, 3) uint8 RGB). Undecodable frames are skipped
    (their index is not reused); a video with no decodable frame raises VideoError."""
    c = _open(path)
    n_ok = 0
    try:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        idx = -1
        for packet in c.demux(s):
            try:
                frames = packet.decode()
            except Exception:
                idx += 1  # a corrupt packet: its frame stays missing
                continue
            for fr in frames:
                idx += 1
                if idx < start or (idx - start) % step:
                    continue
                if stop is not None and idx >= stop:
                    return
                n_ok += 1
                yield idx, fr.to_ndarray(format="rgb24")
    finally:
        c.close()
    if n_ok == 0 and start == 0:
        raise VideoError(f"{path}: no decodable frame (corrupt or empty video)")


def iter_batches(path, batch_size: int = 16, **kw):
    """Yield (indices list, images list) in batches."""
    idx, imgs = [], []
    for i, im in iter_frames(path, **kw):
        idx.append(i)
        imgs.append(im)
        if len(idx) == batch_size:
            yield idx, imgs
            idx, imgs = [], []
    if idx:
        yield idx, imgs


class VideoWriter:
    """H.264 MP4 writer (PyAV), atomic: frames go to ``<path>.part`` and the file appears on close().

    ``preset``: x264 speed preset; "superfast" keeps encoding a small part of the pipeline's time."""

    def __init__(self, path, width: int, height: int, fps: float = 30.0, crf: int = 23, preset: str = "superfast"):
        import av
        from fractions import Fraction
        self.path = os.fspath(path)
        self.tmp = self.path + ".part.mp4"
        self.c = av.open(self.tmp, "w")
        self.s = self.c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4",
                                   rate=Fraction(fps).limit_denominator(1000))
        self.s.width, self.s.height = width - width % 2, height - height % 2
        self.s.pix_fmt = "yuv420p"
        if self.s.codec_context.name == "libx264":
            self.s.options = {"crf": str(crf), "preset": preset}
        self.frames = 0

    def write(self, image: np.ndarray):
        import av
        im = np.ascontiguousarray(image[: self.s.height, : self.s.width, :3])
        for p in self.s.encode(av.VideoFrame.from_ndarray(im, format="rgb24")):
            self.c.mux(p)
        self.frames += 1

    def close(self):
        for p in self.s.encode():
            self.c.mux(p)
        self.c.close()
        os.replace(self.tmp, self.path)

    def abort(self):
        try:
            self.c.close()
        finally:
            if os.path.exists(self.tmp):
                os.remove(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_compilation(path, segments, size, fps) -> list:
    """Write a video made of segments of real clips and return its cut frames.

    segments: list of (video path, first frame, number of frames, transform) where transform is
    ``None``, ``"mirror"`` (left-right), ``"reverse"`` (played backwards) or ``"zoom"`` (the
    centre half scaled up), or a list of them; size: (W, H) of the result (each frame resized).
    For tests and benchmarks: the cut frames are known exactly."""
    from PIL import Image
    W, H = size
    cuts, n = [], 0
    with VideoWriter(path, W, H, fps) as w:
        for k, (src, first, count, how) in enumerate(segments):
            how = set([how] if isinstance(how, str) else (how or ()))
            imgs = [img for _, img in iter_frames(src, start=first, stop=first + count)]
            if "reverse" in how:
                imgs = imgs[::-1]
            if k:
                cuts.append(n)
            for img in imgs:
                if "zoom" in how:
                    h, ww = img.shape[:2]
                    img = img[h // 4: h - h // 4, ww // 4: ww - ww // 4]
                if "mirror" in how:
                    img = img[:, ::-1]
                if img.shape[1] != W or img.shape[0] != H:
                    img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((W, H), Image.BILINEAR))
                w.write(np.ascontiguousarray(img))
                n += 1
    return cuts
