"""Index tables from MediaPipe Holistic's outputs to the whole-body keypoint contract.

MediaPipe names pose and hand sides after the *person* (pose LEFT_WRIST is the person's left
wrist, wherever it shows in the image), and Holistic's `left_hand_landmarks` is the hand crop
taken at the pose's LEFT_WRIST, i.e. the person's left hand too (checked on basketball1/2.png:
each hand's wrist lies on the pose wrist of the same name). The contract also names sides after
the person, so sides map straight through; no mirroring anywhere.
"""

from __future__ import annotations

import numpy as np

# MediaPipe Pose (33) index for each COCO-17 body point, in the contract's order.
POSE_TO_COCO17 = np.array([
    0,  # nose
    2, 5,  # left_eye, right_eye (MediaPipe's eye centres)
    7, 8,  # left_ear, right_ear
    11, 12,  # shoulders
    13, 14,  # elbows
    15, 16,  # wrists
    23, 24,  # hips
    25, 26,  # knees
    27, 28,  # ankles
])

# MediaPipe Pose indices of each foot's heel and foot_index (tip of the foot, near the base of
# the big and second toe).
POSE_WRIST = {"left": 15, "right": 16}
POSE_HIP = {"left": 23, "right": 24}
POSE_HEEL = {"left": 29, "right": 30}
POSE_FOOT_INDEX = {"left": 31, "right": 32}

# MediaPipe Face Mesh (468 points, 478 with iris refinement) -> iBUG 68. One row per iBUG point
# in iBUG order; a row with two indices takes their mean (iBUG points that fall between two
# mesh vertices). Source: the correspondence table of Peizhi Yan's Mediapipe_2_Dlib_Landmarks
# (github.com/PeizhiYan/Mediapipe_2_Dlib_Landmarks, `mp2dlib.py`), which is the table most
# public MediaPipe->dlib converters reuse; checked here by overlaying both on the astronaut
# portrait and the basketball photos. iBUG "right" = the person's right (image left when the
# person faces the camera), the same convention as MediaPipe's mesh.
FACE_MESH_TO_IBUG68 = (
    # jaw 0-16, from the person's right ear over the chin to the left ear
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,),
    (400,), (379,), (365,), (397, 288), (361,), (323,), (454,), (356,),
    # right brow 17-21 (outer to inner), left brow 22-26 (inner to outer)
    (70,), (63,), (105,), (66,), (107,),
    (336,), (296,), (334,), (293,), (300,),
    # nose bridge 27-30 (top to tip), nostrils 31-35 (right to left)
    (168, 6), (197, 195), (5,), (4,),
    (75,), (97,), (2,), (326,), (305,),
    # right eye 36-41, left eye 42-47: corner, two upper-lid points, corner, two lower-lid
    (33,), (160,), (158,), (133,), (153,), (144,),
    (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lips 48-59 (right corner, upper lip, left corner, lower lip)
    (61,), (39,), (37,), (0,), (267,), (269,), (291,),
    (321,), (314,), (17,), (84,), (91,),
    # inner lips 60-67
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)
assert len(FACE_MESH_TO_IBUG68) == 68

# The same table as two index columns (single-index rows repeat their index), so the 68 points
# are one fancy-indexed mean: mesh[IBUG68_PAIRS].mean(axis=1).
IBUG68_PAIRS = np.array([row if len(row) == 2 else row * 2 for row in FACE_MESH_TO_IBUG68])
