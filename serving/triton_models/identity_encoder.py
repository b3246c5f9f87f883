"""identity_encoder: decode the reference and every subject-library image, square them to
the model's size, and the dlib identity embedding of the reference."""

import numpy as np

from models.extraction import reference_identity_of
from models.video import read_image
from serving.backend import TritonModel, blob
from serving.limits import image_limits


class TritonPythonModel(TritonModel):
    name = "identity_encoder"

    def setup(self) -> None:
        self.size = int(self.config["parameters"]["size"]["string_value"])

    def infer(self, inputs):
        limits = image_limits(self.settings.serve)
        reference = read_image(blob(inputs["REFERENCE_IMAGE"]), limits, label="reference image")
        items = inputs["SUBJECT_LIBRARY"]
        library = [read_image(bytes(item), limits, label=f"subject library item {i + 1}")
                   for i, item in enumerate([] if items is None else items.reshape(-1))]
        identity = reference_identity_of(reference, library, self.size)
        valid = identity.embedding is not None
        return {"REFERENCE": identity.reference, "LIBRARY": identity.library,
                "IDENTITY": identity.embedding if valid else np.zeros(128, np.float32),
                "IDENTITY_VALID": np.array([valid])}
