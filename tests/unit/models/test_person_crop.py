"""Crops that keep a person in frame (models/person_crop.py): the window geometry, and on the
real data the environment ships, that the demo's and the evaluation's driving clip shows one
walking person in every frame and that the photo crop holds its person."""

from __future__ import annotations

import numpy as np
import pytest

from models import keypoints as K
from models.assets import sample_data
from models.motion import HolisticExtractor
from models.person_crop import (
    body_boxes,
    crop_to_person,
    square_windows,
    walking_pedestrian,
)
from models.video import read_image


def inside(boxes: np.ndarray, windows: np.ndarray) -> bool:
    x, y, side = windows.T
    return bool(((boxes[:, 0] >= x) & (boxes[:, 1] >= y) & (boxes[:, 2] <= x + side)
                 & (boxes[:, 3] <= y + side)).all())


def test_windows_hold_every_box_with_one_side_and_stay_in_the_frame():
    # a 40x80 box walking right at 10 px a frame, up to the frame's right border
    boxes = np.array([(x, 100, x + 40, 180) for x in range(400, 600, 10)], float)
    windows = square_windows(boxes, 640, 480, margin=1.5, smooth=5)
    assert (windows[:, 2] == windows[0, 2]).all() and windows[0, 2] >= 1.5 * 80
    assert inside(boxes, windows)
    assert (windows[:, 0] + windows[:, 2] <= 640).all() and (windows[:, :2] >= 0).all()
    assert windows[-1, 0] + windows[-1, 2] == 640  # shifted in, not cut
    assert (np.diff(windows[:, 0]) >= 0).all()  # it pans with the walker, never back
    # one box: centred on it, the margin times its larger extent
    [(x, y, side)] = square_windows(boxes[:1], 640, 480, margin=2.0)
    assert side == 160 and (x, y) == (420 - 80, 140 - 80)


@pytest.fixture(scope="module")
def extractor():
    with HolisticExtractor() as extractor:
        yield extractor


def test_driving_clip_shows_its_walker_in_every_frame(extractor):
    clip = walking_pedestrian(36)  # the demo's clip; the evaluation's real items take its start
    frames = clip.frames
    assert frames.shape[0] == 36 and frames.shape[1] == frames.shape[2] and clip.fps == 5.0
    side = frames.shape[1]
    boxes = body_boxes(extractor.extract(frames), side, side)
    assert not np.isnan(boxes).any(), "the person is lost in a frame of the driving clip"
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    # the walker, not a passer-by at the edge: near the middle and a good part of the crop
    assert (np.abs(centres - side / 2) < side / 4).all()
    assert ((boxes[:, 3] - boxes[:, 1]) > side / 4).all()


def test_photo_crop_holds_its_person(extractor):
    photo = read_image(sample_data("opencv-doc/basketball1.png"))
    crop = crop_to_person(photo)
    assert crop.shape[0] == crop.shape[1] < min(photo.shape[:2])
    kps = extractor.extract_image(crop)
    [box] = body_boxes(kps[None], *crop.shape[1::-1])
    assert not np.isnan(box).any() and box[3] - box[1] > crop.shape[0] / 2  # the whole body
    assert (kps[K.FACE, K.CONF] > 0.5).mean() > 0.9  # the face, for identity
