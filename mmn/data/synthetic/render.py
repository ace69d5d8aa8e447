"""One clip from class to pixels: a random length, the class's motion and free-hand fidgeting posed in 3D, a
camera (view angle, in-plane roll, scale, offset), then what pose estimators add: per-frame jitter, a per-clip
offset of each joint, and short runs of missing joints (zeros, as pose estimators write them).

Estimators are worse on fingers and feet than on the trunk and face, so noise is scaled per joint and scores are
lower where noise is higher.
"""
from __future__ import annotations

import numpy as np

from mmn.layouts import MA52_CLASS_NAMES

from .clip import Clip
from .difficulty import DEFAULT_DIFFICULTY, Difficulty
from .geometry import rot
from .hands import fidget
from .motions import PROGRAMS
from .pose import HEAD_JOINTS, NUM_JOINTS, pose

MIN_FRAMES, MAX_FRAMES = 30, 150

# Noise multiplier per joint: pose estimators are worse on fingers and feet than on the trunk and face.
_JITTER_SCALE = np.ones(NUM_JOINTS)
_JITTER_SCALE[list(HEAD_JOINTS)] = 0.7
_JITTER_SCALE[[32, 38]] = 1.5
_JITTER_SCALE[[33, 34, 35, 36, 37, 39, 40, 41, 42, 43]] = 2.0
_JITTER_SCALE[20:26] = 1.3
# Joints that a missing-joint event drops together: a hand, a foot, the face.
_MISSING_GROUPS = (
    (9, 32, 33, 34, 35, 36, 37), (10, 38, 39, 40, 41, 42, 43), (15, 20, 22, 24), (16, 21, 23, 25), HEAD_JOINTS,
)


def render_clip(rng: np.random.Generator, label: int, difficulty: Difficulty = DEFAULT_DIFFICULTY,
                ) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic clip of class `label`: keypoints (L, 44, 2) in pixels and scores (L, 44), float32."""
    length = int(round(np.exp(rng.uniform(np.log(MIN_FRAMES), np.log(MAX_FRAMES)))))
    clip = Clip(rng, length, difficulty)
    PROGRAMS[MA52_CLASS_NAMES[label]](clip)
    fidget(clip)
    joints = pose(clip)

    # Camera: a view angle around the person, then an in-plane rotation, scale and offset in pixels.
    view = rot(np.radians([[rng.uniform(-1, 1) * difficulty.camera_yaw_deg, rng.uniform(-5, 12), 0.0]]))[0]
    xy = (joints @ view.T)[..., :2]
    roll = np.radians(rng.uniform(-1, 1) * difficulty.camera_roll_deg)
    scale = rng.uniform(330.0, 520.0)  # pixels per standing height
    in_plane = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    xy = xy @ in_plane.T * scale + np.array([rng.uniform(480, 800), rng.uniform(380, 520)])

    xy += rng.normal(size=xy.shape) * (difficulty.jitter * scale * _JITTER_SCALE)[None, :, None]
    xy += rng.normal(size=xy.shape[1:]) * (difficulty.bias * scale * _JITTER_SCALE)[:, None]
    score = rng.uniform(0.6, 1.0, (length, NUM_JOINTS)) / np.sqrt(_JITTER_SCALE)
    if rng.random() < difficulty.missing_prob:
        _drop_joints(rng, xy, score)
    return xy.astype(np.float32), score.astype(np.float32)


def _drop_joints(rng: np.random.Generator, xy: np.ndarray, score: np.ndarray) -> None:
    """Zero one to three short runs of missing joints in place: a body part, a single joint, or the whole person
    for a frame or two (a missed detection)."""
    for _ in range(int(rng.integers(1, 4))):
        choice = int(rng.integers(len(_MISSING_GROUPS) + 2))
        if choice < len(_MISSING_GROUPS):
            joints_out, run = list(_MISSING_GROUPS[choice]), int(rng.integers(1, 9))
        elif choice == len(_MISSING_GROUPS):
            joints_out, run = [int(rng.integers(NUM_JOINTS))], int(rng.integers(1, 9))
        else:
            joints_out, run = list(range(NUM_JOINTS)), int(rng.integers(1, 3))
        start = int(rng.integers(0, len(xy) - run + 1))
        xy[start:start + run, joints_out] = 0.0
        score[start:start + run, joints_out] = 0.0
