"""motion_control and motion_control_stream: the entry points (BLS). Check the request at the
edge, then run motion_extractor, identity_encoder and prompt_enhancer side by side (the
enhancer rewrites the user's words alone: it does not wait for the motion), then student_dit,
whose responses come one per sampler call. motion_control gathers them into one
mp4 (short clips); motion_control_stream (decoupled, gRPC streaming) passes each on with its
progress, and the client writes the mp4 as the frames arrive (long clips)."""

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from models.video import encode_mp4
from serving.backend import TritonModel, call_model, scalar, stream_model, text
from serving.limits import check_intensity, check_library, check_prompt, check_seed, check_upload


class TritonPythonModel(TritonModel):
    name = "motion_control"  # or motion_control_stream: the same source serves both

    def setup(self) -> None:
        self.pool = ThreadPoolExecutor(3, thread_name_prefix="bls")

    def infer(self, inputs):
        parts = list(self.stream(inputs))
        frames = np.concatenate([part["FRAMES"] for part in parts])
        tags = json.loads(text(parts[-1]["PROVENANCE"], "PROVENANCE"))
        return {"VIDEO": encode_mp4(frames, float(scalar(parts[-1]["FPS"])), metadata=tags)}

    def stream(self, inputs):
        serve = self.settings.serve
        prompt = check_prompt(text(inputs["PROMPT"], "PROMPT"), serve)
        seed = check_seed(scalar(inputs["SEED"]))
        intensity = check_intensity(scalar(inputs["MOTION_INTENSITY"]), serve)
        library = inputs["SUBJECT_LIBRARY"]
        library = [] if library is None else list(library.reshape(-1))
        check_library(len(library), serve)
        reference, driving = inputs["REFERENCE_IMAGE"], inputs["DRIVING_VIDEO"]
        check_upload("reference image", len(reference.reshape(-1)[0]), serve.max_image_bytes)
        check_upload("driving video", len(driving.reshape(-1)[0]), serve.max_video_bytes)

        motion_job = self.pool.submit(call_model, "motion_extractor", {
            "REFERENCE_IMAGE": reference, "DRIVING_VIDEO": driving})
        identity_job = self.pool.submit(call_model, "identity_encoder", {
            "REFERENCE_IMAGE": reference, "SUBJECT_LIBRARY": library or None})
        prompt_job = self.pool.submit(call_model, "prompt_enhancer", {"PROMPT": prompt})
        try:
            motion, identity = motion_job.result(), identity_job.result()
            enhanced = prompt_job.result()
        finally:  # a failed job's exception holds its traceback, which holds this frame: the
            # jobs kept in it made a cycle that held each failed request's inputs (in shm)
            del motion_job, identity_job, prompt_job
        if intensity is not None:  # the caller's intensity wins over the measured one
            motion["MOTION_INTENSITY"] = np.array([intensity], np.float32)

        for part in stream_model("student_dit", {
                **motion, **identity, "ENHANCED_PROMPT": enhanced["ENHANCED_PROMPT"],
                "CAMERA_MOVE": enhanced["CAMERA_MOVE"], "SEED": np.array([seed], np.int64)}):
            yield {**part, "FPS": motion["FPS"]}

    def finalize(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
