"""Posing: a clip's controls turned into the 3D positions of MA-52's 44 joints.

The trunk and head are rigid frames rotated by the controls; arms and legs are two-link limbs solved by inverse
kinematics, so bones keep their lengths; hands carry five fingertips that open, curl or spread. Left and right
limbs are computed together, stacked on a leading axis of 2.
"""
from __future__ import annotations

import numpy as np

from mmn.layouts import get_layout

from .body import LEFT, SIDES
from .clip import Clip
from .geometry import cross, rot, two_link, unit

NUM_JOINTS = get_layout("ma52").num_joints

# Face points in the head frame (pivot above the neck): nose, eyes, ears, head top and the six extra face points.
HEAD_JOINTS = (0, 1, 2, 3, 4, 17, 26, 27, 28, 29, 30, 31)
_HEAD_POINTS = np.array([
    (0.0, -0.060, 0.085), (0.032, -0.085, 0.070), (-0.032, -0.085, 0.070), (0.075, -0.070, 0.000),
    (-0.075, -0.070, 0.000), (0.0, -0.170, 0.010), (0.0, -0.083, 0.078), (0.0, -0.040, 0.080),
    (-0.062, -0.095, 0.045), (0.062, -0.095, 0.045), (0.0, -0.028, 0.075), (0.0, -0.005, 0.065),
])
# Fingers thumb..little: sideways offset of the base towards the thumb, length, opening angle (rad).
_FINGER_BASE = np.array([0.028, 0.017, 0.004, -0.009, -0.020])
_FINGER_LEN = np.array([0.045, 0.065, 0.072, 0.066, 0.052])
_FINGER_ANGLE = np.array([0.9, 0.18, 0.0, -0.14, -0.3])
# Box where a resting wrist may sit, relative to the hip centre: lower and upper corners, left and right hand.
_REST_BOX = (np.array([[[-0.05, -0.18, 0.0]], [[-0.30, -0.18, 0.0]]]),
             np.array([[[0.30, 0.06, 0.30]], [[0.05, 0.06, 0.30]]]))


def pose(k: Clip) -> np.ndarray:
    """(L, 44, 3) joint positions of a clip's body."""
    c, b = k.c, k.person
    out = np.zeros((len(k.t), NUM_JOINTS, 3))

    rp = rot(c.pelvis)
    rc = rp @ rot(c.chest)
    rh = rc @ rot(c.head)
    root = c.root
    up = -rc[:, :, 1]  # the chest's own upward axis (columns of a rotation are its rotated axes)
    neck = root + b.trunk * up
    pivot = neck + 0.03 * up
    out[:, 19], out[:, 18] = root, neck
    out[:, list(HEAD_JOINTS)] = pivot[:, None] + (_HEAD_POINTS * b.head) @ rh.transpose(0, 2, 1)

    seat = rot(c.pelvis[:1] * (1.0, 0.0, 0.0))[0].T  # feet stay on the floor, which turns with the chair only
    hip = root + SIDES * b.hip_w * rp[:, :, 0]
    knee, ankle = two_link(hip, c.ankle @ seat, b.thigh, b.shin, c.knee_pole @ seat)
    heel = c.heel[:, :, None]
    toes = unit(np.concatenate([np.broadcast_to(0.25 * SIDES, heel.shape), 0.35 + 1.2 * heel,
                                np.ones_like(heel)], axis=2) @ seat)
    shoulder = root + SIDES * b.shoulder_w * rc[:, :, 0] + (b.trunk - 0.02 + c.shrug.T[:, :, None]) * up
    frames = {"pelvis": (root, rp), "chest": (neck, rc), "head": (pivot, rh)}  # name: origin (L, 3), rotation
    for i in range(2):
        frames.update({f"hip{i}": (hip[i], rp), f"thigh{i}": ((hip[i] + knee[i]) / 2, rp), f"knee{i}": (knee[i], rp),
                       f"ankle{i}": (ankle[i], rp), f"shoulder{i}": (shoulder[i], rc)})
        frames[f"forearm{i}"] = frames[f"shoulder{i}"]  # until the arms are placed
    elbow, wrist, fingers, palm = _arms(k, frames, shoulder, rp, rc)
    if any(r.frame == "forearm_other" for r in c.reaches):  # a hand goes to the other forearm, now placed
        frames.update({f"forearm{i}": ((elbow[i] + wrist[i]) / 2, rc) for i in range(2)})
        elbow, wrist, fingers, palm = _arms(k, frames, shoulder, rp, rc)
    hand, tips = _hands(k, wrist, fingers, palm)

    limbs = ((5, shoulder), (7, elbow), (9, wrist), (11, hip), (13, knee), (15, ankle),
             (24, ankle + (0.0, 0.045, 0.0) - 0.03 * toes * (1.0 - heel)),
             (20, ankle + b.foot * toes + SIDES * (-0.02, 0.0, 0.0) + (0.0, 0.04, 0.0)),
             (22, ankle + 0.85 * b.foot * toes + SIDES * (0.03, 0.0, 0.0) + (0.0, 0.045, 0.0)))
    for joint, value in limbs:
        out[:, joint:joint + 2] = value.transpose(1, 0, 2)
    out[:, [32, 38]] = hand.transpose(1, 0, 2)
    out[:, 33:38], out[:, 39:44] = tips
    return out


def _rest_direction(rest: np.ndarray, pulled: np.ndarray, weight: np.ndarray, kappa: float) -> np.ndarray:
    """Resting directions (2, L, 3) turned away from where reaches pull them (`pulled`, weighted sums of goal
    directions), so that a clip's mean direction changes little; the turn is limited to stay plausible."""
    shift = kappa * (pulled - weight * rest).mean(axis=1, keepdims=True) / (
        1.0 - np.minimum(weight.mean(axis=1, keepdims=True), 0.8))
    size = np.sqrt(np.sum(shift * shift, axis=-1, keepdims=True))
    return unit(rest - shift * np.minimum(1.0, 1.2 / np.maximum(size, 1e-9)))


def _arms(k: Clip, frames: dict[str, tuple[np.ndarray, np.ndarray]], shoulder: np.ndarray, rp: np.ndarray,
          rc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Elbows, wrists, finger directions and palm directions, (2, L, 3) each: resting hands pulled to their goals."""
    c, b, n = k.c, k.person, len(k.t)
    rest = c.root + np.einsum("lij,slj->sli", rp, c.wrist)
    weight = np.zeros((2, n, 1))
    excursion, hand_dir, palm_dir, pole = np.zeros((4, 2, n, 3))
    for r in c.reaches:
        i = 0 if r.side == LEFT else 1
        mirror = np.array([r.side, 1.0, 1.0])
        origin, rotation = frames[r.frame.replace("same", str(i)).replace("other", str(1 - i)).replace("_", "")]
        w = r.env[:, None]
        goal_dir = unit(rc @ (r.hand_dir * mirror))
        goal = origin + rotation @ (r.point * mirror) - r.grip * b.finger * goal_dir
        if r.wiggle is not None:
            goal = goal + r.wiggle * mirror * w
        excursion[i] += w * (goal - rest[i])
        weight[i] += w
        hand_dir[i] += w * goal_dir
        palm_dir[i] += w * unit(rc @ (r.palm * mirror))
        pole[i] += w * unit(rc @ (r.pole * mirror))
    weight = np.clip(weight, 0.0, 1.0)
    kappa = k.diff.mean_compensation

    # A resting hand sits away from its goal so that its mean over the clip stays where it was, within the reach
    # of a seated arm; the goal itself is still reached.
    shift = kappa * excursion.mean(axis=1, keepdims=True) / (1.0 - np.minimum(weight.mean(axis=1, keepdims=True),
                                                                               0.8))
    reaching = weight.any(axis=(1, 2))[:, None, None]
    moved = np.where(reaching, c.root + np.clip(rest - shift - c.root, *_REST_BOX), rest)
    target = moved + excursion - weight * (moved - rest)

    def resting(v: np.ndarray) -> np.ndarray:  # (2, 3) chest-frame directions, per frame
        return unit(np.einsum("lij,sj->sli", rc, v))

    rest_pole = _rest_direction(resting(c.elbow_pole), pole, weight, kappa)
    elbow, wrist = two_link(shoulder, target, b.upper_arm, b.forearm, rest_pole * (1 - weight) + pole)
    forearm = _rest_direction(unit(unit(wrist - elbow) + np.einsum("lij,sj->sli", rc, c.wrist_bend)), hand_dir,
                              weight, kappa)
    fingers = unit(forearm * (1 - weight) + hand_dir)
    palm = _rest_direction(resting(c.palm), palm_dir, weight, kappa) * (1 - weight) + palm_dir
    palm = unit(palm - np.sum(palm * fingers, axis=-1, keepdims=True) * fingers)
    return elbow, wrist, fingers, palm


def _hands(k: Clip, wrist: np.ndarray, fingers: np.ndarray, palm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hand roots (2, L, 3) and fingertips (2, L, 5, 3) from the wrists, finger directions, palms and curls."""
    b = k.person
    thumb = SIDES * cross(fingers, palm)  # the thumb lies towards the body's midline when the palm faces down
    hand = wrist + b.hand * fingers
    curl = np.clip(k.c.curl, -0.5, 1.0)[..., None]
    angle = _FINGER_ANGLE[:, None] * (1.0 - np.minimum(curl, 0.0))  # negative curl spreads the fingers
    along, across = fingers[:, :, None], thumb[:, :, None]
    open_dir = np.cos(angle) * along + np.sin(angle) * across
    closed_dir = 0.25 * along + 0.45 * palm[:, :, None]
    bend = np.maximum(curl, 0.0)
    tips = hand[:, :, None] + _FINGER_BASE[:, None] * across + (_FINGER_LEN * b.finger)[:, None] * (
        (1.0 - bend) * open_dir + bend * closed_dir)
    return hand, tips
