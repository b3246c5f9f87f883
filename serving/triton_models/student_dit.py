"""student_dit: conditions, keyframe-anchored windows sampled in batches (few-step student),
VAE decode, upscale + invisible watermark, mp4 with provenance tags."""

import numpy as np

from models.extraction import DrivingMotion, ReferenceIdentity
from models.long_video import generate_long
from models.watermark import publishable_mp4
from serving.backend import TritonModel, scalar, text
from serving.weights import load_served_pipeline


class TritonPythonModel(TritonModel):
    name = "student_dit"

    def setup(self) -> None:
        self.pipeline, self.meta = load_served_pipeline(self.model_dir, self.device)

    def infer(self, inputs):
        motion = DrivingMotion(inputs["POSE"], inputs["DRIVER_KEYPOINTS"],
                               float(scalar(inputs["MOTION_INTENSITY"])),
                               text(inputs["ACTION_PHRASE"], "ACTION_PHRASE"))
        valid = bool(scalar(inputs["IDENTITY_VALID"]))
        identity = ReferenceIdentity(inputs["REFERENCE"], inputs["LIBRARY"],
                                     inputs["IDENTITY"].astype(np.float64) if valid else None)
        serve = self.settings.serve
        frames = generate_long(self.pipeline, identity, motion, text(inputs["CAPTION"], "CAPTION"),
                               camera=inputs["CAMERA"], seed=int(scalar(inputs["SEED"])),
                               overlap=serve.window_overlap, window_batch=serve.window_batch)
        return {"VIDEO": publishable_mp4(frames, float(scalar(inputs["FPS"])),
                                         self.meta["model"], self.meta["version"],
                                         side=serve.output_size)}
