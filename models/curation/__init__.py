"""Data curation: quality, motion and subject-consistency filters, and clip annotations.

Each filter is a pure function `(clip data, CurationThresholds) -> FilterResult`; the
thresholds are one frozen dataclass so that the platform settings can build it in one place.
`run_filters` runs them all on one clip; `annotate` returns the clip's annotations.
"""

from models.curation.annotate import action_phrase_from_keypoints, annotate, caption
from models.curation.base import CurationThresholds, FilterResult
from models.curation.coverage import keypoint_coverage_filter
from models.curation.filters import kept, run_filters
from models.curation.identity import appearance_filter, face_embedding, identity_filter
from models.curation.optical_flow import (
    ClipFlow,
    camera_motion,
    classify_camera,
    clip_flow,
    fluency_filter,
    intensity_label,
    intensity_level,
    motion_amplitude_filter,
    motion_intensity,
)
from models.curation.quality import (
    exposure_filter,
    resolution_filter,
    sharpness_filter,
    static_filter,
)

__all__ = [
    "ClipFlow", "CurationThresholds", "FilterResult", "action_phrase_from_keypoints",
    "annotate", "appearance_filter", "camera_motion", "caption", "classify_camera",
    "clip_flow", "exposure_filter", "face_embedding", "fluency_filter", "identity_filter",
    "intensity_label", "intensity_level", "keypoint_coverage_filter", "kept",
    "motion_amplitude_filter", "motion_intensity", "resolution_filter", "run_filters",
    "sharpness_filter", "static_filter",
]
