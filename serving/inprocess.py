"""The served pipeline without Triton: the same stages as the repository's models
(decode + checks, motion, identity, prompt enhancer, anchored long-video generation,
watermark, mp4), called in one process on the same repository folder, with the prompt
rewritten beside motion extraction as motion_control does. The benchmark
measures Triton's overhead against it; it is also a debugging aid (`python -m pdb`).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from flows.settings import Settings
from models.extraction import extract_motion, reference_identity_of
from models.long_video import generate_long
from models.prompt import PromptEnhancer, camera_path, motion_caption
from models.video import read_image, read_video
from models.watermark import publishable_mp4
from serving.limits import (
    check_intensity,
    check_prompt,
    check_seed,
    image_limits,
    video_limits,
)
from serving.weights import load_served_pipeline


class InProcessAnimator:
    def __init__(self, settings: Settings, repository: Path):
        self.settings = settings
        torch.set_num_threads(settings.serve.torch_threads)  # as the server's processes
        self.pipeline, self.provenance = load_served_pipeline(
            Path(repository) / "student_dit" / "1", decode_dtype=settings.serve.decode_dtype)
        self.enhancer = PromptEnhancer(Path(repository) / "prompt_enhancer" / "1" /
                                       "smollm2.gguf",
                                       max_new_tokens=settings.serve.prompt_max_new_tokens,
                                       threads=settings.serve.torch_threads)
        self.timings: dict[str, float] = {}
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="prompt")

    def __call__(self, reference: bytes, driving: bytes, prompt: str = "", *,
                 subject_library: list[bytes] | None = None, seed: int | None = None,
                 motion_intensity: float | None = None) -> bytes:
        serve, size = self.settings.serve, self.pipeline.size
        marks = [time.perf_counter()]
        prompt, seed = check_prompt(prompt, serve), check_seed(seed)
        intensity = check_intensity(motion_intensity, serve)
        rewriting = self.pool.submit(self._timed_rewrite, prompt)
        image = read_image(reference, image_limits(serve), label="reference image")
        clip = read_video(driving, limits=video_limits(serve), label="driving video")
        motion = extract_motion(image, clip.frames, size=size,
                                motion_intensity_override=intensity)
        marks.append(time.perf_counter())
        library = [read_image(item, image_limits(serve)) for item in subject_library or []]
        identity = reference_identity_of(image, library, size)
        marks.append(time.perf_counter())
        rewritten, rewrite_s = rewriting.result()  # what it adds: the wait beyond the above
        marks.append(time.perf_counter())
        caption = motion_caption(rewritten.text, motion.action_phrase, motion.intensity)
        camera = camera_path(rewritten.camera_move, len(motion.pose))
        frames = generate_long(self.pipeline, identity, motion, caption, camera=camera,
                               seed=seed, overlap=serve.window_overlap,
                               window_batch=serve.window_batch)
        video = publishable_mp4(frames, clip.fps, self.provenance["model"],
                                self.provenance["version"], side=serve.output_size)
        marks.append(time.perf_counter())
        stages = ("motion_extractor", "identity_encoder", "prompt_enhancer", "student_dit")
        self.timings = {s: b - a for s, a, b in zip(stages, marks[:-1], marks[1:], strict=True)}
        self.timings["prompt_rewrite_alone"] = rewrite_s
        return video

    def _timed_rewrite(self, prompt: str):
        start = time.perf_counter()
        return self.enhancer.rewrite(prompt), time.perf_counter() - start
