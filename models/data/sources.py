"""Where curated clips come from: the synthetic generator, motion capture, and real videos.

A *job* is a small, picklable description of work (what to render or which file to read);
`make_samples(job, spec)` turns it into dataset samples (see models/data/shards.py) that
curation then scores. Synthetic and mocap jobs render one motion on several characters, so
each job yields a cross-identity group with exact ground truth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np

from models.errors import InvalidInput
from models.video import VideoLimits


@dataclass(frozen=True)
class ClipSpec:
    """Shape of every curated clip (each profile's is in flows/profiles.py)."""

    size: int  # px, square for rendered clips; short side for real video
    frames: int  # 1 + 4k for the causal video VAE
    fps: float


@dataclass(frozen=True)
class SyntheticJob:
    action: str
    intensity: float
    motion_seed: int
    character_seeds: tuple[int, ...]
    camera: str  # a camera move name, or "random"
    split: str = "train"
    source: str = "synthetic"


@dataclass(frozen=True)
class MocapJob:
    bvh_path: str
    start: int  # first frame of the window, at ClipSpec.fps
    character_seeds: tuple[int, ...]
    camera: str
    split: str = "train"
    source: str = "mocap"


@dataclass(frozen=True)
class VideoJob:
    path: str  # a local file (the flow downloads object-store videos first)
    name: str  # stable name of the video (file name or object key)
    max_windows: int = 4
    limits: VideoLimits = VideoLimits()  # untrusted input: size, length and crash guards
    split: str = "train"
    source: str = "video"


Job = SyntheticJob | MocapJob | VideoJob


def sample_key(*parts: object) -> str:
    """A shard-safe key from readable parts ('wave-i0.70-s1', 'syn-3' -> 'wave-i0p70-s1_syn-3')."""
    text = "_".join(str(p) for p in parts)
    return re.sub(r"[^A-Za-z0-9_-]", lambda m: "p" if m.group() == "." else "-", text)


def make_samples(job: Job, spec: ClipSpec) -> list[dict]:
    if isinstance(job, SyntheticJob | MocapJob):
        return _rendered_group(job, spec)
    if isinstance(job, VideoJob):
        return _video_windows(job, spec)
    raise InvalidInput(f"unknown job type {type(job).__name__}")


def _rendered_group(job: SyntheticJob | MocapJob, spec: ClipSpec) -> list[dict]:
    from models.synthetic import make_motion, motion_from_bvh, render_cross_identity
    from models.synthetic.character import sample_character

    if isinstance(job, SyntheticJob):
        motion = make_motion(job.action, frames=spec.frames, fps=spec.fps,
                             intensity=job.intensity, seed=job.motion_seed)
    else:
        motion = motion_from_bvh(job.bvh_path, fps=spec.fps).crop(spec.frames, job.start)
    characters = [sample_character(seed) for seed in job.character_seeds]
    clips = render_cross_identity(motion, characters, size=spec.size, camera=job.camera,
                                  seed=job.character_seeds[0])
    samples = []
    for clip in clips:
        camera = np.stack([clip.camera.pan_x, clip.camera.pan_y, clip.camera.zoom], 1)
        annotations = clip.annotations()
        annotations.pop("camera")  # the per-frame path is stored as an array below
        samples.append({
            "key": sample_key(clip.motion_id, clip.identity_id),
            "frames": clip.frames,
            "keypoints": clip.keypoints,
            "references": clip.reference_image[None],
            "reference_keypoints": clip.reference_keypoints[None],
            "camera": camera.astype(np.float32),
            "annotations": {**annotations, "camera_path": clip.camera.move,
                            "character": clip.character.describe(),
                            "source": job.source, "split": job.split},
        })
    return samples


def _video_windows(job: VideoJob, spec: ClipSpec) -> list[dict]:
    from models.motion import HolisticExtractor

    windows = video_windows(job, spec)
    with HolisticExtractor() as extractor:
        return [extract_keypoints(window, spec, extractor) for window in windows]


def video_windows(job: VideoJob, spec: ClipSpec) -> list[dict]:
    """Up to `max_windows` windows of `spec.frames` frames, spread over the video, as samples
    whose frames are still at the source resolution and whose keypoints are not extracted yet
    (`extract_keypoints` finishes them). The reference image will be the window's first frame."""
    from models.video import iter_batches

    windows = [w for w in iter_batches(job.path, spec.frames, fps=spec.fps, label=job.name,
                                       limits=job.limits) if len(w) == spec.frames]
    if not windows:
        raise InvalidInput(f"video {job.name!r} is shorter than one clip of {spec.frames} "
                           f"frames at {spec.fps:g} fps")
    picks = np.unique(np.linspace(0, len(windows) - 1, min(job.max_windows, len(windows)))
                      .round().astype(int))
    stem = sample_key(job.name.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    return [{"key": sample_key(stem, f"w{index}"), "frames": windows[index], "keypoints": None,
             "annotations": {"identity_id": f"video-{stem}", "motion_id": f"{stem}@{index}",
                             "source": job.source, "split": job.split, "video": job.name,
                             "fps": spec.fps}}
            for index in picks]


def extract_keypoints(window: dict, spec: ClipSpec, extractor) -> dict:
    """Body, face and hands of a `video_windows` sample from MediaPipe at the source
    resolution (small people need the pixels), then its frames downscaled to `spec.size` on
    the short side. Keypoints stay None when no person is found: curation drops the clip
    with that reason."""
    from models.motion import NoPersonFound

    try:
        keypoints = extractor.extract(window["frames"])
    except NoPersonFound:
        keypoints = None
    frames = _resize_short_side(window["frames"], spec.size)
    return {**window, "frames": frames, "keypoints": keypoints,
            "references": frames[:1].copy(),
            "reference_keypoints": None if keypoints is None else keypoints[:1].copy()}


def _resize_short_side(frames: np.ndarray, side: int) -> np.ndarray:
    h, w = frames.shape[1:3]
    scale = side / min(h, w)
    if scale >= 1:
        return frames
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
