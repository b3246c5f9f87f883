"""Video and image I/O: decode with decord, encode H.264 mp4 with ffmpeg (imageio-ffmpeg),
resize with OpenCV.

Every input (a path or raw bytes, e.g. an upload) is checked before any heavy decode: that it
exists, is not empty, is within `VideoLimits`, is the right kind of file (from its magic bytes,
not its name), that an MP4/MOV is complete, and that the decoder can open it: for untrusted
input first in a child process, since decord 0.6.0 takes the whole process down on some
damaged files. Each failure is a typed `InvalidInput` whose message says what is wrong and
what to do. Frames are always uint8 RGB: a clip is (T, H, W, 3), an image (H, W, 3).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import decord
import imageio_ffmpeg
import numpy as np

from models.errors import InvalidInput

# decord logs every ffmpeg complaint on stderr; we turn them into typed errors instead.
decord.logging.set_level(decord.logging.QUIET)

Source = str | os.PathLike | bytes | bytearray | memoryview
Crop = Literal["center", "none"]

_HEAD_BYTES = 512  # enough for every magic number below (MPEG-TS needs byte 188)
_ACCEPTED_VIDEO = "MP4, MOV, AVI, MKV, WebM"
_ACCEPTED_IMAGE = "PNG, JPEG, BMP, WebP, TIFF"
_REENCODE = "re-export it as H.264 MP4 (e.g. `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`)"


# --- errors -------------------------------------------------------------------------------

class VideoError(InvalidInput):
    """A video that cannot be used as given."""


class VideoNotFound(VideoError):
    """The path does not exist or is not a file."""


class EmptyVideo(VideoError):
    """0 bytes, or no video frames (e.g. an audio-only file)."""


class NotAVideo(VideoError):
    """Another kind of file: an image, text, an unknown format."""


class CorruptVideo(VideoError):
    """A video container that is truncated or that the decoder cannot read."""


class VideoTooLarge(VideoError):
    """Over one of the `VideoLimits` (bytes, frames, duration, side)."""


class VideoTooSmall(VideoError):
    """A side under `VideoLimits.min_side`."""


class InvalidFrames(VideoError):
    """Frames handed to the encoder that are not uint8 RGB of a consistent shape."""


class ImageError(InvalidInput):
    """An image that cannot be used as given."""


class ImageNotFound(ImageError):
    """The path does not exist or is not a file."""


class EmptyImage(ImageError):
    """0 bytes."""


class NotAnImage(ImageError):
    """Another kind of file: a video, text, an unknown format."""


class CorruptImage(ImageError):
    """An image file that the decoder cannot read."""


class ImageTooLarge(ImageError):
    """Over `VideoLimits.max_bytes` or `max_side`."""


class ImageTooSmall(ImageError):
    """A side under `VideoLimits.min_side`."""


# --- data ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoLimits:
    """What an input may be at most; checked before decoding. The tighter of `max_frames` and
    `max_duration_s` wins."""

    max_side: int = 4096  # pixels, width or height (also for images)
    # Below this, no person can be found in it and the model's crops degenerate (a 1x1
    # image used to fail inside a stage instead of at the edge).
    min_side: int = 16
    min_frames: int = 2  # a motion; one frame used to fail inside a stage, unnamed
    max_frames: int = 4000
    max_bytes: int = 512 * 1024**2  # also for images
    max_duration_s: float = 600.0
    # Open untrusted videos first in a child process (kept between probes): decord crashes
    # the process on some damaged files. Off for trusted inputs (e.g. curation of known-good clips).
    isolate_probe: bool = True
    probe_timeout_s: float = 30.0


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    width: int
    height: int
    duration_s: float


@dataclass(frozen=True, eq=False)
class Clip:
    """Decoded frames, (T, H, W, 3) uint8 RGB, played at `fps`."""

    frames: np.ndarray
    fps: float

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


# --- reading the source: path or bytes ----------------------------------------------------

@dataclass(frozen=True)
class _Kind:
    """What the caller expects (a video or an image): its error types and wording."""

    noun: str
    accepted: str
    not_found: type[InvalidInput]
    empty: type[InvalidInput]
    too_large: type[InvalidInput]
    wrong_kind: type[InvalidInput]


_VIDEO = _Kind("video", _ACCEPTED_VIDEO, VideoNotFound, EmptyVideo, VideoTooLarge, NotAVideo)
_IMAGE = _Kind("image", _ACCEPTED_IMAGE, ImageNotFound, EmptyImage, ImageTooLarge, NotAnImage)


@dataclass(frozen=True)
class _Media:
    """A checked source: a file that exists, or bytes; not empty, within `max_bytes`."""

    name: str  # for messages: "driving video 'clip.mp4'" or "driving video (upload)"
    path: Path | None
    data: bytes | None
    size: int

    def read_at(self, offset: int, n: int) -> bytes:
        if self.data is not None:
            return self.data[offset:offset + n]
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(n)

    def read_all(self) -> bytes:
        return self.data if self.data is not None else self.path.read_bytes()


def _mib(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB"


def _open_media(src: Source, kind: _Kind, label: str, limits: VideoLimits | None) -> _Media:
    if isinstance(src, bytes | bytearray | memoryview):
        data = bytes(src)
        media = _Media(f"{label} (upload)", None, data, len(data))
    elif isinstance(src, str | os.PathLike):
        path = Path(src)
        name = f"{label} '{path}'"
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise kind.not_found(f"{name} {what}: pass the path of a {kind.noun} file")
        media = _Media(name, path, None, path.stat().st_size)
    else:
        raise TypeError(f"{label} must be a path or bytes, got {type(src).__name__}")
    if media.size == 0:
        raise kind.empty(f"{media.name} is empty (0 bytes): upload the {kind.noun} again, "
                         f"the transfer probably failed")
    if limits is not None and media.size > limits.max_bytes:
        raise kind.too_large(f"{media.name} is {_mib(media.size)}, over the limit of "
                             f"{_mib(limits.max_bytes)}: compress or shorten it")
    return media


def _sniff(head: bytes) -> tuple[str, str] | None:
    """(format, kind) from the magic bytes; kind is "video", "image" or "gif". None if unknown."""
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "MP4/MOV", "video"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI", "video"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "MKV/WebM", "video"
    if head[:3] == b"FLV":
        return "FLV", "video"
    if head[:4] == b"OggS":
        return "Ogg", "video"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "MPEG", "video"
    if head[:1] == b"\x47" and head[188:189] == b"\x47":
        return "MPEG-TS", "video"
    if head[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"):
        return "WMV/ASF", "video"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG", "image"
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG", "image"
    if head[:2] == b"BM":
        return "BMP", "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP", "image"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF", "image"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF", "gif"
    return None


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:  # may also be a multi-byte character cut at the end: fine
        return False
    return all(c.isprintable() or c.isspace() for c in text)


def _check_kind(media: _Media, kind: _Kind) -> str:
    """The media's format, or a typed error when it is not the kind the caller wants."""
    head = media.read_at(0, _HEAD_BYTES)
    found = _sniff(head)
    if found is not None and found[1] == kind.noun:
        return found[0]
    if found is None:
        detected = "text" if _looks_like_text(head) else "unknown format"
    elif found[1] == "gif":
        detected = "GIF animation, not supported"
    else:
        detected = f"{found[0]} {found[1]}"
    raise kind.wrong_kind(f"{media.name} is not a supported {kind.noun} (detected: {detected}): "
                          f"upload one of these {kind.noun} formats: {kind.accepted}")


def _check_mp4_boxes(media: _Media) -> None:
    """Walk the top-level MP4 boxes: a truncated upload ends inside one, and a file without
    `moov` (its index, often written last) cannot be decoded at all."""
    pos, kinds = 0, set()
    while pos + 8 <= media.size:
        header = media.read_at(pos, 16)
        size, box = int.from_bytes(header[:4], "big"), header[4:8].decode("latin-1")
        if size == 1:  # 64-bit size follows the type
            size = int.from_bytes(header[8:16], "big")
        elif size == 0:  # box runs to the end of the file
            size = media.size - pos
        if size < 8 or pos + size > media.size:
            raise CorruptVideo(f"{media.name} is truncated or corrupt (its {box!r} box at byte "
                               f"{pos} needs {size} bytes, the file has {media.size - pos} left): "
                               f"upload the complete file, or {_REENCODE}")
        kinds.add(box)
        pos += size
    if "moov" not in kinds:
        raise CorruptVideo(f"{media.name} has no 'moov' index (an interrupted recording or "
                           f"upload?): upload the complete file, or {_REENCODE}")


# --- video ---------------------------------------------------------------------------------

def _decord_reason(err: BaseException) -> str:
    """decord's message without its timestamps, source locations, failed C++ check and stack
    trace: "[t] a.cc:1: [t] b.cc:2: Check failed: x >= 0 (-1 vs. 0) Error sending packet." ->
    "Error sending packet."."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    first = re.sub(r"^(\[[\d:]+\] \S+:\d+: )+", "", first)
    return re.sub(r"^Check failed: .*?\(-?\d+ vs\. -?\d+\)\s*", "", first) or first


@contextmanager
def _as_file(media: _Media) -> Iterator[Path]:
    """The media as a file path. decord can read bytes (`io.BytesIO`), but its in-memory
    reader segfaults on some damaged inputs (e.g. a truncated AVI) that it reads fine from a
    file. The temp file may go once the reader is open: it keeps its own descriptor."""
    if media.path is not None:
        yield media.path
        return
    with tempfile.NamedTemporaryFile(prefix="mc-video-") as tmp:
        tmp.write(media.data)
        tmp.flush()
        yield Path(tmp.name)


# decord raises RuntimeError when ffmpeg cannot open the input, DECORDError on a failed
# internal check, and asserts that the frame count is positive.
_DECORD_ERRORS = (decord.DECORDError, RuntimeError, AssertionError)
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def _decord_open(path: str) -> tuple[decord.VideoReader, dict]:
    """Open with decord and decode frame 0, which proves the stream is readable."""
    reader = decord.VideoReader(path, ctx=decord.cpu(0))
    height, width = reader[0].shape[:2]
    return reader, {"frames": len(reader), "fps": float(reader.get_avg_fps()),
                    "width": int(width), "height": int(height)}


def _probe_worker_main() -> None:
    """The isolated probe's child: for each JSON path on stdin, one JSON line on stdout with
    the header decord reads, or decord's error."""
    for line in sys.stdin:
        try:
            answer = {"header": _decord_open(json.loads(line))[1]}
        except _DECORD_ERRORS as err:
            answer = {"error": _decord_reason(err)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


class _ProbeWorker:
    """The child process that opens untrusted videos first: decord kills the whole process on
    some damaged files (an AVI header claiming billions of frames ends in std::bad_alloc, some
    broken MP4 headers segfault), which must cost a child, not a server. The child is kept
    between probes: starting a Python child per upload cost ~0.3 s of every request (its
    imports), a kept one answers in milliseconds. A probe that crashes it or runs past its
    timeout costs the child, and the next probe starts a new one."""

    RESTART_EVERY = 1000  # probes: bounds whatever decord might leak in the child

    def __init__(self):
        self._proc: subprocess.Popen | None = None
        self._stderr = None  # the child's stderr, a temporary file read when it fails
        self._owner = 0  # the pid that started it: a forked copy of this object starts its own
        self._probes = 0
        self._lock = threading.Lock()

    def probe(self, path: Path, name: str, timeout_s: float) -> dict:
        with self._lock:
            deadline = time.monotonic() + timeout_s
            proc = self._running()
            self._probes += 1
            try:
                proc.stdin.write(json.dumps(str(path)).encode() + b"\n")
                proc.stdin.flush()
            except BrokenPipeError:
                pass  # it died: read_line sees the end of its output
            line = self._read_line(proc, deadline)
            if line is None:
                self.stop()
                raise CorruptVideo(f"{name} could not be opened within {timeout_s:g} s "
                                   f"(damaged files can make the decoder hang): {_REENCODE}")
            if not line:  # the child is gone
                code, errors = proc.wait(), self._errors()
                self.stop()
                if code < 0:  # killed by a signal: the decoder crashed on this input
                    signame = signal.Signals(-code).name
                    raise CorruptVideo(f"{name} is corrupt: it crashes the decoder ({signame}): "
                                       f"{_REENCODE}")
                raise RuntimeError(f"the isolated video probe failed: {errors}")
        answer = json.loads(line)
        if "error" in answer:
            raise _open_error(name, answer["error"])
        return answer["header"]

    def _running(self) -> subprocess.Popen:
        if (self._proc is not None and self._owner == os.getpid()
                and self._proc.poll() is None and self._probes < self.RESTART_EVERY):
            return self._proc
        self.stop()
        # -I and an explicit path: the child must import this very package, whatever the cwd
        code = (f"import sys; sys.path.insert(0, {str(_PACKAGE_ROOT)!r}); "
                "from models.video import _probe_worker_main; _probe_worker_main()")
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
        self._proc = subprocess.Popen([sys.executable, "-I", "-c", code], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr)
        self._owner, self._probes = os.getpid(), 0
        return self._proc

    @staticmethod
    def _read_line(proc: subprocess.Popen, deadline: float) -> bytes | None:
        """One line of the child's output; b"" if it ended, None past the deadline."""
        fd, line = proc.stdout.fileno(), b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return b""
            line += chunk
        return line

    def _errors(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()[-2000:]

    def stop(self) -> None:
        if self._proc is not None and self._owner == os.getpid():
            self._proc.kill()
            self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stdout, self._stderr):
                with suppress(OSError):  # stdin's unsent path: a broken pipe
                    pipe.close()
        self._proc = None


_PROBE = _ProbeWorker()
atexit.register(_PROBE.stop)


def _open_error(name: str, reason: str) -> VideoError:
    if "cannot find video stream" in reason or "frame count" in reason:
        return EmptyVideo(f"{name} has no video frames (no video stream found: an audio-only, "
                          f"empty or damaged file): upload a clip of at least 1 frame")
    return CorruptVideo(f"{name} cannot be decoded ({reason}): {_REENCODE}")


def _open_video(src: Source, limits: VideoLimits | None, label: str
                ) -> tuple[decord.VideoReader, VideoInfo, str]:
    media = _open_media(src, _VIDEO, label, limits)
    fmt = _check_kind(media, _VIDEO)
    if fmt == "MP4/MOV":
        _check_mp4_boxes(media)
    with _as_file(media) as path:
        if limits is not None and limits.isolate_probe:
            # limits first: decord allocates per frame the header claims when it opens a file
            _checked_info(media.name, _PROBE.probe(path, media.name, limits.probe_timeout_s),
                          limits)
        try:
            reader, header = _decord_open(str(path))
        except _DECORD_ERRORS as err:
            raise _open_error(media.name, _decord_reason(err)) from err
    return reader, _checked_info(media.name, header, limits), media.name


def _checked_info(name: str, header: dict, limits: VideoLimits | None) -> VideoInfo:
    frames, fps = header["frames"], header["fps"]
    if not (math.isfinite(fps) and fps > 0):
        raise CorruptVideo(f"{name} has no valid frame rate ({fps}): re-encode it at a "
                           f"fixed rate (e.g. `ffmpeg -i IN -r 30 OUT.mp4`)")
    info = VideoInfo(frames=frames, fps=fps, width=header["width"], height=header["height"],
                     duration_s=frames / fps)
    if limits is not None:
        _check_video_limits(name, info, limits)
    return info


def _check_video_limits(name: str, info: VideoInfo, limits: VideoLimits) -> None:
    if max(info.width, info.height) > limits.max_side:
        raise VideoTooLarge(f"{name} is {info.width}x{info.height} px, over the limit of "
                            f"{limits.max_side} px a side: downscale it")
    if min(info.width, info.height) < limits.min_side:
        raise VideoTooSmall(f"{name} is {info.width}x{info.height} px, under the smallest "
                            f"side of {limits.min_side} px that motion can be read from: "
                            "upload a larger video")
    if info.frames < limits.min_frames:
        raise VideoTooSmall(f"{name} has {info.frames} frame(s), under the {limits.min_frames} "
                            "a motion needs: send a clip, not a still")
    if info.frames > limits.max_frames:
        raise VideoTooLarge(f"{name} has {info.frames} frames, over the limit of "
                            f"{limits.max_frames}: trim it to at most {limits.max_frames} frames "
                            f"({limits.max_frames / info.fps:.0f} s at {info.fps:g} fps)")
    if info.duration_s > limits.max_duration_s:
        raise VideoTooLarge(f"{name} lasts {info.duration_s:.0f} s, over the limit of "
                            f"{limits.max_duration_s:.0f} s: trim it")


def probe(src: Source, *, limits: VideoLimits | None = VideoLimits(),
          label: str = "video") -> VideoInfo:
    """Frame count, rate and size of a video, after all the checks (pass `limits=None` to
    skip the limits). Decodes at most the first frame."""
    return _open_video(src, limits, label)[1]


def _frame_indices(info: VideoInfo, fps: float | None, max_frames: int | None) -> np.ndarray:
    """Source frame for each output frame: the one showing at time k / fps."""
    if fps is None or math.isclose(fps, info.fps, rel_tol=1e-6):
        indices = np.arange(info.frames)
    else:
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps}")
        step = info.fps / fps
        count = max(1, math.ceil(info.frames / step - 1e-9))
        # the epsilon keeps k * step from landing just below an exact integer
        indices = np.minimum(np.floor(np.arange(count) * step + 1e-6).astype(np.int64),
                             info.frames - 1)
    if max_frames is not None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        indices = indices[:max_frames]
    return indices


@dataclass(frozen=True)
class _Resize:
    """Crop box in the source, then output size and interpolation."""

    box: tuple[int, int, int, int]  # y0, y1, x0, x1
    out_hw: tuple[int, int]
    interpolation: int


def _resize_plan(height: int, width: int, size: int | tuple[int, int] | None,
                 crop: Crop) -> _Resize | None:
    if crop not in ("center", "none"):
        raise ValueError(f"crop must be 'center' or 'none', got {crop!r}")
    box = (0, height, 0, width)
    if size is None:
        return None
    if isinstance(size, int | np.integer):
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        scale = size / min(height, width)
        out_h, out_w = max(1, round(height * scale)), max(1, round(width * scale))
    else:
        out_h, out_w = size
        if out_h < 1 or out_w < 1:
            raise ValueError(f"size must be positive, got {size}")
        if crop == "center":  # largest centred window with the output's aspect ratio
            crop_h = min(height, max(1, round(width * out_h / out_w)))
            crop_w = min(width, max(1, round(height * out_w / out_h)))
            y0, x0 = (height - crop_h) // 2, (width - crop_w) // 2
            box = (y0, y0 + crop_h, x0, x0 + crop_w)
    if box == (0, height, 0, width) and (out_h, out_w) == (height, width):
        return None
    shrinking = out_h <= box[1] - box[0] and out_w <= box[3] - box[2]
    return _Resize(box, (out_h, out_w), cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _apply(plan: _Resize | None, frame: np.ndarray) -> np.ndarray:
    if plan is None:
        return frame
    y0, y1, x0, x1 = plan.box
    return cv2.resize(frame[y0:y1, x0:x1], plan.out_hw[::-1], interpolation=plan.interpolation)


@dataclass
class _Decoding:
    """An opened, checked video, which of its frames to produce, and at what size."""

    reader: decord.VideoReader
    name: str
    indices: np.ndarray  # source frame per output frame, non-decreasing
    resize: _Resize | None
    out_hw: tuple[int, int]
    fps: float  # of the output
    _position: int = field(default=-1, init=False)  # next frame the reader returns; -1: unset
    _last: np.ndarray | None = field(default=None, init=False)

    def fill(self, indices: np.ndarray, out: np.ndarray) -> None:
        """Decode source frames `indices` into `out`, going on from the previous call."""
        index = indices[0]
        try:
            # Scoped to this call, never held across a `yield`: another module may have
            # switched decord's (thread-wide) bridge to torch.
            with decord.bridge._BridgeScope("native"):
                if self._position < 0:
                    self.reader.seek(0)
                    self._position = 0
                # Read on frame by frame (skip_frames over gaps) rather than get_batch: 1.2-2.4x
                # faster on vtest.avi across runs of tests/bench/bench_io.py, and with frames
                # resized one by one, only one full-resolution frame is ever held.
                for i, index in enumerate(indices):
                    if index >= self._position:  # else: the same frame again (higher rate)
                        if index > self._position:
                            self.reader.skip_frames(index - self._position)
                        self._last = _apply(self.resize, self.reader.next().asnumpy())
                        self._position = index + 1
                    out[i] = self._last
        except (*_DECORD_ERRORS, StopIteration) as err:
            reason = ("the stream ends early" if isinstance(err, StopIteration)
                      else _decord_reason(err))
            raise CorruptVideo(f"{self.name} is corrupt: decoding frame {index} failed "
                               f"({reason}): {_REENCODE}") from err

    def batches(self, batch_frames: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self.indices), batch_frames):
            chunk = self.indices[start:start + batch_frames]
            out = np.empty((len(chunk), *self.out_hw, 3), np.uint8)
            self.fill(chunk, out)
            yield out


def _prepare(src: Source, fps: float | None, max_frames: int | None,
             size: int | tuple[int, int] | None, crop: Crop, limits: VideoLimits | None,
             label: str) -> _Decoding:
    reader, info, name = _open_video(src, limits, label)
    resize = _resize_plan(info.height, info.width, size, crop)
    return _Decoding(reader, name, _frame_indices(info, fps, max_frames), resize,
                     resize.out_hw if resize else (info.height, info.width),
                     float(fps or info.fps))


def read_video(src: Source, *, fps: float | None = None, max_frames: int | None = None,
               size: int | tuple[int, int] | None = None, crop: Crop = "center",
               limits: VideoLimits | None = VideoLimits(), label: str = "video") -> Clip:
    """Decode a video (a path or bytes) to a `Clip`.

    fps: resample to this rate by picking, for each output time k / fps, the frame showing
      then (a lower rate drops frames, a higher one repeats them; the speed is kept);
      None keeps the source rate.
    max_frames: keep at most this many (output) frames, from the start.
    size: None keeps the source size; an int scales the shorter side to it (aspect kept);
      (H, W) gives exactly that size, with `crop="center"` cutting the largest centred
      window of that aspect ratio first, or with `crop="none"` stretching the whole frame.
    limits: checked on the source before decoding (None: a trusted input, no checks and no
      isolated probe); `label` names the input in error messages (e.g. "driving video").
    """
    decoding = _prepare(src, fps, max_frames, size, crop, limits, label)
    frames = np.empty((len(decoding.indices), *decoding.out_hw, 3), np.uint8)
    decoding.fill(decoding.indices, frames)
    return Clip(frames, decoding.fps)


def iter_batches(src: Source, batch_frames: int, *, fps: float | None = None,
                 max_frames: int | None = None, size: int | tuple[int, int] | None = None,
                 crop: Crop = "center", limits: VideoLimits | None = VideoLimits(),
                 label: str = "video") -> Iterator[np.ndarray]:
    """Like `read_video`, but yields (B, H, W, 3) uint8 batches of `batch_frames` (the last
    may be shorter), decoding one batch at a time. The input is checked now, not on the first
    `next()`."""
    if batch_frames < 1:
        raise ValueError(f"batch_frames must be at least 1, got {batch_frames}")
    return _prepare(src, fps, max_frames, size, crop, limits, label).batches(batch_frames)


# --- writing -------------------------------------------------------------------------------

def _checked_frames(frames: np.ndarray | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Each frame, after checking it is (H, W, 3) uint8 with the first frame's shape."""
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise InvalidFrames(f"frames must be an array of shape (T, H, W, 3), got shape "
                            f"{frames.shape}: stack the frames along a first time axis")
    first = None
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.dtype != np.uint8:
            raise InvalidFrames(f"frame {i} has dtype {frame.dtype}, expected uint8: convert "
                                f"with (np.clip(x, 0, 1) * 255).astype(np.uint8) from [0, 1] "
                                f"floats")
        if frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
            raise InvalidFrames(f"frame {i} has shape {frame.shape}, expected (H, W, 3) RGB")
        if first is None:
            first = frame.shape
        elif frame.shape != first:
            raise InvalidFrames(f"frame {i} has shape {frame.shape} but frame 0 has {first}: "
                                f"resize every frame to one size")
        yield frame
    if first is None:
        raise InvalidFrames("no frames to write: pass at least 1 frame")


def _pad_even(frame: np.ndarray) -> np.ndarray:
    # yuv420p stores colour at half resolution, so H.264 needs even sides: repeat the edge.
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return np.ascontiguousarray(frame)
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_mp4(path: str | os.PathLike, frames: np.ndarray | Iterable[np.ndarray], fps: float,
              *, quality: float = 7.0, metadata: dict[str, str] | None = None) -> Path:
    """Encode uint8 RGB frames ((T, H, W, 3), or an iterable of (H, W, 3)) to an H.264
    yuv420p mp4 that starts playing before it is fully downloaded (faststart).

    Odd sides are padded by one repeated row/column. `quality` is imageio-ffmpeg's 1..10
    (CRF = 51 * (1 - quality / 10): 7 is CRF 15, visually lossless). The file appears only
    once complete (written beside it, then renamed). `metadata`: container tags (e.g.
    `{"comment": ...}`; mp4 keeps title, comment, artist, description...), read back with
    `read_mp4_metadata`."""
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if not 1 <= quality <= 10:
        raise ValueError(f"quality must be within 1..10, got {quality}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial.mp4")
    writer = None
    try:
        for frame in _checked_frames(frames):
            frame = _pad_even(frame)
            if writer is None:
                writer = imageio_ffmpeg.write_frames(
                    str(partial), (frame.shape[1], frame.shape[0]), fps=fps, codec="libx264",
                    pix_fmt_out="yuv420p", quality=quality, macro_block_size=1,
                    ffmpeg_log_level="error",
                    output_params=["-movflags", "+faststart", *_metadata_args(metadata)])
                writer.send(None)  # start ffmpeg
            writer.send(frame)
        writer.close()
        writer = None
        os.replace(partial, path)
    finally:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
    return path


def encode_mp4(frames: np.ndarray | Iterable[np.ndarray], fps: float, *,
               quality: float = 7.0, metadata: dict[str, str] | None = None) -> bytes:
    """`write_mp4` to bytes (ffmpeg needs a seekable file for mp4, so via a temp file)."""
    with tempfile.TemporaryDirectory(prefix="mc-mp4-") as tmp:
        return write_mp4(Path(tmp) / "clip.mp4", frames, fps, quality=quality,
                         metadata=metadata).read_bytes()


def _metadata_args(metadata: dict[str, str] | None) -> list[str]:
    args = []
    for key, value in (metadata or {}).items():
        if not re.fullmatch(r"[a-z_]+", key) or "\n" in value:
            raise ValueError(f"metadata key {key!r} must be lowercase letters and value one line")
        args += ["-metadata", f"{key}={value}"]
    return args


def read_mp4_metadata(src: str | os.PathLike | bytes) -> dict[str, str]:
    """The container tags of a video file (a path or bytes), via imageio-ffmpeg's ffmpeg."""
    with tempfile.TemporaryDirectory(prefix="mc-meta-") as tmp:
        path = Path(tmp) / "in.mp4"
        if isinstance(src, bytes | bytearray):
            path.write_bytes(src)
        else:
            path = Path(src)
        done = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path),
                               "-f", "ffmetadata", "-"], capture_output=True, text=True,
                              timeout=60)
    if done.returncode != 0:
        raise CorruptVideo(f"cannot read the tags of {path.name}: "
                           f"{done.stderr.strip()[-300:]}")
    tags = {}
    for line in done.stdout.splitlines()[1:]:  # first line: ";FFMETADATA1"
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("[", ";")):
            tags[key] = value.replace("\\=", "=").replace("\\;", ";").replace("\\#", "#")
    return tags


# --- images --------------------------------------------------------------------------------

def _image_header_size(name: str, fmt: str, data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, so that a decompression bomb is refused
    before decoding (and a damaged header without waiting for OpenCV to give up, which takes
    seconds); None for the other formats, checked after decoding."""
    if fmt == "PNG":
        if data[12:16] == b"IHDR" and len(data) >= 24:
            return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    elif fmt == "JPEG":
        pos = 2
        while pos + 9 <= len(data) and data[pos] == 0xFF:
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte before a marker
                pos += 1
            elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                return (int.from_bytes(data[pos + 7:pos + 9], "big"),
                        int.from_bytes(data[pos + 5:pos + 7], "big"))
            else:  # any other segment: skip it by its length
                pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    else:
        return None
    raise CorruptImage(f"{name} is a {fmt} file with a damaged header (no image size found): "
                       f"upload it again, or re-save it as PNG or JPEG")


def _check_image_side(name: str, width: int, height: int, limits: VideoLimits | None) -> None:
    if limits is not None and max(width, height) > limits.max_side:
        raise ImageTooLarge(f"{name} is {width}x{height} px, over the limit of "
                            f"{limits.max_side} px a side: downscale it")
    if limits is not None and min(width, height) < limits.min_side:
        raise ImageTooSmall(f"{name} is {width}x{height} px, under the smallest side of "
                            f"{limits.min_side} px a person can be found in: upload a larger "
                            "image")


def read_image(src: Source, limits: VideoLimits | None = VideoLimits(), *,
               label: str = "image") -> np.ndarray:
    """Decode an image (a path or bytes) to (H, W, 3) uint8 RGB. Alpha is dropped, grey is
    expanded to RGB, EXIF orientation is applied."""
    media = _open_media(src, _IMAGE, label, limits)
    fmt = _check_kind(media, _IMAGE)
    data = media.read_all()
    header = _image_header_size(media.name, fmt, data)
    if header is not None:
        _check_image_side(media.name, *header, limits)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise CorruptImage(f"{media.name} is a {fmt} file that cannot be decoded (truncated or "
                           f"damaged): upload it again, or re-save it as PNG or JPEG")
    _check_image_side(media.name, image.shape[1], image.shape[0], limits)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
