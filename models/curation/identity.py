"""Subject consistency: face identity against the reference image (dlib), and appearance
stability of the subject region across the clip (HSV colour histograms)."""

from __future__ import annotations

import threading

import cv2
import numpy as np

from models import keypoints as kp
from models.assets import dlib_model
from models.curation.base import (
    CurationThresholds,
    FilterResult,
    check_frames,
    resize_short_side,
    result,
    sample_indices,
)

_per_thread = threading.local()


def _dlib_models():
    """The detector, landmark model and encoder of this thread: dlib's models are not
    thread-safe (sharing them across curation workers corrupts the heap), so each thread
    loads its own once (~1 s)."""
    if not hasattr(_per_thread, "models"):
        import dlib  # imported here: only the identity filter needs it

        _per_thread.models = (
            dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(dlib_model("shape_predictor_5_face_landmarks.dat"))),
            dlib.face_recognition_model_v1(
                str(dlib_model("dlib_face_recognition_resnet_model_v1.dat"))))
    return _per_thread.models


def face_embedding(image: np.ndarray, th: CurationThresholds) -> np.ndarray | None:
    """128-d dlib embedding of the most confidently detected face in an RGB uint8 image, or
    None if no face (the most confident, not the largest: weak detections on textures such
    as badges come out as large as the real face)."""
    detector, landmarks, encoder = _dlib_models()
    if min(image.shape[:2]) < th.face_min_side:  # the HOG detector misses faces under ~40 px
        image = resize_short_side(image, th.face_min_side)
    image = np.ascontiguousarray(image)
    for upsample in dict.fromkeys((0, th.face_upsample)):  # upsampling costs 4×: only if needed
        faces, confidences, _ = detector.run(image, upsample, 0.0)
        if faces:
            break
    else:
        return None
    face = faces[int(np.argmax(confidences))]
    return np.array(encoder.compute_face_descriptor(image, landmarks(image, face)))


def identity_filter(frames: np.ndarray, reference: np.ndarray | None,
                    th: CurationThresholds) -> FilterResult:
    """L2 distance between the reference face and the faces of a few sampled frames.

    `reference` is the reference image (RGB uint8), or its `face_embedding` (128,) when the
    caller checks many clips of one identity (it saves a detection and an embedding per
    clip). Passes when the max (or mean, `th.identity_reduce`) distance is below
    `th.max_identity_distance`. With no face in the clip or the reference, the result says so
    and passes as skipped or fails, as `th.no_face` asks."""
    frames = check_frames(frames)
    if reference is None:
        return _no_face("no reference image given", th)
    reference = np.asarray(reference)
    if reference.ndim != 1:
        reference = face_embedding(reference.astype(np.uint8, copy=False), th)
        if reference is None:
            return _no_face("no face found in the reference image", th)
    idx = sample_indices(len(frames), th.identity_frames)
    embeddings = [e for e in (face_embedding(frames[i], th) for i in idx) if e is not None]
    if not embeddings:
        return _no_face(f"no face found in {len(idx)} sampled frames", th)
    distances = np.linalg.norm(np.array(embeddings) - reference, axis=1)
    scores = {"max_distance": distances.max(), "mean_distance": distances.mean(),
              "faces_found": len(embeddings), "frames_sampled": len(idx)}
    distance = scores[f"{th.identity_reduce}_distance"]
    failures = []
    if distance >= th.max_identity_distance:
        failures.append(f"different identity: {th.identity_reduce} face distance "
                        f"{distance:.2f} >= {th.max_identity_distance:.2f}")
    return result("identity", scores, failures)


def _no_face(why: str, th: CurationThresholds) -> FilterResult:
    skip = th.no_face == "skip"
    return FilterResult("identity", skip, {"faces_found": 0.0},
                        f"{why} (identity not checked)" if skip else f"no face: {why}",
                        skipped=skip)


def subject_box(frame_keypoints: np.ndarray | None, height: int, width: int,
                th: CurationThresholds) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the subject: the padded box of the confident body keypoints, or
    the central half of the frame when there are none."""
    if frame_keypoints is not None:
        body = frame_keypoints[kp.BODY]
        seen = body[body[:, kp.CONF] >= th.keypoint_confidence]
        if len(seen) >= 3:
            x0, y0 = seen[:, :2].min(0)
            x1, y1 = seen[:, :2].max(0)
            pad_x, pad_y = 0.15 * (x1 - x0) + 0.02, 0.15 * (y1 - y0) + 0.02
            box = (np.clip([y0 - pad_y, y1 + pad_y], 0, 1) * height,
                   np.clip([x0 - pad_x, x1 + pad_x], 0, 1) * width)
            (ya, yb), (xa, xb) = (np.round(b).astype(int) for b in box)
            if yb - ya >= 4 and xb - xa >= 4:
                return ya, yb, xa, xb
    return height // 4, height - height // 4, width // 4, width - width // 4


def hsv_histogram(region: np.ndarray) -> np.ndarray:
    """Normalised 8×4×4 hue/saturation/value histogram of an RGB region."""
    hsv = cv2.cvtColor(region, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256])
    return cv2.normalize(hist, None).ravel()


def appearance_filter(frames: np.ndarray, th: CurationThresholds,
                      keypoints: np.ndarray | None = None) -> FilterResult:
    """Colour-histogram correlation of the subject region of sampled frames with frame 0.

    The subject region comes from the body keypoints when given (else the frame centre), so a
    moving subject is followed; a cut, a subject swap or a lighting jump lowers the
    correlation."""
    frames = check_frames(frames)
    height, width = frames.shape[1:3]
    idx = sample_indices(len(frames), th.sample_frames)
    hists = []
    for i in idx:
        y0, y1, x0, x1 = subject_box(None if keypoints is None else keypoints[i],
                                     height, width, th)
        hists.append(hsv_histogram(np.ascontiguousarray(frames[i, y0:y1, x0:x1])))
    correlations = [cv2.compareHist(hists[0], h, cv2.HISTCMP_CORREL) for h in hists[1:]]
    worst = int(np.argmin(correlations)) + 1 if correlations else 0
    lowest = float(min(correlations, default=1.0))
    failures = []
    if lowest < th.min_appearance_correlation:
        failures.append(f"appearance changes: colour histogram correlation {lowest:.2f} "
                        f"< {th.min_appearance_correlation:.2f} (frame {idx[worst]} vs "
                        f"frame {idx[0]})")
    return result("appearance", {"min_correlation": lowest,
                                 "mean_correlation": float(np.mean(correlations or [1.0]))},
                  failures)
