"""Whole-body keypoints from real footage with MediaPipe Holistic (the model inside the
mediapipe==0.10.21 wheel), mapped into the 133-point contract of `models.keypoints`."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from models import keypoints as K
from models.errors import InvalidInput
from models.motion.geometry import from_metric, to_metric, unit
from models.motion.mediapipe_map import (
    IBUG68_PAIRS,
    POSE_FOOT_INDEX,
    POSE_HEEL,
    POSE_HIP,
    POSE_TO_COCO17,
    POSE_WRIST,
)
from models.motion.native_logs import quiet_native_logs

# Small-toe estimate (MediaPipe has no small toe): from the heel, this far along the foot axis
# (heel -> foot_index) and this far sideways, away from the body midline, both as fractions of
# the foot length (a foot is about 2.5x as long as it is wide; the little toe ends about 3/4 along).
SMALL_TOE_ALONG, SMALL_TOE_SIDE = 0.75, 0.25
SMALL_TOE_CONF = 0.5  # an estimate, not a detection: half the confidence of its sources
DUPLICATE_HAND = 0.5  # two hands closer than this x hand size (mean point gap) are one hand
FACE_NOSE_TIP = 30  # iBUG index of the nose tip, where the face's depth joins the body's

# The person is cropped out and zoomed before MediaPipe sees it: its pose detector looks at a
# 224 px copy of the whole input, where people smaller than about a third of the frame (a
# surveillance view like vtest.avi) are not found. A square crop of CROP_MARGIN x the body's
# box, upscaled to at least CROP_PX, finds them and gives the face and hand models more pixels.
CROP_MARGIN = 1.4
CROP_PX = 384
MAX_CROP_PX = 1280  # and downscaled to at most this (4K frames)
MIN_CROP_PX = 48
# When the full frame shows no one, overlapping tiles of these fractions of the frame's short
# side (half a tile apart) are searched, larger first; the most prominent person found (largest
# body box) wins. 2/3 misses 1 in 25 vtest.avi frames, 1/2 none (at twice the cost).
TILE_FRACTIONS = (2 / 3, 1 / 2)
RECROP_SHIFT, RECROP_SCALE = 0.15, 0.25  # re-centre a clip's crop past these drifts
REDETECT_EVERY = 5  # frames between searches while a clip has lost its person
ZOOM_WORTH = 0.75  # an image is looked at again in the person's crop if that zooms in more
SEARCH_NEAR = 2.0  # a lost person is first looked for in its last crop grown this much


class NoPersonFound(InvalidInput):
    """MediaPipe found no person in any frame of the input."""


def _landmarks(landmark_list, with_visibility: bool) -> np.ndarray:
    return np.array([(p.x, p.y, p.z, p.visibility if with_visibility else 1.0)
                     for p in landmark_list.landmark], dtype=np.float64)


def _check_rgb(frames: np.ndarray, ndim: int) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != ndim or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        shape = "(T, H, W, 3)" if ndim == 4 else "(H, W, 3)"
        raise InvalidInput(f"expected RGB uint8 {shape}, got {frames.dtype} {frames.shape}; "
                           "decode the video/image to RGB uint8 first")
    return np.ascontiguousarray(frames)


@dataclass(frozen=True)
class _Box:
    """A square crop in pixels of the full frame (it may reach past the frame's borders)."""

    x0: float
    y0: float
    side: float

    def crop(self, frame: np.ndarray) -> np.ndarray:
        px = int(np.clip(round(self.side), CROP_PX, MAX_CROP_PX))
        step = self.side / px  # frame pixels per crop pixel
        affine = np.array([[step, 0, self.x0], [0, step, self.y0]])
        return cv2.warpAffine(frame, affine, (px, px), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT)

    def to_frame(self, pts: np.ndarray, width: int, height: int) -> np.ndarray:
        """Crop-normalised (x, y, z, c) -> frame-normalised; z scales like x."""
        out = pts.copy()
        out[:, 0] = (self.x0 + pts[:, 0] * self.side) / width
        out[:, 1] = (self.y0 + pts[:, 1] * self.side) / height
        out[:, 2] = pts[:, 2] * self.side / width
        return out

    @staticmethod
    def around(pose: np.ndarray, width: int, height: int) -> _Box:
        """The crop around a frame-normalised (33, 4) pose (its confident points)."""
        pts = pose[pose[:, 3] > 0.5] if (pose[:, 3] > 0.5).sum() >= 3 else pose
        px = pts[:, :2] * (width, height)
        lo, hi = px.min(axis=0), px.max(axis=0)
        side = max(CROP_MARGIN * (hi - lo).max(), MIN_CROP_PX)
        return _Box(*((lo + hi) / 2 - side / 2), side)

    def scaled(self, factor: float) -> _Box:
        """The same centre, `factor` times the side."""
        (cx, cy), side = self.centre(), self.side * factor
        return _Box(cx - side / 2, cy - side / 2, side)

    def follow(self, new: _Box) -> _Box:
        """This crop, or one centred on `new` once the person drifted past RECROP_SHIFT or
        RECROP_SCALE. The side changes by at most RECROP_SCALE per step, so a frame where only
        part of the body is confidently seen does not shrink the crop onto that part."""
        centre, new_centre = self.centre(), new.centre()
        ratio = new.side / self.side
        if (np.hypot(*(new_centre - centre)) <= RECROP_SHIFT * self.side
                and abs(ratio - 1) <= RECROP_SCALE):
            return self
        side = self.side * np.clip(ratio, 1 / (1 + RECROP_SCALE), 1 + RECROP_SCALE)
        return _Box(new_centre[0] - side / 2, new_centre[1] - side / 2, side)

    def centre(self) -> np.ndarray:
        return np.array([self.x0 + self.side / 2, self.y0 + self.side / 2])


def _tiles(width: int, height: int, fraction: float):
    side = round(fraction * min(width, height))
    step = side // 2
    for y0 in sorted({*range(0, height - side, step), height - side}):
        for x0 in sorted({*range(0, width - side, step), width - side}):
            yield _Box(x0, y0, side)


class HolisticExtractor:
    """MediaPipe Holistic -> (T, 133, 4) keypoints of one person (the one MediaPipe's detector
    picks in the whole frame; if it finds none there, the largest found in tiles). Use as a
    context manager.

    Three graphs, each built once on first use and reused: a Holistic tracking graph for clips
    (`extract`; it follows the person from frame to frame, its state cleared between tracks), a
    Holistic static-image graph for single images (`extract_image`), and a static pose-only
    graph that finds the person to follow (the same pose models, bitwise the same pose, ~0.6x
    the time: a search looks at many tiles and needs no face or hands).

    Depth: the body's z comes from MediaPipe's 3D world landmarks (metres, origin at the hip
    centre, larger = farther), converted to frame-width units by the least-squares scale
    between the world x, y and the image x, y of the confident joints. Face and hand z (relative
    to the face centre and the wrist, roughly in width units) are shifted to hang off the body's
    nose tip and wrists. Points outside the frame get confidence 0.
    """

    def __init__(self, *, model_complexity: int = 1, refine_face: bool = True,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        if model_complexity != 1:  # 0 and 2 download their pose model on first use
            raise InvalidInput("mediapipe==0.10.21 ships only the model_complexity=1 pose "
                               "model (0 and 2 would download theirs, and this runs offline)")
        self._options = dict(model_complexity=model_complexity, refine_face_landmarks=refine_face,
                             min_detection_confidence=min_detection_confidence,
                             min_tracking_confidence=min_tracking_confidence)
        self._graphs: dict[str, object] = {}  # "track" | "image" | "search" -> graph
        self._tracked = False  # the tracking graph has state (frames since its last start)
        self._restart: threading.Thread | None = None  # its restart after the last clip
        self._restart_error: BaseException | None = None

    def __enter__(self) -> HolisticExtractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @quiet_native_logs()  # a graph restarted but never used starts as it closes
    def close(self) -> None:
        if self._restart is not None:
            self._restart.join()
            self._restart = None
        for graph in self._graphs.values():
            graph.close()
        self._graphs.clear()

    def _graph(self, kind: str):
        if kind not in self._graphs:
            # heavy imports; only when used
            from mediapipe.python.solutions.holistic import Holistic
            from mediapipe.python.solutions.pose import Pose

            if kind == "search":
                options = {k: v for k, v in self._options.items() if k != "refine_face_landmarks"}
                self._graphs[kind] = Pose(static_image_mode=True, **options)
            else:
                self._graphs[kind] = Holistic(static_image_mode=kind == "image", **self._options)
        return self._graphs[kind]

    def _tracker(self):
        """The tracking graph, once a restart begun after the last clip is done."""
        if self._restart is not None:
            self._restart.join()
            self._restart, error = None, self._restart_error
            self._restart_error = None
            if error is not None:
                raise error
        return self._graph("track")

    def _new_track(self, tracker):
        """Start following a new person with no state of the last track: the graph is clean
        at a clip's start (new, or restarted after the last clip); within a clip that lost
        its person, restart it here."""
        if self._tracked:
            tracker.reset()
        self._tracked = True

    def _restart_after_clip(self) -> None:
        """Restart the tracking graph in the background once a clip is done, so that the
        next clip starts on a clean graph without waiting for it: a restart reloads every
        TFLite model (~90 ms of CPU, asynchronously), and in a server it then overlaps with
        the request's later stages instead of delaying the next request's first frame.
        (A frame without a person does not clear the graph: the visibility and
        world-landmark filters keep their state.)"""
        if not self._tracked:
            return
        tracker, self._tracked = self._graphs["track"], False

        def restart():
            try:
                with quiet_native_logs():  # its start-up lines, printed while models load
                    tracker.reset()
                    tracker._graph.wait_until_idle()  # every calculator opened (models loaded)
            except BaseException as error:  # noqa: BLE001 - raised by the next _tracker()
                self._restart_error = error

        self._restart = threading.Thread(target=restart, name="holistic-restart", daemon=True)
        self._restart.start()

    def _holistic(self, frame: np.ndarray, box: _Box) -> tuple[np.ndarray, np.ndarray | None]:
        """Static Holistic on `box` of the frame: ((133, 4) keypoints, (33, 4) pose or None)."""
        return _convert(self._graph("image").process(box.crop(frame)), box, frame.shape)

    # Graph starts and each sub-model's first use print C++ log noise, partly after process()
    # returns: a whole call's window catches it (see native_logs).
    @quiet_native_logs()
    def extract(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) uint8 RGB clip -> (T, 133, 4) float32; frames without the person are
        all zero. Raises NoPersonFound when no frame has one."""
        frames = _check_rgb(frames, 4)
        tracker = self._tracker()
        try:
            out = self._track(tracker, frames)
        finally:
            self._restart_after_clip()
        if not out[..., K.CONF].any():
            raise NoPersonFound(f"no person found in any of the {len(frames)} frames; use a clip "
                                "in which a person is visible (whole or upper body)")
        return out

    def _track(self, tracker, frames: np.ndarray) -> np.ndarray:
        out = K.empty(len(frames))
        box, last_box, last_search = None, None, -REDETECT_EVERY
        for t, frame in enumerate(frames):
            pose = None
            if box is not None:
                out[t], pose = _convert(tracker.process(box.crop(frame)), box, frame.shape)
            if pose is None:  # following no one: not found yet, or lost in this frame
                if box is None and t - last_search < REDETECT_EVERY:
                    continue  # searching every frame of a clip without people is slow
                last_box = box or last_box
                found, last_search = self._find_person(frame, near=last_box), t
                if found is None:
                    box = None
                    continue
                self._new_track(tracker)  # do not carry the last track's state over
                box = found.crop
                out[t], pose = _convert(tracker.process(box.crop(frame)), box, frame.shape)
                if pose is None:  # keep what the search saw; the tracker tries the next frame
                    out[t] = self._holistic(frame, found.searched)[0]
                    continue
            box = box.follow(_Box.around(pose, frame.shape[1], frame.shape[0]))
        return out

    @quiet_native_logs()
    def extract_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB image -> (133, 4) float32. Raises NoPersonFound."""
        image = _check_rgb(image, 3)
        # The whole image with Holistic first: most photos show their person large enough, and
        # then this one pass is the answer. Only if it finds no one, the pose-only search.
        whole = _Box(0, 0, max(image.shape[:2]))
        kps, pose = self._holistic(image, whole)
        if pose is not None:
            found = _Found(_Box.around(pose, image.shape[1], image.shape[0]), whole)
        else:
            found, kps = self._find_person(image, whole_frame=False), None
        if found is None:
            raise NoPersonFound("no person found in the image; use a photo that shows the "
                                "character's face or body")
        if found.crop.side < ZOOM_WORTH * found.searched.side:  # the crop shows them bigger
            zoomed, pose = self._holistic(image, found.crop)
            if pose is not None:
                return zoomed
        return kps if kps is not None else self._holistic(image, found.searched)[0]

    def _find_person(self, frame: np.ndarray, near: _Box | None = None, *,
                     whole_frame: bool = True) -> _Found | None:
        """A person: near the box `near` (where a clip lost its person) if there is one there,
        else the most prominent one, looking at the whole frame first (unless the caller
        already did), then at ever smaller tiles."""
        h, w = frame.shape[:2]
        stages = [[near], [near.scaled(SEARCH_NEAR)]] if near is not None else []
        stages += [[_Box(0, 0, max(h, w))]] if whole_frame else []
        stages += [list(_tiles(w, h, f)) for f in TILE_FRACTIONS]
        for boxes in stages:
            found = [f for f in (self._detect(frame, box) for box in boxes) if f is not None]
            if found:
                return max(found, key=lambda f: f.crop.side)
        return None

    def _detect(self, frame: np.ndarray, box: _Box) -> _Found | None:
        """Whom the pose-only graph finds in `box` of the frame, or None."""
        res = self._graph("search").process(box.crop(frame))
        if res.pose_landmarks is None:
            return None
        pose = box.to_frame(_landmarks(res.pose_landmarks, True), frame.shape[1], frame.shape[0])
        return _Found(_Box.around(pose, frame.shape[1], frame.shape[0]), box)


class _Found(NamedTuple):
    crop: _Box  # the crop around the person found
    searched: _Box  # where it was found


def _convert(res, box: _Box, shape) -> tuple[np.ndarray, np.ndarray | None]:
    """MediaPipe results on a crop -> ((133, 4) contract keypoints, (33, 4) frame-normalised
    pose or None when there is no person)."""
    height, width = shape[:2]
    if res.pose_landmarks is None:
        return np.zeros((K.NUM_KEYPOINTS, 4), dtype=np.float32), None

    def frame_pts(landmark_list, with_visibility=False):
        return box.to_frame(_landmarks(landmark_list, with_visibility), width, height)

    pose = frame_pts(res.pose_landmarks, with_visibility=True)
    face = frame_pts(res.face_landmarks) if res.face_landmarks is not None else None
    hands = {side: frame_pts(getattr(res, f"{side}_hand_landmarks"))
             for side in ("left", "right") if getattr(res, f"{side}_hand_landmarks") is not None}
    world = _landmarks(res.pose_world_landmarks, with_visibility=True)
    return holistic_to_keypoints(pose, world, face, hands, aspect=width / height), pose


def holistic_to_keypoints(pose: np.ndarray, world: np.ndarray, face_mesh: np.ndarray | None,
                          hands: dict[str, np.ndarray], *, aspect: float) -> np.ndarray:
    """One frame of MediaPipe landmarks, frame-normalised (x, y, z, visibility): pose (33, 4),
    world (33, 4) in metres, face mesh (468|478, 4) or None, hands {"left"|"right": (21, 4)}
    -> (133, 4) float32 in the contract."""
    kps = np.zeros((K.NUM_KEYPOINTS, 4), dtype=np.float64)
    pose = pose.copy()
    pose[:, K.Z] = _body_depth(pose, world, aspect)
    kps[K.BODY] = pose[POSE_TO_COCO17]
    kps[K.FEET] = _feet(pose, aspect)
    if face_mesh is not None:
        face = face_mesh[IBUG68_PAIRS].mean(axis=1)
        face[:, K.Z] += kps[K.BODY_INDEX["nose"], K.Z] - face[FACE_NOSE_TIP, K.Z]
        kps[K.FACE] = face
    for side, pts in _drop_duplicate_hand(hands, pose, aspect).items():
        part = K.PARTS[f"{side}_hand"]
        kps[part] = pts
        kps[part, K.Z] += kps[K.BODY_INDEX[f"{side}_wrist"], K.Z]  # hand z is wrist-relative
    inside = ((kps[:, :2] >= 0) & (kps[:, :2] <= 1)).all(axis=1)
    kps[:, K.CONF] = np.clip(kps[:, K.CONF], 0, 1) * inside
    return kps.astype(np.float32)


def _drop_duplicate_hand(hands: dict[str, np.ndarray], pose: np.ndarray,
                         aspect: float) -> dict[str, np.ndarray]:
    """Holistic sometimes puts both hands on the same real hand (two wrists close together,
    e.g. both on a ball: basketball2.png). Keep the copy whose wrist is nearer its own body
    wrist."""
    if len(hands) < 2:
        return hands
    left, right = (to_metric(hands[s][:, :3], aspect)[:, :2] for s in ("left", "right"))
    size = np.sqrt(((left - left.mean(axis=0)) ** 2).sum(axis=1).mean())
    if np.linalg.norm(left - right, axis=1).mean() > DUPLICATE_HAND * size:
        return hands
    body = to_metric(pose[:, :3], aspect)[:, :2]
    gap = {side: np.linalg.norm(pts[0] - body[POSE_WRIST[side]])
           for side, pts in (("left", left), ("right", right))}
    keep = min(gap, key=gap.get)
    return {keep: hands[keep]}


def _body_depth(pose: np.ndarray, world: np.ndarray, aspect: float) -> np.ndarray:
    """z of the 33 pose points in frame-width units, from the world landmarks' metres."""
    img = to_metric(pose[:, :3], aspect)[:, :2]
    good = pose[:, K.CONF] > 0.5
    if good.sum() < 3:
        good = np.ones(len(pose), dtype=bool)
    w_c = world[good, :2] - world[good, :2].mean(axis=0)
    i_c = img[good] - img[good].mean(axis=0)
    metres_to_width = (w_c * i_c).sum() / max((w_c**2).sum(), 1e-12)
    if metres_to_width <= 0:  # degenerate fit: fall back to the image landmarks' own z
        return pose[:, K.Z]
    return world[:, 2] * metres_to_width


def _feet(pose: np.ndarray, aspect: float) -> np.ndarray:
    """The 6 contract foot points: big toe <- foot_index, heel <- heel, small toe estimated."""
    xyz = to_metric(pose[:, :3], aspect)
    rows = []
    for side, other in (("left", "right"), ("right", "left")):
        heel, toe = POSE_HEEL[side], POSE_FOOT_INDEX[side]
        axis = xyz[toe] - xyz[heel]
        outward = xyz[POSE_HIP[side]] - xyz[POSE_HIP[other]]  # away from the body's midline
        outward = unit(outward - (outward @ unit(axis)) * unit(axis))
        small = xyz[heel] + SMALL_TOE_ALONG * axis + SMALL_TOE_SIDE * np.linalg.norm(axis) * outward
        small_conf = SMALL_TOE_CONF * min(pose[heel, K.CONF], pose[toe, K.CONF])
        rows += [pose[toe], np.append(from_metric(small, aspect), small_conf), pose[heel]]
    return np.array(rows)
