"""The synthetic person: body proportions, the per-frame controls that pose the body, the reaches that take a hand
to a goal, and an individual's resting posture with its class-independent idle motion.

Controls are angles and targets, not joint positions: `pose.pose` turns them into joints, so bones keep their
lengths whatever a motion does to the controls. A clip's individual (proportions, resting posture) is drawn
independently of its class.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .difficulty import Difficulty

FPS = 30.0
LEFT, RIGHT = 1.0, -1.0  # sign of x on the person's left and right side (they face the camera)
SIDES = np.array([LEFT, RIGHT])[:, None, None]  # for left and right limbs stacked on a leading axis


@dataclass
class Person:
    """Proportions in body units (1 = standing height); `finger` and `head` are factors on the model's sizes."""

    trunk: float
    shoulder_w: float
    hip_w: float
    upper_arm: float
    forearm: float
    hand: float
    finger: float
    thigh: float
    shin: float
    foot: float
    head: float


@dataclass
class Reach:
    """A hand moving from its resting place to a point on the body (or in space) and back, per `env`."""

    side: float
    frame: str  # where `point` is: head, chest, pelvis, or hip/thigh/knee/ankle/shoulder/forearm + _same/_other
    point: np.ndarray  # (3,) in that frame, for the left hand; mirrored for the right
    env: np.ndarray  # (L,) 0 at rest, 1 at the goal
    grip: float  # distance from the wrist to the touching part of the hand, along the fingers
    hand_dir: np.ndarray  # (3,) direction of the fingers at the goal, in the chest frame, left hand
    palm: np.ndarray  # (3,) direction the palm faces at the goal, chest frame, left hand
    pole: np.ndarray  # (3,) direction the elbow points to at the goal, chest frame, left hand
    wiggle: np.ndarray | None = None  # (L, 3) extra motion of the hand at the goal (scratching, rubbing...)


@dataclass
class Controls:
    """What poses the body in every frame; motions add to these."""

    root: np.ndarray  # (L, 3) translation of the hip centre
    pelvis: np.ndarray  # (L, 3) yaw, pitch, roll
    chest: np.ndarray  # (L, 3) relative to the pelvis
    head: np.ndarray  # (L, 3) relative to the chest
    shrug: np.ndarray  # (L, 2) shoulder elevation, left and right
    wrist: np.ndarray  # (2, L, 3) resting wrist targets in the pelvis frame, left and right
    elbow_pole: np.ndarray  # (2, 3) resting elbow direction, chest frame
    palm: np.ndarray  # (2, 3) resting palm direction, chest frame
    wrist_bend: np.ndarray  # (2, 3) resting hand direction minus the forearm's, chest frame
    curl: np.ndarray  # (2, L, 5) finger curl, 0 open, 1 fist (negative spreads)
    ankle: np.ndarray  # (2, L, 3) ankle targets in the seat frame (fixed to the floor)
    knee_pole: np.ndarray  # (2, L, 3) knee direction, seat frame
    heel: np.ndarray  # (2, L) heel raise, 0 flat, 1 on the toes
    reaches: list[Reach] = field(default_factory=list)


def smooth_noise(rng: np.random.Generator, t: np.ndarray, dims: int, low: float, high: float) -> np.ndarray:
    """(L, dims) smooth random signals of about unit amplitude: three sinusoids each, frequencies in [low, high]."""
    f = rng.uniform(low, high, (3, dims))
    phase = rng.uniform(0, 2 * np.pi, (3, dims))
    return np.sin(2 * np.pi * f[None] * t[:, None, None] + phase[None]).sum(axis=1) / np.sqrt(1.5 * 3)


def sample_person(rng: np.random.Generator, spread: float) -> Person:
    """An individual's proportions: each a base value varied by up to `spread` times its own relative range."""
    def vary(base: float, rel: float) -> float:
        return base * (1.0 + spread * rng.uniform(-rel, rel))

    return Person(trunk=vary(0.30, 0.08), shoulder_w=vary(0.115, 0.12), hip_w=vary(0.06, 0.15),
                  upper_arm=vary(0.165, 0.06), forearm=vary(0.145, 0.06), hand=vary(0.045, 0.1),
                  finger=vary(1.0, 0.1), thigh=vary(0.245, 0.06), shin=vary(0.25, 0.06),
                  foot=vary(0.13, 0.1), head=vary(0.9, 0.08))


def rest_controls(rng: np.random.Generator, length: int, diff: Difficulty) -> Controls:
    """An individual's resting posture plus class-independent idle motion (breathing, sway, drifting hands)."""
    p, n, r = diff.posture, length, np.radians
    t = np.arange(n) / FPS

    def const(low: Sequence[float], high: Sequence[float]) -> np.ndarray:
        lo, hi = np.asarray(low, float), np.asarray(high, float)
        mid = (lo + hi) / 2
        return np.broadcast_to(mid + p * (lo + (hi - lo) * rng.random(lo.shape) - mid), (n, len(lo))).copy()

    # Idle drift of wrists (6), fingers (10), ankles (6), hip centre (3), chest (3) and head (3), in one draw.
    size = np.repeat([0.008, 0.08, 0.003, 0.004, r(1.5), r(2.5)], [6, 10, 6, 3, 3, 3])
    drift = diff.idle * size * smooth_noise(rng, t, len(size), 0.1, 0.6)
    wrist = drift[:, :6].reshape(n, 2, 3).transpose(1, 0, 2).copy()
    curl = drift[:, 6:16].reshape(n, 2, 5).transpose(1, 0, 2) + 0.35 + p * rng.uniform(-0.35, 0.35, (2, 1, 5))
    ankle = drift[:, 16:22].reshape(n, 2, 3).transpose(1, 0, 2).copy()
    knee_pole = np.empty((2, n, 3))
    clasped = rng.random() < 0.25  # hands held together in the lap
    for i, s in enumerate((LEFT, RIGHT)):
        if clasped:
            wrist[i] += const((s * 0.02, -0.06, 0.14), (s * 0.05, 0.04, 0.24))
        else:
            wrist[i] += const((s * 0.02, -0.14, 0.08), (s * 0.24, 0.05, 0.26))
        ankle[i] += const((s * 0.05, 0.24, 0.10), (s * 0.17, 0.30, 0.30))
        knee_pole[i] = const((0.0, -0.6, 1.0), (s * 0.6, -0.2, 1.0))
    breathing = 0.003 * diff.idle * np.sin(2 * np.pi * rng.uniform(0.2, 0.35) * t + rng.uniform(0, 2 * np.pi))
    return Controls(
        root=drift[:, 22:25].copy(),
        pelvis=const((r(-12), 0, r(-4)), (r(12), 0, r(4))),
        chest=const((r(-8), r(-4), r(-5)), (r(8), r(18), r(5))) + drift[:, 25:28],
        head=const((r(-15), r(-10), r(-8)), (r(15), r(15), r(8))) + drift[:, 28:31],
        shrug=const((-0.01, -0.01), (0.01, 0.01)) + breathing[:, None],
        wrist=wrist,
        elbow_pole=np.array([(s * rng.uniform(0.3, 1.0), rng.uniform(0.5, 1.0), rng.uniform(-0.5, 0.2))
                             for s in (LEFT, RIGHT)]),
        palm=np.array([(-s * 0.5, 1.0, 0.0) if clasped else (0.0, 1.0, 0.2) for s in (LEFT, RIGHT)])
        + p * rng.uniform(-0.8, 0.8, (2, 3)),
        wrist_bend=p * rng.uniform(-0.8, 0.8, (2, 3)),
        curl=curl, ankle=ankle, knee_pole=knee_pole, heel=np.zeros((2, n)),
    )
