"""Requests to the `motion_control` entry model for the tests and benchmarks that drive a
real tritonserver: one catalogue of malformed requests (each with the words its
INVALID_ARGUMENT message must contain), sent straight past the SDK's own checks."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient

from models.video import encode_mp4


def raw_request(grpc_url: str, reference: bytes, driving: bytes, prompt: str,
                client: grpcclient.InferenceServerClient | None = None):
    """Straight to motion_control, past the SDK's own checks: what the server answers."""
    client = client or grpcclient.InferenceServerClient(grpc_url)
    tensors = []
    for name, value in (("REFERENCE_IMAGE", reference), ("DRIVING_VIDEO", driving),
                        ("PROMPT", prompt.encode())):
        tensor = grpcclient.InferInput(name, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([value], np.object_))
        tensors.append(tensor)
    return client.infer("motion_control", tensors, client_timeout=300)


def png(shape: tuple[int, ...]) -> bytes:
    import cv2

    return cv2.imencode(".png", np.zeros(shape, np.uint8))[1].tobytes()


def still_video(shape: tuple[int, ...], value: int) -> bytes:
    return encode_mp4(np.full(shape, value, np.uint8), 12.0)


def bad_requests(reference: bytes, driving: bytes, frames: np.ndarray, fps: float,
                 max_image_side: int) -> dict[str, tuple[bytes, bytes, str, str]]:
    """name -> (reference image, driving video, prompt, words of the expected message):
    each edge check, and each stage's own failure modes past them. `driving` is a real
    clip of `frames` at `fps`, `reference` a real photo of a person."""
    half = driving[:len(driving) // 2]
    return {
        "corrupt video": (reference, half, "x", "truncated or corrupt"),
        "empty video": (reference, b"", "x", "empty"),
        "no image": (b"GIF? no, just text bytes", driving, "x", "not a supported image"),
        "oversized image": (png((8, max_image_side + 1, 3)), driving, "x", "over the limit"),
        "long prompt": (reference, driving, "a" * 100_000, "100000 characters"),
        # it used to reach a stage and come back INTERNAL
        "1x1 image": (png((1, 1, 3)), driving, "x", "smallest side"),
        # each stage's own failure modes, past the edge checks
        "nobody in the driving video": (reference, still_video((17, 96, 128, 3), 127), "x",
                                        "no person found"),
        "tiny driving video": (reference, still_video((17, 8, 8, 3), 127), "x",
                               "smallest side"),
        "one-frame driving video": (reference, encode_mp4(frames[:1], fps), "x",
                                    "1 frame(s), under the 2 a motion needs"),
        "blank reference image": (png((96, 96, 3)), driving, "x",
                                  "no person found in the reference image"),
    }
