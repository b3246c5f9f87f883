"""motion_control: the entry point (BLS). Checks the request at the edge, then runs
motion_extractor and identity_encoder side by side, prompt_enhancer, and student_dit."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from serving.backend import TritonModel, call_model, scalar, text
from serving.limits import check_intensity, check_library, check_prompt, check_seed, check_upload


class TritonPythonModel(TritonModel):
    name = "motion_control"

    def setup(self) -> None:
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="bls")

    def infer(self, inputs):
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
        motion, identity = motion_job.result(), identity_job.result()
        if intensity is not None:  # the caller's intensity wins over the measured one
            motion["MOTION_INTENSITY"] = np.array([intensity], np.float32)

        enhanced = call_model("prompt_enhancer", {
            "PROMPT": prompt, "ACTION_PHRASE": motion["ACTION_PHRASE"],
            "MOTION_INTENSITY": motion["MOTION_INTENSITY"],
            "FRAMES": np.array([len(motion["POSE"])], np.int32)})
        video = call_model("student_dit", {
            **motion, **identity, "CAPTION": enhanced["CAPTION"],
            "CAMERA": enhanced["CAMERA"], "SEED": np.array([seed], np.int64)})
        return {"VIDEO": video["VIDEO"]}

    def finalize(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
