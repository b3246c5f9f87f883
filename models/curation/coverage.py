"""Keypoint coverage: how often body, face and hands are confidently detected, and whether
the body stays inside the frame."""

from __future__ import annotations

import numpy as np

from models import keypoints as kp
from models.curation.base import CurationThresholds, FilterResult, result


def part_detected(keypoints: np.ndarray, part: slice, th: CurationThresholds) -> np.ndarray:
    """(T,) bool: frames where at least `part_visible_fraction` of the part's points are
    detected with confidence >= `keypoint_confidence`."""
    confident = keypoints[:, part, kp.CONF] >= th.keypoint_confidence
    return confident.mean(axis=1) >= th.part_visible_fraction


def keypoint_coverage_filter(keypoints: np.ndarray | None,
                             th: CurationThresholds) -> FilterResult:
    """Per part, the share of frames where it is detected; the share of body joints (over all
    frames) detected inside the frame. Hands pass when either hand is detected."""
    if keypoints is None:
        return FilterResult("keypoint_coverage", True, {}, "no keypoints given (not checked)",
                            skipped=True)
    keypoints = kp.validate(keypoints)
    coverage = {name: float(part_detected(keypoints, part, th).mean())
                for name, part in kp.PARTS.items()}
    coverage["any_hand"] = float((part_detected(keypoints, kp.LEFT_HAND, th)
                                  | part_detected(keypoints, kp.RIGHT_HAND, th)).mean())
    body = keypoints[:, kp.BODY]
    inside = ((body[..., kp.CONF] >= th.keypoint_confidence)
              & (body[..., kp.X] >= 0) & (body[..., kp.X] <= 1)
              & (body[..., kp.Y] >= 0) & (body[..., kp.Y] <= 1))
    in_frame = float(inside.mean())
    failures = [
        f"{what} detected in {coverage[key]:.0%} of frames < {needed:.0%}"
        for what, key, needed in (("body", "body", th.min_body_coverage),
                                  ("face", "face", th.min_face_coverage),
                                  ("hands", "any_hand", th.min_hand_coverage))
        if coverage[key] < needed
    ]
    if in_frame < th.min_body_in_frame:
        failures.append(f"body out of frame: {in_frame:.0%} of body joints detected inside "
                        f"< {th.min_body_in_frame:.0%}")
    scores = {f"{name}_coverage": value for name, value in coverage.items()}
    scores["body_in_frame"] = in_frame
    return result("keypoint_coverage", scores, failures)
