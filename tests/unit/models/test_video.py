"""Video and image I/O: round trips through real H.264, resampling, resizing, batching, and
every kind of bad input, each answered by a typed error with a useful message."""

from __future__ import annotations

import dataclasses
import subprocess
from contextlib import contextmanager

import cv2
import decord
import imageio_ffmpeg
import numpy as np
import pytest

from models.assets import sample_data
from models.errors import InvalidInput
from models.video import (
    Clip,
    CorruptImage,
    CorruptVideo,
    EmptyImage,
    EmptyVideo,
    ImageNotFound,
    ImageTooLarge,
    ImageTooSmall,
    InvalidFrames,
    NotAnImage,
    NotAVideo,
    VideoError,
    VideoInfo,
    VideoLimits,
    VideoNotFound,
    VideoTooLarge,
    VideoTooSmall,
    encode_mp4,
    iter_batches,
    probe,
    read_image,
    read_video,
    write_mp4,
)

# Inputs made by the tests themselves are trusted: skip the isolated probe (~0.3 s each).
# Tests of untrusted input keep the default limits, which isolate it.
TRUSTED = VideoLimits(isolate_probe=False)
T, H, W, FPS = 24, 48, 64, 12.0


def grey_levels(count: int = T) -> np.ndarray:
    """Frame k is a flat grey of level 10 + 8k: which source frame came out is readable."""
    levels = 10 + 8 * np.arange(count, dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, H, W, 3)).copy()


def textured(count: int) -> np.ndarray:
    """Random 4x4-pixel blocks, new every frame: hard to compress."""
    blocks = np.random.default_rng(0).integers(0, 255, (count, H // 4, W // 4, 3), np.uint8)
    return blocks.repeat(4, axis=1).repeat(4, axis=2)


def levels_of(frames: np.ndarray) -> np.ndarray:
    """Back from decoded frames to source frame indices."""
    return np.round((frames.mean(axis=(1, 2, 3)) - 10) / 8).astype(int)


@contextmanager
def raises(exc: type[Exception], *fragments: str):
    """Assert the error type and that its message contains every fragment."""
    with pytest.raises(exc) as info:
        yield info
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    return write_mp4(tmp_path_factory.mktemp("video") / "grey.mp4", grey_levels(), FPS)


@pytest.fixture(scope="module")
def clip_bytes(clip_path):
    return clip_path.read_bytes()


# --- round trips ----------------------------------------------------------------------------

def test_round_trip_keeps_frames_size_rate_and_pixels(clip_path):
    clip = read_video(clip_path, limits=TRUSTED)
    assert isinstance(clip, Clip)
    assert clip.frames.shape == (T, H, W, 3) and clip.frames.dtype == np.uint8
    assert clip.fps == FPS and clip.duration_s == pytest.approx(T / FPS)
    np.testing.assert_allclose(clip.frames.mean(axis=(1, 2, 3)), grey_levels().mean(axis=(1, 2, 3)),
                               atol=2)
    assert probe(clip_path, limits=TRUSTED) == VideoInfo(frames=T, fps=FPS, width=W, height=H,
                                                         duration_s=T / FPS)


def test_colours_stay_rgb(tmp_path):
    red = np.zeros((3, H, W, 3), np.uint8)
    red[..., 0] = 200
    frames = read_video(encode_mp4(red, FPS), limits=TRUSTED).frames
    np.testing.assert_allclose(frames.mean(axis=(0, 1, 2)), [200, 0, 0], atol=4)


def test_bytes_input_decodes_like_the_file(clip_path, clip_bytes):
    from_bytes = read_video(clip_bytes, limits=TRUSTED)
    np.testing.assert_array_equal(from_bytes.frames, read_video(clip_path, limits=TRUSTED).frames)
    assert probe(bytearray(clip_bytes), limits=TRUSTED).frames == T


def test_odd_sides_are_padded_and_iterables_accepted(tmp_path):
    frames = [np.full((31, 45, 3), 120, np.uint8) for _ in range(4)]  # a list, odd sides
    clip = read_video(write_mp4(tmp_path / "sub" / "odd.mp4", iter(frames), 8), limits=TRUSTED)
    assert clip.frames.shape == (4, 32, 46, 3)
    np.testing.assert_allclose(clip.frames.mean(), 120, atol=2)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["odd.mp4"]  # no partial file left


def test_quality_trades_size():
    frames = textured(8)
    assert len(encode_mp4(frames, FPS, quality=3)) < len(encode_mp4(frames, FPS, quality=9))


# --- resampling, resizing, batching -------------------------------------------------------

@pytest.mark.parametrize(("fps", "expected"), [
    (6.0, list(range(0, T, 2))),                      # half rate: every other frame
    (4.0, list(range(0, T, 3))),
    (24.0, [k // 2 for k in range(2 * T)]),           # double rate: each frame twice
    (5.0, [int(k * 12 / 5 + 1e-6) for k in range(10)]),  # 2.4 source frames per output frame
])
def test_fps_resampling_picks_the_frame_showing_at_each_time(clip_path, fps, expected):
    clip = read_video(clip_path, fps=fps, limits=TRUSTED)
    assert clip.fps == fps
    assert levels_of(clip.frames).tolist() == expected


def test_max_frames_counts_output_frames(clip_path):
    assert levels_of(read_video(clip_path, max_frames=5, limits=TRUSTED).frames).tolist() == [
        0, 1, 2, 3, 4]
    assert levels_of(read_video(clip_path, fps=6, max_frames=3, limits=TRUSTED).frames
                     ).tolist() == [0, 2, 4]


def test_int_size_scales_the_shorter_side(clip_path):
    assert read_video(clip_path, size=24, limits=TRUSTED).frames.shape == (T, 24, 32, 3)
    assert read_video(clip_path, size=96, limits=TRUSTED).frames.shape == (T, 96, 128, 3)


@pytest.fixture(scope="module")
def bands_path(tmp_path_factory):
    """64x128: red outer quarters, green centre half."""
    frames = np.zeros((2, 64, 128, 3), np.uint8)
    frames[..., 0] = 200
    frames[:, :, 32:96] = (0, 200, 0)
    return write_mp4(tmp_path_factory.mktemp("bands") / "bands.mp4", frames, FPS)


def test_center_crop_keeps_the_middle_and_none_stretches(bands_path):
    cropped = read_video(bands_path, size=(32, 32), limits=TRUSTED).frames
    assert cropped.shape == (2, 32, 32, 3)
    assert cropped[..., 1].min() > 150 and cropped[..., 0].max() < 60  # all green
    stretched = read_video(bands_path, size=(32, 32), crop="none", limits=TRUSTED).frames
    assert stretched.shape == (2, 32, 32, 3)
    assert stretched[:, :, :4, 0].min() > 150 and stretched[:, :, 14:18, 1].min() > 150


def test_iter_batches_equals_read_video(clip_path):
    options = {"fps": 6.0, "size": (24, 24), "limits": TRUSTED}
    batches = list(iter_batches(clip_path, 5, **options))
    assert [len(b) for b in batches] == [5, 5, 2]
    np.testing.assert_array_equal(np.concatenate(batches), read_video(clip_path, **options).frames)


def test_iter_batches_checks_input_before_the_first_batch(tmp_path):
    with raises(VideoNotFound, "does not exist"):
        iter_batches(tmp_path / "missing.mp4", 8)  # no next(): the call itself raises
    with pytest.raises(ValueError, match="batch_frames"):
        iter_batches(tmp_path / "missing.mp4", 0)


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"fps": 0}, "fps"), ({"fps": float("nan")}, "fps"), ({"max_frames": 0}, "max_frames"),
    ({"size": 0}, "size"), ({"size": (32, 0)}, "size"), ({"crop": "left"}, "crop"),
])
def test_bad_options_are_value_errors(clip_path, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        read_video(clip_path, limits=TRUSTED, **kwargs)


def test_real_video_vtest_avi():
    path = sample_data("opencv-doc/vtest.avi")
    assert probe(path) == VideoInfo(frames=795, fps=10.0, width=768, height=576, duration_s=79.5)
    clip = read_video(path, max_frames=3, size=(64, 96))
    assert clip.frames.shape == (3, 64, 96, 3) and clip.fps == 10.0
    assert clip.frames.std() > 20  # real content, not a flat frame
    # reading on with skipped frames gives exactly what decord's random access gives
    halved = read_video(path, fps=5, max_frames=3, limits=TRUSTED).frames
    assert halved.shape == (3, 576, 768, 3)
    expected = decord.VideoReader(str(path)).get_batch([0, 2, 4]).asnumpy()
    np.testing.assert_array_equal(halved, expected)
    assert not np.array_equal(halved[0], halved[1])  # people walk


# --- bad videos -----------------------------------------------------------------------------

def test_missing_path_and_directory(tmp_path):
    with raises(VideoNotFound, "does not exist", "pass the path of a video file"):
        read_video(tmp_path / "nope.mp4")
    with raises(VideoNotFound, "is a directory"):
        probe(tmp_path)


def test_empty_file_and_empty_bytes(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with raises(EmptyVideo, "0 bytes", "upload the video again"):
        read_video(tmp_path / "empty.mp4")
    with raises(EmptyVideo, "driving video (upload) is empty"):
        read_video(b"", label="driving video")


def test_over_max_bytes_is_refused_before_decoding(clip_bytes):
    with raises(VideoTooLarge, "over the limit of 0.0 MiB", "compress or shorten it"):
        read_video(clip_bytes, limits=VideoLimits(max_bytes=1000))


@pytest.mark.parametrize(("data", "fragment"), [
    (cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes(), "detected: PNG image"),
    (cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes(), "detected: JPEG image"),
    (b"GIF89a" + bytes(100), "GIF animation, not supported"),
    (b"name,frames\nclip.mp4,24\n" * 20, "detected: text"),
    (np.random.default_rng(1).bytes(4096), "detected: unknown format"),
])
def test_not_a_video(tmp_path, data, fragment):
    path = tmp_path / "upload.mp4"  # the name lies; the content decides
    path.write_bytes(data)
    for src in (path, data):
        with raises(NotAVideo, fragment, "upload one of these video formats: MP4"):
            read_video(src)


def test_truncated_mp4(clip_bytes):
    with raises(CorruptVideo, "truncated or corrupt", "'mdat' box", "upload the complete file"):
        read_video(clip_bytes[: len(clip_bytes) // 2])


def test_mp4_without_index(clip_bytes):
    ftyp_size = int.from_bytes(clip_bytes[:4], "big")
    no_moov = clip_bytes[:ftyp_size] + (16).to_bytes(4, "big") + b"mdat" + bytes(8)
    with raises(CorruptVideo, "no 'moov' index", "ffmpeg -i IN -c:v libx264"):
        read_video(no_moov)


def with_garbage_in(data: bytes, box: bytes, keep: float = 0.0) -> bytes:
    """`data` with the payload of its top-level `box` replaced by random bytes after the
    first `keep` fraction (sizes kept, so the container structure still checks out)."""
    pos = 0
    while data[pos + 4:pos + 8] != box:
        pos += int.from_bytes(data[pos:pos + 4], "big")
    end = pos + int.from_bytes(data[pos:pos + 4], "big")
    start = pos + 8 + int((end - pos - 8) * keep)
    return data[:start] + np.random.default_rng(2).bytes(end - start) + data[end:]


@pytest.mark.parametrize("isolate", [True, False])
@pytest.mark.parametrize(("box", "exc", "fragment"), [
    (b"mdat", CorruptVideo, "cannot be decoded"),  # the index is fine, the frames are noise
    (b"moov", EmptyVideo, "no video stream found"),  # no readable track at all
])
def test_garbage_inside_valid_boxes(clip_bytes, isolate, box, exc, fragment):
    with raises(exc, fragment):
        read_video(with_garbage_in(clip_bytes, box), limits=VideoLimits(isolate_probe=isolate))


def test_damage_past_the_first_frame():
    damaged = with_garbage_in(encode_mp4(textured(24), FPS), b"mdat", keep=0.5)
    # decord decodes ahead on a worker thread, so the damage surfaces when the file is opened
    # or a few frames into decoding, depending on timing: a CorruptVideo either way.
    with raises(CorruptVideo, "re-export it"):
        read_video(damaged, limits=TRUSTED)
    with raises(CorruptVideo, "re-export it"):
        list(iter_batches(damaged, 4, limits=TRUSTED))


@pytest.mark.parametrize("isolate", [True, False])
def test_zero_frames(tmp_path, isolate):
    path = tmp_path / "zero.mp4"
    writer = imageio_ffmpeg.write_frames(str(path), (W, H), macro_block_size=1,
                                         ffmpeg_log_level="quiet")
    writer.send(None)
    writer.close()  # ffmpeg writes a container with no video frames
    with raises(EmptyVideo, "no video frames", "upload a clip of at least 1 frame"):
        read_video(path, limits=VideoLimits(isolate_probe=isolate))


def test_audio_only(tmp_path):
    path = tmp_path / "sine.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "quiet", "-f", "lavfi", "-i",
                    "sine=d=0.5", str(path)], check=True)
    with raises(EmptyVideo, "no video stream", "audio-only"):
        probe(path, limits=TRUSTED)


@pytest.mark.parametrize(("limits", "fragments"), [
    (VideoLimits(max_frames=10), ["has 24 frames", "limit of 10", "trim it to at most 10"]),
    (VideoLimits(max_duration_s=1.5), ["lasts 2 s", "limit of 2 s", "trim it"]),
    (VideoLimits(max_side=32), ["64x48 px", "limit of 32 px", "downscale it"]),
])
@pytest.mark.parametrize("isolate", [True, False])
def test_over_limits(clip_path, limits, fragments, isolate):
    limits = dataclasses.replace(limits, isolate_probe=isolate)
    with raises(VideoTooLarge, *fragments):
        read_video(clip_path, limits=limits)
    assert probe(clip_path, limits=None).frames == T  # no limits: a trusted caller


@pytest.fixture(scope="module")
def decoder_killer() -> bytes:
    """vtest.avi whose AVI header claims 2.5 billion frames: decord 0.6.0 dies of
    std::bad_alloc (SIGABRT) opening it, taking the whole process with it."""
    data = bytearray(sample_data("opencv-doc/vtest.avi").read_bytes()[:200_000])
    assert data[140:144] == (795).to_bytes(4, "little")  # the stream's frame count
    data[143] = 0x98
    return bytes(data)


def test_decoder_crash_is_contained(decoder_killer, clip_bytes):
    from models.video import _PROBE

    read_video(clip_bytes)
    child = _PROBE._proc.pid
    read_video(clip_bytes)
    assert _PROBE._proc.pid == child  # kept between probes: no Python start per upload
    with raises(CorruptVideo, "crashes the decoder (SIGABRT)", "re-export it"):
        read_video(decoder_killer)
    assert _PROBE._proc is None  # the crash cost the child ...
    assert len(read_video(clip_bytes).frames) == T  # ... and the next upload gets a new one
    assert _PROBE._proc.pid != child


def test_a_hanging_probe_is_stopped(clip_path):
    with raises(CorruptVideo, "could not be opened within 0.001 s"):
        probe(clip_path, limits=VideoLimits(probe_timeout_s=0.001))


@pytest.mark.parametrize("exc", [VideoNotFound, EmptyVideo, NotAVideo, CorruptVideo,
                                 VideoTooLarge, InvalidFrames, ImageNotFound, EmptyImage,
                                 NotAnImage, CorruptImage, ImageTooLarge])
def test_errors_are_invalid_input(exc):
    assert issubclass(exc, InvalidInput) and issubclass(exc, ValueError)


def test_fuzzed_uploads_never_crash(clip_bytes):
    """Random damage to a real clip: each upload decodes or raises a VideoError; the process
    (this test) survives."""
    rng = np.random.default_rng(3)
    outcomes = []
    for case in range(6):
        data = bytearray(clip_bytes)
        if case % 2:  # overwrite a span anywhere, headers included
            start = int(rng.integers(0, len(data)))
            data[start:start + 300] = rng.bytes(len(data[start:start + 300]))
        else:  # flip bytes
            for pos in rng.integers(0, len(data), 20):
                data[pos] = int(rng.integers(256))
        try:
            outcomes.append(read_video(bytes(data), max_frames=8).frames.shape[0])
        except VideoError as err:
            outcomes.append(type(err).__name__)
    # Which late damage surfaces is a race with decord's read-ahead thread; whether the
    # process survives is not.
    assert all(o == 8 or o in ("CorruptVideo", "EmptyVideo", "NotAVideo") for o in outcomes)
    assert "CorruptVideo" in outcomes, outcomes


# --- writing --------------------------------------------------------------------------------

@pytest.mark.parametrize(("frames", "fragments"), [
    (np.zeros((2, 8, 8, 3), np.float32), ["dtype float32", "expected uint8", "astype(np.uint8)"]),
    (np.zeros((8, 8, 3), np.uint8), ["shape (T, H, W, 3)", "got shape (8, 8, 3)"]),
    (np.zeros((2, 8, 8, 4), np.uint8), ["shape (8, 8, 4)", "expected (H, W, 3) RGB"]),
    ([], ["no frames to write", "at least 1 frame"]),
    ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)],
     ["frame 1 has shape (8, 10, 3)", "resize every frame"]),
])
def test_bad_frames_are_refused_and_leave_no_file(tmp_path, frames, fragments):
    with raises(InvalidFrames, *fragments):
        write_mp4(tmp_path / "out.mp4", frames, FPS)
    assert list(tmp_path.iterdir()) == []


def test_bad_fps_and_quality(tmp_path):
    frames = grey_levels(2)
    with pytest.raises(ValueError, match="fps"):
        encode_mp4(frames, 0)
    with pytest.raises(ValueError, match="quality"):
        encode_mp4(frames, FPS, quality=11)


# --- images ---------------------------------------------------------------------------------

def test_read_image_png_jpeg_grey_and_path(tmp_path):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[..., 0], rgb[16:, :, 2] = 250, 90  # edge on JPEG's 16-pixel blocks: no ringing
    png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    np.testing.assert_array_equal(read_image(png), rgb)
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    decoded = read_image(jpeg).astype(int)  # lossy, and chroma blurs across the edge
    for rows in (slice(0, 12), slice(20, 32)):
        np.testing.assert_allclose(decoded[rows], rgb[rows], atol=6)
    grey = cv2.imencode(".png", np.full((16, 20), 77, np.uint8))[1].tobytes()
    assert read_image(grey).shape == (16, 20, 3) and (read_image(grey) == 77).all()
    photo = read_image(sample_data("opencv-doc/basketball1.png"))
    assert photo.shape == (480, 640, 3) and photo.dtype == np.uint8


def test_image_errors(tmp_path, clip_bytes):
    png = cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))[1].tobytes()
    (tmp_path / "empty.png").write_bytes(b"")
    cases = [
        (tmp_path / "nope.png", ImageNotFound, ["does not exist"]),
        (tmp_path / "empty.png", EmptyImage, ["0 bytes"]),
        (clip_bytes, NotAnImage, ["detected: MP4/MOV video", "PNG, JPEG"]),
        (b"hello\n" * 10, NotAnImage, ["detected: text"]),
        (png[: len(png) // 2], CorruptImage, ["cannot be decoded", "re-save it as PNG"]),
        (png[:8] + b"x" * 100, CorruptImage, ["damaged header"]),
        (png[:8] + bytes(4), CorruptImage, ["damaged header"]),
        (b"\xff\xd8\xff" + bytes(40), CorruptImage, ["JPEG file with a damaged header"]),
    ]
    for src, exc, fragments in cases:
        with raises(exc, *fragments):
            read_image(src, label="reference image")


def test_image_limits_checked_from_the_header(tmp_path):
    small = VideoLimits(max_side=32)
    for ext in (".png", ".jpg", ".bmp"):  # PNG/JPEG from the header, BMP after decoding
        data = cv2.imencode(ext, np.zeros((48, 64, 3), np.uint8))[1].tobytes()
        with raises(ImageTooLarge, "64x48 px", "limit of 32 px", "downscale it"):
            read_image(data, small)
    # a header claiming 100000 x 100000 is refused at once, never handed to the decoder
    bomb = bytearray(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    bomb[16:24] = (100_000).to_bytes(4, "big") * 2
    with raises(ImageTooLarge, "100000x100000 px"):
        read_image(bytes(bomb))
    with raises(ImageTooLarge, "MiB"):
        read_image(bytes(bomb), VideoLimits(max_bytes=10))


def test_degenerate_sides_are_refused_at_the_edge():
    """A 1x1 reference (it used to fail inside a serving stage as INTERNAL) or a 2-px strip
    is refused when read, saying what is wrong; so is a video too small to read motion from."""
    for shape in ((1, 1, 3), (2, 400, 3), (15, 15, 3)):
        data = cv2.imencode(".png", np.full(shape, 128, np.uint8))[1].tobytes()
        with raises(ImageTooSmall, f"{shape[1]}x{shape[0]} px", "smallest side of 16 px"):
            read_image(data, label="reference image")
    read_image(cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))[1].tobytes())  # the edge
    tiny = encode_mp4(np.zeros((4, 8, 8, 3), np.uint8), FPS)
    with raises(VideoTooSmall, "8x8 px", "smallest side of 16 px"):
        read_video(tiny)
