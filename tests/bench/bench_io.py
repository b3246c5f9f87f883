"""Video decode speed: decord (the candidate, as `models.video.iter_batches` drives it)
against PyAV (the baseline), frames/s decoding every frame of a clip to RGB uint8 arrays.

Clips: a synthetic 256x256, 120-frame H.264 clip written with `write_mp4`, and the real
`vtest.avi` (768x576, 795 frames, MS-MPEG4). Both decoders use their automatic threading;
frames are dropped as they come, so memory stays flat. Also measured: decord's own
`get_batch` API in batches of 32, `read_video` end to end (checks, decode, one array), and
the cost of the isolated probe that guards untrusted uploads. On a shared machine timings
are noisy: the JSON keeps every run, and the figures use the median.
"""

from __future__ import annotations

import av
import decord
import numpy as np

from models.assets import sample_data
from models.video import VideoLimits, iter_batches, probe, read_video, write_mp4
from tests.bench.common import print_table, timeit, write_report

BATCH = 32
TRUSTED = VideoLimits(isolate_probe=False)


def synthetic_frames(frames: int = 120, size: int = 256) -> np.ndarray:
    """A moving textured scene: a gradient background and a bright square crossing it."""
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        out[t, ..., 0] = (xx + 2 * t) % 256
        out[t, ..., 1] = (yy + t) % 256
        out[t, ..., 2] = ((xx ^ yy) + 3 * t) % 256
        x0 = (2 * t) % (size - 48)
        out[t, 100:148, x0:x0 + 48] = 240
    return out


def decode_iter_batches(path: str) -> tuple[int, np.ndarray]:
    count, first = 0, None
    for batch in iter_batches(path, BATCH, limits=TRUSTED):
        first = batch[0] if first is None else first
        count += len(batch)
    return count, first


def decode_get_batch(path: str) -> tuple[int, np.ndarray]:
    reader = decord.VideoReader(path, ctx=decord.cpu(0))
    count, first = 0, None
    for start in range(0, len(reader), BATCH):
        batch = reader.get_batch(list(range(start, min(start + BATCH, len(reader))))).asnumpy()
        first = batch[0] if first is None else first
        count += len(batch)
    return count, first


def decode_pyav(path: str) -> tuple[int, np.ndarray]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads, like decord's automatic threads
        count, first = 0, None
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            first = rgb if first is None else first
            count += 1
    return count, first


def test_bench_io(tmp_path):
    clips = {
        "synthetic_256px": write_mp4(tmp_path / "synthetic.mp4", synthetic_frames(), 30),
        "vtest_avi": sample_data("opencv-doc/vtest.avi"),
    }
    inputs, results, rows = {"batch_frames": BATCH}, {}, []
    for name, path in clips.items():
        info = probe(path, limits=TRUSTED)
        frames_decord, first_decord = decode_iter_batches(str(path))
        frames_pyav, first_pyav = decode_pyav(str(path))
        frames_get_batch = decode_get_batch(str(path))[0]
        assert frames_decord == frames_pyav == frames_get_batch == info.frames, (
            name, frames_decord, frames_pyav, frames_get_batch)
        pixel_diff = float(np.abs(first_decord.astype(int) - first_pyav.astype(int)).mean())

        timings = {
            "decord": timeit(lambda p=str(path): decode_iter_batches(p)),
            "pyav": timeit(lambda p=str(path): decode_pyav(p)),
            "decord_get_batch": timeit(lambda p=str(path): decode_get_batch(p)),
            "read_video": timeit(lambda p=path: read_video(p, limits=TRUSTED)),
        }
        fps = {k: info.frames / t["median_s"] for k, t in timings.items()}
        timings["isolated_probe"] = timeit(lambda p=path: probe(p), repeats=5)  # default limits
        with av.open(str(path)) as container:
            codec = container.streams.video[0].codec_context.name
        inputs[name] = {"path": path.name, "codec": codec, "frames": info.frames,
                        "fps": info.fps, "width": info.width, "height": info.height}
        results[name] = {
            "frames": info.frames,
            **{f"{k}_fps": v for k, v in fps.items()},
            "speedup_decord_vs_pyav": fps["decord"] / fps["pyav"],
            "isolated_probe_s": timings["isolated_probe"]["median_s"],
            "first_frame_mean_abs_diff": pixel_diff,
            "timings": timings,
        }
        rows.append([name.split("_")[0], fps["decord"], fps["pyav"],
                     fps["decord"] / fps["pyav"], fps["decord_get_batch"], fps["read_video"],
                     timings["isolated_probe"]["median_s"]])
    print_table("decode to RGB uint8, frames/s: decord vs PyAV",
                ["clip", "decord", "PyAV", "x PyAV", "get_batch", "read_video", "probe s"],
                rows)
    write_report("io", inputs=inputs,
                 baseline="PyAV (libav, thread_type=AUTO) decoding every frame to rgb24 ndarray",
                 results=results)
    assert all(r["decord_fps"] > 0 and r["pyav_fps"] > 0 for r in results.values())
