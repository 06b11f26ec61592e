"""Frames in and out of LeRobot's video and image features.

Reading: frames decoded and fitted to the store's square size (centre crop or black padding), data
timestamps matched to decoded frames as LeRobot queries them (video_utils.decode_video_frames_pyav,
nearest frame within tolerance_s), and image columns decoded. Writing: the encoder settings of an
export and the info block of its video feature (video_utils.get_video_info).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from w4rl_core.data.lerobot.layout import _Problems
from w4rl_core.data.lerobot.metadata import _EpisodeRef


def _fit_square(image: Image.Image, size: int, fit: str) -> np.ndarray:
    """A frame as a (size, size, 3) uint8 square: centre-cropped or padded with black, never squashed.
    PIL resizes because its filters widen with the scale factor (antialiased downscaling) and work on
    uint8 frame by frame; torch's interpolate would need a float copy of the whole episode."""
    w, h = image.size
    if fit == "crop" and w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    elif fit == "pad" and w != h:
        side = max(w, h)
        canvas = Image.new("RGB", (side, side))
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        image = canvas
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _decode_video(path: Path, size: int, fit: str) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of a video file with its presentation time in seconds (as decode_video_frames_pyav
    computes it), fitted to the store's size as it is decoded so a file is never held at full size."""
    times, frames = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            times.append(float(frame.pts * stream.time_base))
            frames.append(_fit_square(frame.to_image(), size, fit))
    if not frames:
        return np.zeros(0), np.zeros((0, size, size, 3), np.uint8)
    order = np.argsort(times, kind="stable")
    return np.asarray(times, dtype=np.float64)[order], np.stack(frames)[order]


def _match_frames(ref: _EpisodeRef, timestamps: np.ndarray, times: np.ndarray, fps: float, tol: float,
                  problems: _Problems, camera: str) -> np.ndarray | None:
    """Indices into the decoded frames for each data timestamp, as LeRobot queries them
    (from_timestamp + timestamp, nearest frame, within tolerance); None if they do not all match."""
    n = len(timestamps)
    start = ref.from_ts - tol
    # A frame belongs to the episode when it starts in [from, to); half a frame of slack absorbs
    # durations that muxers round.
    end = np.inf if ref.to_ts is None else ref.to_ts - 0.5 / fps
    count = int(((times >= start) & (times < end)).sum())
    span = "the file" if ref.to_ts is None else f"[{ref.from_ts:.4f}, {ref.to_ts:.4f}) s"
    ok = True
    if count != n:
        problems.add(ref.video_file, ref.index, camera,
                     f"{count} video frames in {span}, {ref.data_file} has {n} timestamps")
        ok = False
    if not len(times):
        return None
    query = ref.from_ts + timestamps.astype(np.float64)
    right = np.clip(np.searchsorted(times, query), 0, len(times) - 1)
    left = np.clip(right - 1, 0, len(times) - 1)
    nearest = np.where(np.abs(times[left] - query) <= np.abs(times[right] - query), left, right)
    dist = np.abs(times[nearest] - query)
    bad = np.nonzero(~(dist <= tol))[0]
    if len(bad):
        k = int(bad[0])
        problems.add(ref.video_file, ref.index, "timestamp",
                     f"{len(bad)} of {n} timestamps have no video frame within {tol} s (first: frame {k} at "
                     f"{query[k]:.6f} s, nearest video frame at {times[nearest[k]]:.6f} s)")
        ok = False
    return nearest if ok else None


def _decode_images(cells: list[Any], root: Path, size: int, fit: str) -> np.ndarray:
    """A LeRobot image column (HF Image structs: embedded bytes, else a path) as fitted frames."""
    frames = []
    for cell in cells:
        raw = cell.get("bytes") if isinstance(cell, dict) else None
        source = io.BytesIO(raw) if raw else root / str(cell.get("path") if isinstance(cell, dict) else cell)
        with Image.open(source) as image:
            frames.append(_fit_square(image.convert("RGB"), size, fit))
    return np.stack(frames)


@dataclass(frozen=True)
class _VideoEncoding:
    codec: str
    pix_fmt: str
    options: dict[str, str]
    info: dict[str, Any]  # LeRobot's encoder-derived video.* entries

    @classmethod
    def choose(cls, codec: str, crf: int | float, lossless: bool) -> _VideoEncoding:
        if lossless:
            # Exact RGB in mp4: x264's RGB mode at crf 0 (decoded as gbrp, a permutation of rgb24).
            # yuv444p at qp 0 is lossless in YUV but not after the RGB<->YUV conversions; ffv1 in mp4
            # is not something players (nor torchcodec) expect.
            codec, pix_fmt, options = "libx264rgb", "rgb24", {"crf": "0", "g": "2"}
        else:
            codec = {"h264": "libx264", "av1": "libsvtav1"}.get(codec, codec)
            pix_fmt = "yuv420p"  # LeRobot's default (VideoEncoderConfig)
            options = {"g": "2", "crf": str(crf)}  # g=2: LeRobot's keyframe interval, for random access
            if codec == "libsvtav1":
                options["preset"] = "12"  # LIBSVTAV1_DEFAULT_PRESET
        if codec not in av.codecs_available:
            raise ValueError(f"video codec {codec!r} is not in this PyAV build")
        try:
            av.Codec(codec, "w")
        except (av.error.FFmpegError, ValueError) as err:
            raise ValueError(f"{codec!r} is not a video encoder here: {err}") from err
        crf_value = float(options["crf"])
        info = {"video.g": 2, "video.crf": int(crf_value) if crf_value.is_integer() else crf_value,
                "video.preset": int(options["preset"]) if "preset" in options else None, "video.fast_decode": 0,
                "video.video_backend": "pyav", "video.extra_options": {}}
        return cls(codec, pix_fmt, options, info)


def _video_info(path: Path, encoding: _VideoEncoding) -> dict[str, Any]:
    """The info block of a video feature, probed from the file as get_video_info does."""
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        probed = {"video.height": s.height, "video.width": s.width, "video.codec": s.codec.canonical_name,
                  "video.pix_fmt": s.pix_fmt, "video.fps": int(s.base_rate), "video.channels": 3}
    return {**probed, **encoding.info, "is_depth_map": False, "has_audio": False}
