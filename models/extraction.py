"""The request's inputs before any network: square crops, motion extraction and the
reference's identity (stages 1-4a of models/pipeline.py).

NumPy, OpenCV, MediaPipe and dlib only, no torch: the serving stages that run these
(serving/triton_models/motion_extractor.py, identity_encoder.py) import this module and start
in about a second instead of the ~5 s that importing torch and diffusers costs on 2 cores.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass

import cv2
import numpy as np

from models.curation import CurationThresholds, action_phrase_from_keypoints, motion_intensity
from models.errors import InvalidInput
from models.motion import HolisticExtractor, NoPersonFound, retarget

_identity_cache: OrderedDict[bytes, np.ndarray | None] = OrderedDict()
_identity_lock = threading.Lock()
IDENTITY_CACHE_SIZE = 4096


def reference_identity(image: np.ndarray) -> np.ndarray | None:
    """dlib 128-d face embedding of an RGB uint8 image (None: no face), cached by content:
    a reference comes back every epoch and detection costs ~0.1-1 s."""
    from models.curation.base import CurationThresholds
    from models.curation.identity import face_embedding

    image = np.ascontiguousarray(image, dtype=np.uint8)
    key = hashlib.blake2b(image.tobytes(), digest_size=16,
                          person=str(image.shape).encode()[:16]).digest()
    with _identity_lock:
        if key in _identity_cache:
            _identity_cache.move_to_end(key)
            return _identity_cache[key]
    emb = face_embedding(image, CurationThresholds())
    with _identity_lock:
        _identity_cache[key] = emb
        while len(_identity_cache) > IDENTITY_CACHE_SIZE:
            _identity_cache.popitem(last=False)
    return emb


def square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize (INTER_AREA) to size²."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top:top + side, left:left + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def square_keypoints(kps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Keypoints of a frame mapped into its centre square crop (same convention as square)."""
    side = min(height, width)
    out = kps.copy()
    out[..., 0] = (kps[..., 0] * width - (width - side) // 2) / side
    out[..., 1] = (kps[..., 1] * height - (height - side) // 2) / side
    outside = (out[..., 0] < 0) | (out[..., 0] > 1) | (out[..., 1] < 0) | (out[..., 1] > 1)
    out[..., 3] = np.where(outside, 0.0, out[..., 3])
    return out


@dataclass
class DrivingMotion:
    """What the motion stage hands to generation: the driver retargeted onto the reference."""

    pose: np.ndarray  # (T, 133, 4) float32, driver retargeted onto the reference (square)
    driver: np.ndarray  # (T, 133, 4) float32, the driver in its square crop (expressions)
    intensity: float  # optical-flow motion intensity (or the caller's override)
    action_phrase: str  # "walking", "waving the right hand", ... ("moving" when unsure)
    reference: np.ndarray | None = None  # (133, 4) float32, the reference's own (square)


@dataclass
class ReferenceIdentity:
    """The reference side of the conditions: squared images and the dlib face embedding."""

    reference: np.ndarray  # (size, size, 3) uint8
    library: np.ndarray  # (K, size, size, 3) uint8, K >= 0
    embedding: np.ndarray | None  # (128,) dlib embedding of the squared reference; None: no face


def check_reference(reference: np.ndarray) -> np.ndarray:
    reference = np.asarray(reference)
    if reference.ndim != 3 or reference.shape[2] != 3 or reference.dtype != np.uint8:
        raise InvalidInput(f"reference must be an (H, W, 3) uint8 RGB image, got "
                           f"{reference.shape} {reference.dtype}")
    return reference


def check_driving(driving: np.ndarray, min_frames: int) -> np.ndarray:
    driving = np.asarray(driving)
    if driving.ndim != 4 or driving.shape[3] != 3 or driving.dtype != np.uint8:
        raise InvalidInput(f"driving must be (T, H, W, 3) uint8 RGB frames, got "
                           f"{driving.shape} {driving.dtype}")
    if len(driving) < min_frames:
        raise InvalidInput(f"the driving clip has {len(driving)} frames; this model "
                           f"generates {min_frames}: give at least {min_frames}")
    return driving


def extract_motion(reference: np.ndarray, driving: np.ndarray, *, size: int,
                   thresholds: CurationThresholds | None = None,
                   driving_keypoints: np.ndarray | None = None,
                   motion_intensity_override: float | None = None,
                   extractor: HolisticExtractor | None = None) -> DrivingMotion:
    """Stage 1-3: MediaPipe keypoints of the reference and of every driving frame, the driver
    retargeted onto the reference's proportions, motion intensity and action phrase.
    driving_keypoints (T, 133, 4) skips extraction on the driver. A server passes its own
    `extractor`, reused across requests: with a graph built and closed per request, the
    server grew by 73 MB of RSS over one round of 11 bad requests (4 reaching MediaPipe)."""
    thresholds = thresholds or CurationThresholds()
    reference, driving = check_reference(reference), check_driving(driving, 1)
    with nullcontext(extractor) if extractor is not None else HolisticExtractor() as extractor:
        try:
            ref_kps = extractor.extract_image(reference)
        except NoPersonFound:
            raise NoPersonFound("no person found in the reference image: use a photo or "
                                "render that shows the character's body") from None
        if driving_keypoints is None:
            try:
                driving_keypoints = extractor.extract(driving)
            except NoPersonFound:
                raise NoPersonFound("no person found in the driving video: use a clip "
                                    "where one person is visible") from None
    ref_kps = square_keypoints(ref_kps, *reference.shape[:2])
    driver = square_keypoints(driving_keypoints[:len(driving)], *driving.shape[1:3])
    pose = retarget(driver, ref_kps).astype(np.float32)
    if motion_intensity_override is None:
        clip = np.stack([square(f, size) for f in driving])
        intensity = motion_intensity(clip, thresholds)
    else:
        intensity = float(motion_intensity_override)
    phrase = action_phrase_from_keypoints(pose, thresholds) or "moving"
    return DrivingMotion(pose, driver.astype(np.float32), float(intensity), phrase,
                         ref_kps.astype(np.float32))


def reference_identity_of(reference: np.ndarray, subject_library: list[np.ndarray] | None,
                          size: int) -> ReferenceIdentity:
    """Stage 4a: the reference and subject library squared to the model's size, and the
    dlib identity embedding of the squared reference (as `build_conditions` computes it)."""
    squared = square(check_reference(reference), size)
    library = [square(check_reference(img), size) for img in subject_library or []]
    library = np.stack(library) if library else np.zeros((0, size, size, 3), np.uint8)
    return ReferenceIdentity(squared, library, reference_identity(squared))
