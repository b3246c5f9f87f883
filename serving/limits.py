"""The limits a request must meet (MC_SERVE__*), checked at the server edge and, for sizes,
already by the client. Each check raises `InvalidInput` saying what is wrong and the limit."""

from __future__ import annotations

import math
import unicodedata

from flows.settings import ServeSettings
from models.errors import InvalidInput
from models.video import VideoLimits

MAX_SEED = 2**63 - 1


def image_limits(serve: ServeSettings) -> VideoLimits:
    return VideoLimits(max_side=serve.max_image_side, max_bytes=serve.max_image_bytes)


def video_limits(serve: ServeSettings) -> VideoLimits:
    return VideoLimits(max_side=serve.max_video_side, max_frames=serve.max_frames,
                       max_bytes=serve.max_video_bytes, max_duration_s=serve.max_duration_s)


def check_prompt(prompt: str, serve: ServeSettings) -> str:
    if len(prompt) > serve.max_prompt_chars:
        raise InvalidInput(f"the prompt has {len(prompt)} characters, over the limit of "
                           f"{serve.max_prompt_chars} (MC_SERVE__MAX_PROMPT_CHARS): shorten it")
    bad = next((c for c in prompt if unicodedata.category(c) in ("Cc", "Cs", "Co")
                and c not in "\t\n\r"), None)
    if bad is not None:
        raise InvalidInput(f"the prompt contains the control character U+{ord(bad):04X}: "
                           f"send plain text")
    return prompt


def check_seed(seed: int | None) -> int:
    if seed is None:
        return 0
    if not 0 <= int(seed) <= MAX_SEED:
        raise InvalidInput(f"SEED must be within 0..{MAX_SEED}, got {seed}")
    return int(seed)


def check_intensity(value: float | None, serve: ServeSettings) -> float | None:
    """The caller's motion intensity (None: measure it from the driving video)."""
    if value is None:
        return None
    if not math.isfinite(value) or not 0 <= value <= serve.max_motion_intensity:
        raise InvalidInput(f"MOTION_INTENSITY must be within 0..{serve.max_motion_intensity}, "
                           f"got {value}")
    return float(value)


def check_library(count: int, serve: ServeSettings) -> None:
    if count > serve.max_subject_library:
        raise InvalidInput(f"the subject library has {count} items, over the limit of "
                           f"{serve.max_subject_library} (MC_SERVE__MAX_SUBJECT_LIBRARY): "
                           f"send fewer references")


def check_upload(label: str, size: int, limit: int) -> None:
    """A size check done before anything is sent or decoded."""
    if size == 0:
        raise InvalidInput(f"the {label} is empty (0 bytes)")
    if size > limit:
        raise InvalidInput(f"the {label} is {size / 1024**2:.1f} MiB, over the limit of "
                           f"{limit / 1024**2:.1f} MiB: compress or shorten it")
