"""Crops of the real photos and footage the project ships that keep a person in frame, measured
with the motion extractor. The demo's driving clip and the evaluation's real items both come
from `walking_pedestrian`, so both drive with the same clip.

The footage, opencv-doc's vtest.avi (768x576, 10 fps), shows pedestrians from a first floor,
60-100 px tall, crossing 5-10 px a frame. A fixed window that holds one of them for a few
seconds of walking is several times their height (at the models' 64² they would be ~12 px
tall); a square window that follows the walker keeps them at about half its height: a tracking
shot, the kind of driving video the models are made for.
"""

from __future__ import annotations

import numpy as np

from models import keypoints as K
from models.assets import sample_data
from models.errors import InvalidInput
from models.motion import HolisticExtractor, NoPersonFound
from models.video import Clip, iter_batches, probe

FOOTAGE = "opencv-doc/vtest.avi"
# Raw frames 200-317 of vtest.avi: one man (dark jacket, jeans) walks towards the camera, turns,
# walks away up the path and turns again; the extractor follows him through every frame (its
# track over the whole video, then these frames looked at). At 318 he passes behind the
# signpost and the track jumps to someone else.
WALK_START, WALK_STOP = 200, 318
WALK_STRIDE = 2  # every other frame (5 fps), as the demo has always sent the footage
CONFIDENT = 0.5  # a keypoint counts towards a person's box above this confidence
MIN_POINTS = 4  # confident body points that make a detection
MAX_JUMP = 0.75  # x the box height: a track that moves more in one frame went to someone else
# The window's side over the largest keypoint box about its centre: the keypoints stop at the
# nose and ankles, and the smoothed centre lags the walker's turns.
FOLLOW_MARGIN = 1.6
FOLLOW_SMOOTH = 5  # frames (odd) of the box centre's moving average: the window pans, not shakes
PHOTO_MARGIN = 1.2  # around a photo's person: their whole body, not the people beside them


def body_boxes(keypoints: np.ndarray, width: int, height: int) -> np.ndarray:
    """(T, 4) pixel boxes (x0, y0, x1, y1) of each frame's confident body and feet keypoints
    ((T, 133, 4), normalised); NaN where fewer than MIN_POINTS are confident."""
    points = np.asarray(keypoints)[:, K.BODY.start:K.FEET.stop]
    boxes = np.full((len(points), 4), np.nan)
    for t, frame in enumerate(points):
        xy = frame[frame[:, K.CONF] > CONFIDENT, :2] * (width, height)
        if len(xy) >= MIN_POINTS:
            boxes[t] = (*xy.min(axis=0), *xy.max(axis=0))
    return boxes


def square_windows(boxes: np.ndarray, width: int, height: int, *, margin: float,
                   smooth: int = 1) -> np.ndarray:
    """(T, 3) int square windows (x0, y0, side) of a width x height frame, one side for every
    frame: each centred on the moving average over `smooth` frames of the box centres, holding
    every box `margin` times over about its centre, shifted to stay inside the frame (which
    keeps the box inside)."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    if smooth > 1:
        padded = np.pad(centres, ((smooth // 2, smooth // 2), (0, 0)), mode="edge")
        kernel = np.ones(smooth) / smooth
        centres = np.stack([np.convolve(padded[:, i], kernel, "valid") for i in (0, 1)], axis=1)
    reach = np.abs(np.concatenate([boxes[:, :2], boxes[:, 2:]], axis=1)
                   - np.tile(centres, 2)).max()
    side = min(int(np.ceil(2 * margin * reach)), width, height)
    x0 = np.clip(np.round(centres[:, 0] - side / 2), 0, width - side)
    y0 = np.clip(np.round(centres[:, 1] - side / 2), 0, height - side)
    return np.stack([x0, y0, np.full(len(boxes), side)], axis=1).astype(int)


def crop_windows(frames: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """(T, side, side, 3): each frame cut to its window (`square_windows`)."""
    return np.stack([frame[y:y + side, x:x + side]
                     for frame, (x, y, side) in zip(frames, windows, strict=True)])


def follow_person(frames: np.ndarray, extractor: HolisticExtractor) -> np.ndarray:
    """(T, 3) square windows (`square_windows`) that follow the person the extractor tracks
    through (T, H, W, 3) frames. Raises NoPersonFound when it loses them in any frame, and
    InvalidInput when its track jumps to someone else: the clip would not show one person."""
    height, width = frames.shape[1:3]
    boxes = body_boxes(extractor.extract(frames), width, height)
    lost = np.flatnonzero(np.isnan(boxes[:, 0]))
    if len(lost):
        raise NoPersonFound(f"the person is lost in frames {lost.tolist()} of {len(frames)}")
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    jumps = np.flatnonzero(steps > MAX_JUMP * (boxes[1:, 3] - boxes[1:, 1]))
    if len(jumps):
        raise InvalidInput(f"the track jumps to another person at frame {jumps[0] + 1} of "
                           f"{len(frames)}")
    return square_windows(boxes, width, height, margin=FOLLOW_MARGIN, smooth=FOLLOW_SMOOTH)


def walking_pedestrian(frames: int) -> Clip:
    """The first `frames` frames of vtest.avi's walk (WALK_START..WALK_STOP) in a square window
    that follows the walker, at half the footage's rate, or at its full rate for a model that
    needs more frames than that gives. The window is measured over the whole walk, so a shorter
    clip is the start of a longer one at the same rate."""
    walk = WALK_STOP - WALK_START
    if frames > walk:
        raise InvalidInput(f"vtest.avi's walk has {walk} frames; {frames} were asked for")
    stride = WALK_STRIDE if frames * WALK_STRIDE <= walk else 1
    path = sample_data(FOOTAGE)
    keep = range(WALK_START, WALK_STOP, stride)
    footage, index = [], 0  # only the walk's frames are kept (the video is 1.3 MB a frame)
    for batch in iter_batches(path, 64, max_frames=WALK_STOP, limits=None):
        footage += [frame for i, frame in enumerate(batch, index) if i in keep]
        index += len(batch)
    footage = np.stack(footage)
    with HolisticExtractor() as extractor:
        windows = follow_person(footage, extractor)
    return Clip(crop_windows(footage, windows)[:frames], probe(path, limits=None).fps / stride)


def crop_to_person(image: np.ndarray) -> np.ndarray:
    """The square crop of an (H, W, 3) photo around the person the extractor finds there:
    PHOTO_MARGIN around their keypoints, inside the photo. Raises NoPersonFound."""
    height, width = image.shape[:2]
    with HolisticExtractor() as extractor:
        box = body_boxes(extractor.extract_image(image)[None], width, height)
    if np.isnan(box).any():
        raise NoPersonFound("the person found in the photo has too few confident keypoints")
    x, y, side = square_windows(box, width, height, margin=PHOTO_MARGIN)[0]
    return image[y:y + side, x:x + side]
