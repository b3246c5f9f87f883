"""motion_extractor: decode the driving video (decord) and the reference, MediaPipe holistic
keypoints of both, the driver retargeted onto the reference, motion intensity and action
phrase (models.extraction.extract_motion)."""

import numpy as np

from models.extraction import extract_motion
from models.motion import HolisticExtractor
from models.video import read_image, read_video
from serving.backend import TritonModel, blob
from serving.limits import image_limits, video_limits


class TritonPythonModel(TritonModel):
    name = "motion_extractor"

    def setup(self) -> None:
        self.size = int(self.config["parameters"]["size"]["string_value"])
        self.extractor = HolisticExtractor()  # one graph per instance, reset between clips

    def finalize(self) -> None:
        self.extractor.close()

    def infer(self, inputs):
        serve = self.settings.serve
        reference = read_image(blob(inputs["REFERENCE_IMAGE"]), image_limits(serve),
                               label="reference image")
        clip = read_video(blob(inputs["DRIVING_VIDEO"]), limits=video_limits(serve),
                          label="driving video")
        motion = extract_motion(reference, clip.frames, size=self.size,
                                extractor=self.extractor)
        return {"POSE": motion.pose, "DRIVER_KEYPOINTS": motion.driver,
                "REFERENCE_KEYPOINTS": motion.reference,
                "MOTION_INTENSITY": np.array([motion.intensity], np.float32),
                "ACTION_PHRASE": motion.action_phrase,
                "FPS": np.array([clip.fps], np.float32)}
