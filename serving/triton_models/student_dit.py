"""student_dit (decoupled): the caption (the enhanced prompt + the motion context) and the
camera path, conditions, keyframe-anchored windows sampled in batches
(few-step student), VAE decode, upscale + invisible watermark. One response per sampler call:
the progress and the frames that call finished, so a long clip's first frames leave while
the rest is generated; the entry points encode the mp4 (motion_control) or pass the frames
on (motion_control_stream)."""

import json

import numpy as np

from models.extraction import DrivingMotion, ReferenceIdentity
from models.long_video import stream_long
from models.prompt import camera_path, motion_caption
from models.watermark import provenance_tags, publishable_frames
from serving.backend import TritonModel, scalar, text
from serving.weights import load_served_pipeline


class TritonPythonModel(TritonModel):
    name = "student_dit"

    def setup(self) -> None:
        self.pipeline, self.meta = load_served_pipeline(self.model_dir, self.device,
                                                          self.settings.serve.decode_dtype)
        self.provenance = json.dumps(provenance_tags(self.meta["model"], self.meta["version"]))

    def stream(self, inputs):
        motion = DrivingMotion(inputs["POSE"], inputs["DRIVER_KEYPOINTS"],
                               float(scalar(inputs["MOTION_INTENSITY"])),
                               text(inputs["ACTION_PHRASE"], "ACTION_PHRASE"),
                               inputs["REFERENCE_KEYPOINTS"])
        valid = bool(scalar(inputs["IDENTITY_VALID"]))
        identity = ReferenceIdentity(inputs["REFERENCE"], inputs["LIBRARY"],
                                     inputs["IDENTITY"].astype(np.float64) if valid else None)
        caption = motion_caption(text(inputs["ENHANCED_PROMPT"], "ENHANCED_PROMPT"),
                                 motion.action_phrase, motion.intensity)
        camera = camera_path(text(inputs["CAMERA_MOVE"], "CAMERA_MOVE"), len(motion.pose))
        serve = self.settings.serve
        for step in stream_long(self.pipeline, identity, motion, caption, camera=camera,
                                seed=int(scalar(inputs["SEED"])), overlap=serve.window_overlap,
                                window_batch=serve.window_batch):
            yield {"PROGRESS": np.array([step.done, step.total], np.int32),
                   "FRAMES": publishable_frames(step.frames, serve.output_size),
                   "PROVENANCE": self.provenance}
