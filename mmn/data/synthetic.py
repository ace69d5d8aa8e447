"""A synthetic micro-action set in the MA-52 skeleton layout, written in the release's pickle format.

Every clip shows one person seated facing the camera, as in MA-52's interviews, performing one of the 52 classes.
The body is a small 3D kinematic model (trunk, head, two-link arms and legs solved by inverse kinematics, hands with
five fingertips, feet) projected onto the image, so bones keep plausible lengths whatever the motion. A clip's
individual (proportions, resting posture, camera) is drawn independently of its class, and class motions are
oscillations about, or excursions from and back to, that resting posture; what an excursion adds to the clip's
mean is taken back out of the resting posture (`Difficulty.mean_compensation`), within plausible limits. So the mean
posture of a clip says little about its class while the motion says much. Free hands fidget independently of the
class. Pose-estimator jitter, per-clip joint offsets and short runs of missing joints (zeros, as pose estimators
write them) are added last. The knobs that set how hard the task is live in `Difficulty`.

Classes come in confusable families on purpose: the same head rotation on different axes (nodding, shaking head,
bowing, tilting, turning), one-off versus repeated (bowing head / nodding), the same motion in opposite order
(stretching / retracting feet, spreading / closing legs), a hand travelling to neighbouring spots (nose, mouth,
eyes, face, forehead, ears) and touching versus scratching there.

Coordinates: x to the right, y down (image convention), z towards the camera; body units, 1 = standing height.
Unlike MA-52, the synthetic test split keeps its labels.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmn.layouts import MA52_CLASS_NAMES

try:
    import fcntl
except ImportError:  # Windows has no fcntl; the atomic rename alone then keeps the cache whole
    fcntl = None

GENERATOR_VERSION = 3  # bump when the generated data changes, so caches regenerate
FPS = 30.0
MIN_FRAMES, MAX_FRAMES = 30, 150
NUM_JOINTS = 44
SPLITS = ("train", "val", "test")
DEFAULT_CLIPS_PER_CLASS = 40  # train clips per class; val and test get a quarter each
MANIFEST = "synthetic.json"  # written last: its presence marks a complete set


@dataclass(frozen=True)
class Difficulty:
    """How hard the synthetic task is; every field scales one source of variation.

    The defaults trade two demands against each other. The `quick` budget should learn much in two minutes on a
    2-core CPU, which wants little nuisance; a clip's mean posture should say little about its class, which wants
    each person's resting posture to vary widely (large motions leave traces in the mean that the resting posture
    cannot always take back within a seated body's reach). Measured with tests/test_synthetic.py's ridge
    classifiers (val Top-1 on mean posture / motion features, chance 1.9%) and the quick budget (val Top-1, 8
    training seeds on one CPU thread each): the first defaults (amplitude 0.7-1.3, jitter 0.004, posture, idle and
    proportions 1.0, camera yaw 25 deg) left the quick budget near 8%; these give 11% / 58% and 52-59%.
    Posture 1.0 would give 15-16% on mean posture; posture 0.1 gave 59-60% on the earlier 5-epoch, 16-frame quick
    budget but 43% on mean posture.
    The classes whose motions leak most into the mean (large turns and bends, hands held high) are kept within
    what the spread can hide: turns and bends moderate, `rising up` clips that may begin already risen.
    """

    jitter: float = 0.0005  # pose-estimator noise, std in body heights (about 0.2 px for a 400 px person)
    bias: float = 0.0005  # pose-estimator offset of each joint that lasts the whole clip, std in body heights
    missing_prob: float = 0.03  # chance that a clip has short runs of missing (zeroed) joints
    amplitude: tuple[float, float] = (1.3, 1.8)  # range of the random factor on each clip's motion amplitude
    speed: tuple[float, float] = (0.8, 1.25)  # range of the random factor on motion speed
    posture: float = 1.25  # scale of the individual resting-posture randomisation
    proportions: float = 0.2  # scale of the individual body-proportion randomisation
    idle: float = 0.05  # scale of class-independent idle motion (breathing, sway, drifting hands)
    camera_roll_deg: float = 5.0  # in-plane camera rotation, uniform in +-this
    camera_yaw_deg: float = 15.0  # viewing angle around the person, uniform in +-this
    mean_compensation: float = 1.0  # share of a clip's mean excursion moved into its resting posture
    fidget: float = 0.15  # chance that a hand the class leaves free rests on the chin or shifts its place


DEFAULT_DIFFICULTY = Difficulty()

_LEFT, _RIGHT = 1.0, -1.0  # sign of x on the person's left and right side (they face the camera)
_SIDES = np.array([_LEFT, _RIGHT])[:, None, None]  # for left and right limbs stacked on a leading axis

# Face points in the head frame (pivot above the neck): nose, eyes, ears, head top and the six extra face points.
_HEAD_JOINTS = (0, 1, 2, 3, 4, 17, 26, 27, 28, 29, 30, 31)
_HEAD_POINTS = np.array([
    (0.0, -0.060, 0.085), (0.032, -0.085, 0.070), (-0.032, -0.085, 0.070), (0.075, -0.070, 0.000),
    (-0.075, -0.070, 0.000), (0.0, -0.170, 0.010), (0.0, -0.083, 0.078), (0.0, -0.040, 0.080),
    (-0.062, -0.095, 0.045), (0.062, -0.095, 0.045), (0.0, -0.028, 0.075), (0.0, -0.005, 0.065),
])
# Fingers thumb..little: sideways offset of the base towards the thumb, length, opening angle (rad).
_FINGER_BASE = np.array([0.028, 0.017, 0.004, -0.009, -0.020])
_FINGER_LEN = np.array([0.045, 0.065, 0.072, 0.066, 0.052])
_FINGER_ANGLE = np.array([0.9, 0.18, 0.0, -0.14, -0.3])
# Noise multiplier per joint: pose estimators are worse on fingers and feet than on the trunk and face.
_JITTER_SCALE = np.ones(NUM_JOINTS)
_JITTER_SCALE[list(_HEAD_JOINTS)] = 0.7
_JITTER_SCALE[[32, 38]] = 1.5
_JITTER_SCALE[[33, 34, 35, 36, 37, 39, 40, 41, 42, 43]] = 2.0
_JITTER_SCALE[20:26] = 1.3
# Box where a resting wrist may sit, relative to the hip centre: lower and upper corners, left and right hand.
_REST_BOX = (np.array([[[-0.05, -0.18, 0.0]], [[-0.30, -0.18, 0.0]]]),
             np.array([[[0.30, 0.06, 0.30]], [[0.05, 0.06, 0.30]]]))
# Joints that a missing-joint event drops together: a hand, a foot, the face.
_MISSING_GROUPS = (
    (9, 32, 33, 34, 35, 36, 37), (10, 38, 39, 40, 41, 42, 43), (15, 20, 22, 24), (16, 21, 23, 25), _HEAD_JOINTS,
)


# ----------------------------------------------------------------------------------------------------------------
# Geometry

def _rot(angles: np.ndarray) -> np.ndarray:
    """Rotation matrices (L, 3, 3) from (L, 3) yaw, pitch, roll: yaw turns about the vertical axis, pitch > 0 bends
    forward/down, roll tilts in the image plane."""
    (cy, cp, cr), (sy, sp, sr) = np.cos(angles.T), np.sin(angles.T)
    # The product Ry(yaw) Rx(pitch) Rz(roll) written out, with Rx(p) = [[1, 0, 0], [0, cp, sp], [0, -sp, cp]].
    return np.stack([
        cy * cr - sy * sp * sr, -cy * sr - sy * sp * cr, sy * cp,
        cp * sr, cp * cr, sp,
        -sy * cr - cy * sp * sr, sy * sr - cy * sp * cr, cy * cp,
    ], axis=1).reshape(-1, 3, 3)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.sqrt(np.sum(v * v, axis=-1, keepdims=True)), 1e-9)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product over the last axis (np.cross is slow on small arrays)."""
    return np.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1], a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                     a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], axis=-1)


def _two_link(root: np.ndarray, target: np.ndarray, a: float, b: float, pole: np.ndarray,
              ) -> tuple[np.ndarray, np.ndarray]:
    """Middle joint and reachable end of a two-link limb (L, 3) each; the middle joint bends towards `pole`."""
    d = target - root
    dist = np.sqrt(np.sum(d * d, axis=-1, keepdims=True))
    axis = d / np.maximum(dist, 1e-9)
    dist = np.clip(dist, abs(a - b) + 1e-3, (a + b) * 0.999)  # out-of-reach targets straighten the limb
    along = (a * a + dist * dist - b * b) / (2.0 * dist)
    side = pole - np.sum(pole * axis, axis=-1, keepdims=True) * axis
    mid = root + axis * along + _unit(side) * np.sqrt(np.maximum(a * a - along * along, 0.0))
    return mid, root + axis * dist


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _bump(t: np.ndarray, start: float, rise: float, hold: float, fall: float) -> np.ndarray:
    """0 until `start`, smooth rise to 1, hold, smooth fall back to 0 (an infinite hold never falls)."""
    return _smoothstep((t - start) / rise) * (1.0 - _smoothstep((t - start - rise - hold) / fall))


# ----------------------------------------------------------------------------------------------------------------
# An individual and the per-frame controls of their body

@dataclass
class _Person:
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
class _Reach:
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
class _Controls:
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
    reaches: list[_Reach] = field(default_factory=list)


class _Clip:
    """What a class program needs: time, random draws scaled by the clip's amplitude and speed, and the controls."""

    def __init__(self, rng: np.random.Generator, length: int, diff: Difficulty) -> None:
        self.rng = rng
        self.diff = diff
        self.t = np.arange(length) / FPS
        self.duration = length / FPS
        self.amp = rng.uniform(*diff.amplitude)
        self.speed = rng.uniform(*diff.speed)
        self.person = _sample_person(rng, diff.proportions)
        self.c = _rest_controls(rng, length, diff)

    def u(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def deg(self, low: float, high: float) -> float:
        """A random angle in radians, scaled by the clip's amplitude."""
        return float(np.radians(self.rng.uniform(low, high))) * self.amp

    def side(self) -> float:
        return _RIGHT if self.rng.random() < 0.6 else _LEFT  # most people act with the right hand

    def freq(self, low: float, high: float) -> float:
        return self.u(low, high) * self.speed

    def window(self, stay: float = 0.1, hold: tuple[float, float] = (0.1, 0.35)) -> np.ndarray:
        """Envelope of one excursion that fits the clip; with probability `stay` it never returns. It may have
        begun before the clip did, as in trimmed videos."""
        rise, fall = self.u(0.1, 0.25) / self.speed, self.u(0.1, 0.25) / self.speed
        keep = self.u(*hold) / self.speed
        total = rise + keep + fall
        if total > 0.95:
            rise, keep, fall = (x * 0.95 / total for x in (rise, keep, fall))
            total = 0.95
        start = self.u(-0.3 * rise, 1.0 - total) * self.duration
        if self.rng.random() < stay:
            keep = np.inf
        return _bump(self.t, start, rise * self.duration, keep * self.duration, fall * self.duration)

    def active(self) -> np.ndarray:
        """Envelope of an action that lasts most of the clip (oscillations)."""
        rise, fall = self.u(0.03, 0.15), self.u(0.03, 0.15)
        start = self.u(0.0, 0.1)
        keep = max(self.u(0.55, 0.85) - rise - start, 0.1)
        return _bump(self.t, start * self.duration, rise * self.duration, keep * self.duration,
                     fall * self.duration)

    def wave(self, low: float, high: float) -> np.ndarray:
        """A sinusoid of random frequency (Hz, scaled by speed) and phase."""
        return np.sin(2 * np.pi * self.freq(low, high) * self.t + self.u(0, 2 * np.pi))

    def centred(self, x: np.ndarray) -> np.ndarray:
        """An excursion (time on axis 0) less part of its mean: the resting posture takes the rest, so the mean
        posture of a clip carries little of its class."""
        return x - self.diff.mean_compensation * x.mean(axis=0)

    def noise(self, dims: int, low: float, high: float) -> np.ndarray:
        return _smooth_noise(self.rng, self.t, dims, low * self.speed, high * self.speed)

    def reach(self, frame: str, point: Sequence[float], *, grip: float, hand_dir: Sequence[float],
              palm: Sequence[float], pole: Sequence[float], side: float | None = None,
              env: np.ndarray | None = None, wiggle: np.ndarray | None = None) -> _Reach:
        def styled(v: Sequence[float], spread: float) -> np.ndarray:  # each person reaches a little differently
            return np.asarray(v, float) + self.diff.posture * self.rng.uniform(-spread, spread, 3)

        r = _Reach(self.side() if side is None else side, frame, styled(point, 0.015),
                   self.window() if env is None else env, grip, styled(hand_dir, 0.35), styled(palm, 0.35),
                   styled(pole, 0.35), wiggle)
        self.c.reaches.append(r)
        return r

    def both(self, frame: str, point: Sequence[float], single: float = 0.0, **kw) -> tuple[_Reach, ...]:
        """The same reach with both hands, mirrored, the second hand slightly late; with probability `single`
        one hand only."""
        env = kw.pop("env", None)
        env = self.window() if env is None else env
        if self.rng.random() < single:
            return (self.reach(frame, point, env=env, **kw),)
        lag = int(self.rng.integers(0, 4))
        late = np.concatenate([np.zeros(lag), env[:len(env) - lag]])
        return (self.reach(frame, point, side=_LEFT, env=env, **kw),
                self.reach(frame, point, side=_RIGHT, env=late, **kw))


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, dims: int, low: float, high: float) -> np.ndarray:
    """(L, dims) smooth random signals of about unit amplitude: three sinusoids each, frequencies in [low, high]."""
    f = rng.uniform(low, high, (3, dims))
    phase = rng.uniform(0, 2 * np.pi, (3, dims))
    return np.sin(2 * np.pi * f[None] * t[:, None, None] + phase[None]).sum(axis=1) / np.sqrt(1.5 * 3)


def _sample_person(rng: np.random.Generator, spread: float) -> _Person:
    def vary(base: float, rel: float) -> float:
        return base * (1.0 + spread * rng.uniform(-rel, rel))

    return _Person(trunk=vary(0.30, 0.08), shoulder_w=vary(0.115, 0.12), hip_w=vary(0.06, 0.15),
                   upper_arm=vary(0.165, 0.06), forearm=vary(0.145, 0.06), hand=vary(0.045, 0.1),
                   finger=vary(1.0, 0.1), thigh=vary(0.245, 0.06), shin=vary(0.25, 0.06),
                   foot=vary(0.13, 0.1), head=vary(0.9, 0.08))


def _rest_controls(rng: np.random.Generator, length: int, diff: Difficulty) -> _Controls:
    """An individual's resting posture plus class-independent idle motion (breathing, sway, drifting hands)."""
    p, n, r = diff.posture, length, np.radians
    t = np.arange(n) / FPS

    def const(low: Sequence[float], high: Sequence[float]) -> np.ndarray:
        lo, hi = np.asarray(low, float), np.asarray(high, float)
        mid = (lo + hi) / 2
        return np.broadcast_to(mid + p * (lo + (hi - lo) * rng.random(lo.shape) - mid), (n, len(lo))).copy()

    # Idle drift of wrists (6), fingers (10), ankles (6), hip centre (3), chest (3) and head (3), in one draw.
    size = np.repeat([0.008, 0.08, 0.003, 0.004, r(1.5), r(2.5)], [6, 10, 6, 3, 3, 3])
    drift = diff.idle * size * _smooth_noise(rng, t, len(size), 0.1, 0.6)
    wrist = drift[:, :6].reshape(n, 2, 3).transpose(1, 0, 2).copy()
    curl = drift[:, 6:16].reshape(n, 2, 5).transpose(1, 0, 2) + 0.35 + p * rng.uniform(-0.35, 0.35, (2, 1, 5))
    ankle = drift[:, 16:22].reshape(n, 2, 3).transpose(1, 0, 2).copy()
    knee_pole = np.empty((2, n, 3))
    clasped = rng.random() < 0.25  # hands held together in the lap
    for i, s in enumerate((_LEFT, _RIGHT)):
        if clasped:
            wrist[i] += const((s * 0.02, -0.06, 0.14), (s * 0.05, 0.04, 0.24))
        else:
            wrist[i] += const((s * 0.02, -0.14, 0.08), (s * 0.24, 0.05, 0.26))
        ankle[i] += const((s * 0.05, 0.24, 0.10), (s * 0.17, 0.30, 0.30))
        knee_pole[i] = const((0.0, -0.6, 1.0), (s * 0.6, -0.2, 1.0))
    breathing = 0.003 * diff.idle * np.sin(2 * np.pi * rng.uniform(0.2, 0.35) * t + rng.uniform(0, 2 * np.pi))
    return _Controls(
        root=drift[:, 22:25].copy(),
        pelvis=const((r(-12), 0, r(-4)), (r(12), 0, r(4))),
        chest=const((r(-8), r(-4), r(-5)), (r(8), r(18), r(5))) + drift[:, 25:28],
        head=const((r(-15), r(-10), r(-8)), (r(15), r(15), r(8))) + drift[:, 28:31],
        shrug=const((-0.01, -0.01), (0.01, 0.01)) + breathing[:, None],
        wrist=wrist,
        elbow_pole=np.array([(s * rng.uniform(0.3, 1.0), rng.uniform(0.5, 1.0), rng.uniform(-0.5, 0.2))
                             for s in (_LEFT, _RIGHT)]),
        palm=np.array([(-s * 0.5, 1.0, 0.0) if clasped else (0.0, 1.0, 0.2) for s in (_LEFT, _RIGHT)])
        + p * rng.uniform(-0.8, 0.8, (2, 3)),
        wrist_bend=p * rng.uniform(-0.8, 0.8, (2, 3)),
        curl=curl, ankle=ankle, knee_pole=knee_pole, heel=np.zeros((2, n)),
    )


# ----------------------------------------------------------------------------------------------------------------
# Class programs: each adds one class's motion to the controls of a clip

def _program_table() -> dict[str, Callable[[_Clip], None]]:
    programs: dict[str, Callable[[_Clip], None]] = {}

    def program(name: str) -> Callable[[Callable[[_Clip], None]], Callable[[_Clip], None]]:
        def register(fn: Callable[[_Clip], None]) -> Callable[[_Clip], None]:
            programs[name] = fn
            return fn
        return register

    # Contact motions of a hand at its goal, (L, 3) in body units.
    def scratch(k: _Clip) -> np.ndarray:
        direction = _unit(k.rng.normal(size=3) * (1.0, 1.0, 0.3))
        return k.u(0.006, 0.013) * k.amp * k.wave(3.0, 5.0)[:, None] * direction

    def rub(k: _Clip) -> np.ndarray:
        phase = 2 * np.pi * k.freq(2.0, 3.5) * k.t
        return k.u(0.008, 0.016) * k.amp * np.stack([np.cos(phase), np.sin(phase), 0 * phase], axis=1)

    def taps(k: _Clip, direction: Sequence[float], low: float = 1.5, high: float = 3.0) -> np.ndarray:
        lift = np.abs(np.sin(np.pi * k.freq(low, high) * k.t + k.u(0, np.pi)))
        return k.u(0.02, 0.04) * k.amp * lift[:, None] * np.asarray(direction, float)

    def stroke(k: _Clip, direction: Sequence[float]) -> np.ndarray:
        slide = 0.5 - 0.5 * np.cos(2 * np.pi * k.freq(0.7, 1.3) * k.t)
        return k.u(0.02, 0.04) * k.amp * slide[:, None] * _unit(np.asarray(direction, float))

    def hold(k: _Clip) -> np.ndarray:
        return 0.004 * k.noise(3, 0.3, 1.0)

    def scratch_or_touch(k: _Clip) -> np.ndarray:
        return scratch(k) if k.rng.random() < 0.5 else hold(k)

    palm, finger, knuckle = 0.075, 0.11, 0.08  # wrist-to-contact distances of three grips

    # --- body
    @program("shaking body")
    def _(k: _Clip) -> None:
        sway = k.active() * k.wave(1.0, 2.5)
        k.c.chest[:, 2] += k.deg(3, 6) * sway
        k.c.root[:, 0] += 0.012 * k.amp * sway

    @program("sitting straightly")
    def _(k: _Clip) -> None:
        start = k.u(0.1, 0.5) * k.duration
        up = _smoothstep((k.t - start) / (k.u(0.3, 0.8) / k.speed))
        k.c.chest[:, 1] += k.centred(k.deg(10, 20) * (1.0 - up))
        k.c.head[:, 1] += k.centred(k.deg(3, 8) * (1.0 - up))

    @program("shrugging")
    def _(k: _Clip) -> None:
        env = k.window(stay=0.0, hold=(0.05, 0.2))
        if k.rng.random() < 0.4:  # a second shrug
            env = np.maximum(env, k.window(stay=0.0, hold=(0.05, 0.2)))
        lift = k.centred(k.u(0.025, 0.045) * k.amp * env)
        k.c.shrug += lift[:, None] * (1.0 if k.rng.random() < 0.8 else np.array([1.0, 0.3]))
        k.c.head[:, 1] += k.centred(k.deg(-6, 0) * env)

    @program("turning around")
    def _(k: _Clip) -> None:
        env = k.window(hold=(0.1, 0.3))
        turn = k.centred(k.deg(18, 32) * env * k.side())
        k.c.pelvis[:, 0] += 0.4 * turn
        k.c.chest[:, 0] += 0.6 * turn
        k.c.head[:, 0] += 0.5 * turn

    @program("rising up")
    def _(k: _Clip) -> None:
        env = k.window(stay=0.2)
        if k.rng.random() < 0.42:  # the clip begins with the person already up, who then sits back down
            env = 1.0 - env
        k.c.root[:, 1] -= k.centred(k.u(0.025, 0.06) * k.amp * env)
        k.c.root[:, 2] += k.centred(0.05 * k.amp * env)
        k.c.chest[:, 1] += k.centred(k.deg(8, 18) * env)  # leaning forward to lift off the seat

    # --- head
    def head_turn(axis: int, low: float, high: float, signed: bool) -> Callable[[_Clip], None]:
        def run(k: _Clip) -> None:
            sign = k.side() if signed else 1.0
            k.c.head[:, axis] += k.centred(k.deg(low, high) * sign * k.window(hold=(0.2, 0.5)))
        return run

    program("bowing head")(head_turn(1, 18, 35, False))
    program("head up")(head_turn(1, -30, -15, False))
    program("tilting head")(head_turn(2, 12, 25, True))
    program("turning head")(head_turn(0, 18, 35, True))

    @program("nodding")
    def _(k: _Clip) -> None:
        k.c.head[:, 1] += k.centred(k.deg(6, 12) * k.active() * (0.5 + 0.5 * k.wave(1.5, 3.0)))

    @program("shaking head")
    def _(k: _Clip) -> None:
        k.c.head[:, 0] += k.deg(8, 18) * k.active() * k.wave(1.5, 3.0)

    # --- upper limb
    @program("scratching arms")
    def _(k: _Clip) -> None:
        k.reach("forearm_other", (0.0, -0.01, 0.03), grip=finger, hand_dir=(-1, 0.3, 0), palm=(0, 1, 0),
                pole=(0.6, 1, 0.4), wiggle=scratch(k))

    @program("playing objects")
    def _(k: _Clip) -> None:
        fiddle = 0.015 * k.amp * k.noise(6, 1.5, 3.0)
        env = k.window(hold=(0.2, 0.5))
        left, right = k.both("chest", (0.04, 0.24, 0.20), grip=finger, hand_dir=(-0.6, 0.2, 1), palm=(-1, 0.5, 0),
                             pole=(1, 1, 0), env=env)
        left.wiggle, right.wiggle = fiddle[:, :3], fiddle[:, 3:]
        k.c.curl += 0.3 * env[None, :, None] * k.noise(10, 1.0, 3.0).reshape(-1, 2, 5).transpose(1, 0, 2)

    @program("putting hands together")
    def _(k: _Clip) -> None:
        k.both("chest", (0.012, 0.22, 0.17), grip=palm, hand_dir=(0, -0.5, 1), palm=(-1, 0, 0), pole=(1, 1, 0),
               wiggle=hold(k))

    @program("rubbing hands")
    def _(k: _Clip) -> None:
        slide = (k.u(0.015, 0.03) * k.amp * k.wave(2.0, 3.5))[:, None] * np.array([0.0, 0.6, 0.8])
        left, right = k.both("chest", (0.015, 0.24, 0.17), grip=palm, hand_dir=(0, -0.5, 1), palm=(-1, 0, 0),
                             pole=(1, 1, 0), env=k.window(hold=(0.15, 0.4)))
        left.wiggle, right.wiggle = slide, -slide

    @program("pointing oneself")
    def _(k: _Clip) -> None:
        r = k.reach("chest", (0.0, 0.10, 0.09), grip=finger, hand_dir=(-0.2, 0, -1), palm=(-1, 0, 0),
                    pole=(0.8, 1, 0.3), wiggle=taps(k, (0, 0, 0.6), 1.0, 2.0))
        _pose_fingers(k, r, (0.7, 0.0, 0.9, 0.9, 0.9))

    @program("clenching fist")
    def _(k: _Clip) -> None:
        env = k.window(stay=0.2, hold=(0.05, 0.3))
        if k.rng.random() < 0.4:
            env = np.maximum(env, k.window(stay=0.0, hold=(0.05, 0.2)))
        hands = [0, 1] if k.rng.random() < 0.4 else [int(k.rng.integers(2))]
        for i in hands:
            k.c.curl[i] += k.centred((1.0 - k.c.curl[i]) * env[:, None])
            k.c.wrist[i, :, 1] -= k.centred(0.01 * env)  # the fist tenses and rises a little

    @program("stretching arms")
    def _(k: _Clip) -> None:
        goal, hand_dir = [((0.06, -0.32, 0.02), (0, -1, 0)), ((0.32, -0.02, 0.05), (1, 0, 0)),
                          ((0.03, 0.02, 0.32), (0, 0, 1))][int(k.rng.choice(3, p=(0.2, 0.4, 0.4)))]
        env = k.window(stay=0.0, hold=(0.1, 0.3))
        k.both("shoulder_same", goal, grip=palm, hand_dir=hand_dir, palm=(0, 1, 0), pole=(0.5, 1, -0.5), env=env)
        k.c.chest[:, 1] -= k.centred(k.deg(3, 8) * env)

    @program("retracting arms")
    def _(k: _Clip) -> None:
        start = k.u(0.1, 0.5) * k.duration
        out = 1.0 - _smoothstep((k.t - start) / (k.u(0.3, 0.7) / k.speed))
        k.both("shoulder_same", (0.05, 0.10, 0.30), grip=palm, hand_dir=(0, 0, 1), palm=(0, 1, 0),
               pole=(0.5, 1, -0.5), env=out)

    @program("waving")
    def _(k: _Clip) -> None:
        swing = k.wave(2.0, 3.0)
        r = k.reach("shoulder_same", (0.12, -0.12, 0.15), grip=palm, hand_dir=(0, -1, 0), palm=(0, 0, 1),
                    pole=(1, 0.8, 0), env=k.window(hold=(0.15, 0.35)))
        r.wiggle = k.u(0.03, 0.05) * k.amp * swing[:, None] * np.array([1.0, 0.0, 0.0])

    @program("spreading hands")
    def _(k: _Clip) -> None:
        env = k.window(hold=(0.1, 0.35))
        k.both("hip_same", (0.20, -0.14, 0.16), grip=palm, hand_dir=(0.7, 0, 1), palm=(0, -1, 0),
               pole=(1, 0.7, -0.3), env=env, single=0.3)
        for i in range(2):  # fingers spread wide
            k.c.curl[i] += k.centred((-0.4 - k.c.curl[i]) * env[:, None])

    @program("hands touching fingers")
    def _(k: _Clip) -> None:
        env = k.window(hold=(0.1, 0.35))
        k.both("chest", (0.03, 0.18, 0.20), grip=finger, hand_dir=(-0.5, -1, 0), palm=(-1, 0, 0.3),
               pole=(1, 1, 0), env=env)
        k.c.curl += k.centred(0.25 * k.amp * env * (0.5 + 0.5 * k.wave(1.5, 3.0)))[None, :, None]

    @program("other finger movements")
    def _(k: _Clip) -> None:
        env = k.active()
        hands = [0, 1] if k.rng.random() < 0.4 else [int(k.rng.integers(2))]
        for i in hands:
            k.c.curl[i] += 0.4 * k.amp * env[:, None] * k.noise(5, 2.0, 4.0)

    @program("illustrative gestures")
    def _(k: _Clip) -> None:
        env = k.window(hold=(0.3, 0.6))
        gesture = k.u(0.04, 0.08) * k.amp * k.noise(6, 0.8, 2.0)
        if k.rng.random() < 0.5:
            left, right = k.both("chest", (0.10, 0.20, 0.22), grip=palm, hand_dir=(-0.3, -0.3, 1),
                                 palm=(-0.5, 0, 0.5), pole=(1, 1, 0), env=env)
            left.wiggle, right.wiggle = gesture[:, :3], gesture[:, 3:]
        else:
            k.reach("chest", (0.08, 0.18, 0.22), grip=palm, hand_dir=(-0.3, -0.3, 1), palm=(-0.5, 0, 0.5),
                    pole=(1, 1, 0), env=env, wiggle=gesture[:, :3])
        k.c.curl += 0.3 * env[None, :, None] * k.noise(2, 0.5, 1.5).T[:, :, None]

    # --- lower limb
    def legs(k: _Clip) -> list[int]:
        return [0, 1] if k.rng.random() < 0.5 else [int(k.rng.integers(2))]

    @program("shaking legs")
    def _(k: _Clip) -> None:
        env = k.active()
        vertical = k.rng.random() < 0.7  # heel bouncing, otherwise knees opening and closing
        for i in legs(k):
            osc = env * k.wave(3.0, 5.5)
            if vertical:
                bounce = k.u(0.012, 0.025) * k.amp * (0.5 + 0.5 * osc)
                k.c.ankle[i, :, 1] -= k.centred(bounce)
                k.c.heel[i] += k.centred(bounce / 0.03)
            else:
                k.c.knee_pole[i, :, 0] += k.centred(0.8 * k.amp * osc * (_LEFT if i == 0 else _RIGHT))

    def move_feet(k: _Clip, which: list[int], delta: Sequence[float], env: np.ndarray, heel: float = 0.0) -> None:
        for i in which:
            s = _LEFT if i == 0 else _RIGHT
            k.c.ankle[i] += k.centred(k.amp * env[:, None] * (np.asarray(delta) * (s, 1.0, 1.0)))
            k.c.heel[i] += k.centred(heel * env)

    @program("curling legs")
    def _(k: _Clip) -> None:
        move_feet(k, legs(k), (-0.02, -0.03, -0.15), k.window(stay=0.2), heel=0.8)

    @program("spread legs")
    def _(k: _Clip) -> None:
        env = k.window(stay=0.5)
        move_feet(k, [0, 1], (0.06, 0.0, 0.0), env)
        for i, s in enumerate((_LEFT, _RIGHT)):
            k.c.knee_pole[i, :, 0] += k.centred(0.4 * k.amp * env * s)

    @program("closing legs")
    def _(k: _Clip) -> None:
        env = k.window(stay=0.5)
        for i, s in enumerate((_LEFT, _RIGHT)):  # ankles and knees towards the midline
            k.c.ankle[i, :, 0] += k.centred(env * (s * 0.035 - k.c.ankle[i, :, 0]))
            k.c.knee_pole[i, :, 0] += k.centred(env * (-0.4 * s - k.c.knee_pole[i, :, 0]))

    @program("crossing legs")
    def _(k: _Clip) -> None:
        i = int(k.rng.integers(2))
        s, other = (_LEFT, _RIGHT)[i], 1 - i
        env = k.window(stay=0.2, hold=(0.2, 0.5))
        goal = k.c.ankle[other] + (-s * 0.06, -0.14, -0.02)  # over the other knee's shin
        k.c.ankle[i] += k.centred(env[:, None] * (goal - k.c.ankle[i]))
        k.c.knee_pole[i] += k.centred(env[:, None] * (np.array([-s * 0.4, -1.0, 0.5]) - k.c.knee_pole[i]))
        k.c.heel[i] += k.centred(env * 0.5)

    @program("stretching feet")
    def _(k: _Clip) -> None:
        move_feet(k, legs(k), (0.01, -0.12, 0.16), k.window(stay=0.2), heel=-0.8)

    @program("retracting feet")
    def _(k: _Clip) -> None:
        start = k.u(0.1, 0.5) * k.duration
        out = 1.0 - _smoothstep((k.t - start) / (k.u(0.3, 0.7) / k.speed))
        move_feet(k, legs(k), (0.01, -0.12, 0.16), out, heel=-0.8)

    @program("tiptoe")
    def _(k: _Clip) -> None:
        env = k.window(stay=0.2)
        if k.rng.random() < 0.4:  # bouncing on the toes
            env = env * (0.6 + 0.4 * k.wave(1.5, 2.5))
        move_feet(k, legs(k), (0.0, -0.04, 0.0), env, heel=1.0)

    # --- hand to body
    @program("scratching or touching neck")
    def _(k: _Clip) -> None:
        k.reach("chest", (0.035, -0.04, 0.03), grip=finger, hand_dir=(-0.3, -1, 0), palm=(-1, 0, -0.5),
                pole=(0.7, 1, 0.3), wiggle=scratch_or_touch(k))

    @program("scratching or touching chest")
    def _(k: _Clip) -> None:
        k.reach("chest", (0.04, 0.09, 0.08), grip=finger, hand_dir=(-0.7, -0.3, 0), palm=(0, 0, -1),
                pole=(0.7, 1, 0.3), wiggle=scratch_or_touch(k))

    @program("scratching or touching back")
    def _(k: _Clip) -> None:
        k.reach("shoulder_same", (-0.03, -0.05, -0.09), grip=finger, hand_dir=(0, 1, -0.5), palm=(0, 0, 1),
                pole=(1, -1.2, 0.3), wiggle=scratch_or_touch(k))

    @program("scratching or touching shoulder")
    def _(k: _Clip) -> None:
        k.reach("shoulder_other", (0.0, 0.02, 0.05), grip=finger, hand_dir=(-0.5, -0.3, 0), palm=(0, 0, -1),
                pole=(0.5, 1, 0.5), wiggle=scratch_or_touch(k))

    @program("arms akimbo")
    def _(k: _Clip) -> None:
        k.both("hip_same", (0.07, -0.07, 0.0), grip=palm, hand_dir=(-0.3, 0.3, 1), palm=(-1, 0, 0),
               pole=(1, 0.2, -0.6), wiggle=hold(k), single=0.3)

    @program("crossing arms")
    def _(k: _Clip) -> None:
        env = k.window(hold=(0.1, 0.35))
        left, right = k.both("chest", (-0.10, 0.14, 0.10), grip=palm, hand_dir=(-1, 0, 0), palm=(0, 0, -1),
                             pole=(1, 1, 0.3), env=env)
        right.point = right.point + (0.0, 0.0, 0.02)  # one forearm lies over the other

    # --- hand to head
    @program("playing or tidying hair")
    def _(k: _Clip) -> None:
        motion = stroke(k, (0, -0.3, -1)) if k.rng.random() < 0.6 else scratch(k)
        k.reach("head", (0.05, -0.15, 0.0), grip=finger, hand_dir=(-0.5, -0.3, -0.6), palm=(-1, 0.5, 0),
                pole=(1, -0.7, 0.5), wiggle=motion)

    @program("scratching or touching hindbrain")
    def _(k: _Clip) -> None:
        k.reach("head", (0.02, -0.10, -0.09), grip=finger, hand_dir=(-0.8, 0, 0), palm=(0, 0, 1),
                pole=(1, -1, -0.2), wiggle=scratch_or_touch(k))

    @program("scratching or touching forehead")
    def _(k: _Clip) -> None:
        k.reach("head", (0.01, -0.12, 0.08), grip=finger, hand_dir=(-0.8, -0.4, 0), palm=(0, 0, -1),
                pole=(0.6, 1, 0.6), wiggle=scratch_or_touch(k))

    @program("scratching or touching face")
    def _(k: _Clip) -> None:
        k.reach("head", (0.05, -0.05, 0.06), grip=finger, hand_dir=(0, -1, 0.2), palm=(-1, 0, 0),
                pole=(0.5, 1, 0.5), wiggle=scratch_or_touch(k))

    @program("rubbing eyes")
    def _(k: _Clip) -> None:
        r = k.reach("head", (0.032, -0.085, 0.09), grip=knuckle, hand_dir=(-0.3, -1, 0), palm=(0, 0, -1),
                    pole=(0.5, 1, 0.6), wiggle=rub(k))
        _pose_fingers(k, r, (0.6, 0.7, 0.7, 0.7, 0.7))

    @program("touching nose")
    def _(k: _Clip) -> None:
        r = k.reach("head", (0.0, -0.06, 0.10), grip=finger, hand_dir=(-0.5, -1, -0.2), palm=(-1, 0, -0.5),
                    pole=(0.5, 1, 0.7), env=k.window(hold=(0.05, 0.3)), wiggle=hold(k))
        _pose_fingers(k, r, (0.6, 0.0, 0.8, 0.8, 0.8))

    @program("touching ears")
    def _(k: _Clip) -> None:
        k.reach("head", (0.08, -0.07, 0.02), grip=finger, hand_dir=(0, -1, 0), palm=(-1, 0, 0),
                pole=(1, 0.6, 0.2), wiggle=scratch_or_touch(k))

    @program("covering face")
    def _(k: _Clip) -> None:
        env = k.window(hold=(0.1, 0.35))
        k.both("head", (0.035, -0.07, 0.11), grip=palm, hand_dir=(-0.2, -1, 0), palm=(0, 0, -1),
               pole=(0.4, 1, 0.3), env=env, wiggle=hold(k), single=0.4)
        k.c.head[:, 1] += k.centred(k.deg(5, 15) * env)

    @program("covering mouth")
    def _(k: _Clip) -> None:
        k.reach("head", (0.0, -0.03, 0.105), grip=palm, hand_dir=(-1, -0.2, 0), palm=(0, 0, -1),
                pole=(0.5, 1, 0.6), env=k.window(hold=(0.15, 0.4)), wiggle=hold(k))

    @program("pushing glasses")
    def _(k: _Clip) -> None:
        env = k.window(hold=(0.05, 0.2))
        push = -0.015 * k.amp * _smoothstep((env - 0.8) / 0.2)  # slides up once the finger is on the bridge
        r = k.reach("head", (0.0, -0.083, 0.10), grip=finger, hand_dir=(0, -1, -0.3), palm=(0, 0, -1),
                    pole=(0.5, 1, 0.7), env=env, wiggle=push[:, None] * np.array([0.0, 1.0, 0.3]))
        _pose_fingers(k, r, (0.6, 0.0, 0.8, 0.8, 0.8))

    # --- hand to leg
    @program("patting legs")
    def _(k: _Clip) -> None:
        kw = dict(grip=palm, hand_dir=(0, 0.3, 1), palm=(0, 1, 0), pole=(0.6, 1, -0.3),
                  env=k.window(hold=(0.3, 0.5)), wiggle=taps(k, (0, -1, 0)))
        if k.rng.random() < 0.4:
            k.both("thigh_same", (0.0, -0.03, 0.02), **kw)
        else:
            k.reach("thigh_same", (0.0, -0.03, 0.02), **kw)

    @program("touching legs")
    def _(k: _Clip) -> None:
        motion = stroke(k, (0, 0.2, 1)) if k.rng.random() < 0.5 else hold(k)
        k.reach(("thigh_same", "knee_same")[int(k.rng.integers(2))], (0.0, -0.03, 0.02), grip=palm,
                hand_dir=(0, 0.3, 1), palm=(0, 1, 0), pole=(0.6, 1, -0.3), wiggle=motion)

    @program("scratching legs")
    def _(k: _Clip) -> None:
        k.reach(("thigh_same", "knee_same")[int(k.rng.integers(2))], (0.0, -0.03, 0.02), grip=finger,
                hand_dir=(0, 0.5, 1), palm=(0, 1, 0), pole=(0.6, 1, -0.3), wiggle=scratch(k))

    @program("scratching feet")
    def _(k: _Clip) -> None:
        env = k.window(hold=(0.2, 0.5))
        r = k.reach("ankle_same", (0.0, -0.03, 0.04), grip=finger, hand_dir=(0, 1, 0.3), palm=(0, 0, -1),
                    pole=(0.6, 0.3, -0.5), env=env, wiggle=scratch(k))
        k.c.chest[:, 1] += k.centred(k.deg(15, 25) * env)  # bending down to the foot
        k.c.head[:, 1] += k.centred(k.deg(5, 15) * env)
        i = 0 if r.side == _LEFT else 1
        k.c.ankle[i] += k.centred(env[:, None] * np.array([-r.side * 0.05, -0.12, 0.02]))  # and lifting it

    return programs


def _fidget(k: _Clip) -> None:
    """Class-independent business of the hands the class leaves free: resting the chin on one (from the start, or
    moving it there), or shifting where it rests."""
    busy = {r.side for r in k.c.reaches}
    for i, s in enumerate((_LEFT, _RIGHT)):
        if s in busy or k.rng.random() >= k.diff.fidget:
            continue
        if k.rng.random() < 0.5:
            env = np.ones_like(k.t) if k.rng.random() < 0.7 else k.window(stay=1.0)
            k.reach("head", (0.02, 0.0, 0.075), side=s, env=env, grip=0.08, hand_dir=(-0.3, -1, 0.3),
                    palm=(-0.5, -1, 0), pole=(0.3, 1, 0.3))
        else:
            step = _smoothstep((k.t - k.u(0.0, 0.8) * k.duration) / k.u(0.3, 0.8))
            k.c.wrist[i] += step[:, None] * k.rng.uniform(-0.08, 0.08, 3)


def _pose_fingers(k: _Clip, reach: _Reach, curl: Sequence[float]) -> None:
    """Fingers take a shape (e.g. the index pointing) while the hand is at its goal."""
    i = 0 if reach.side == _LEFT else 1
    k.c.curl[i] += k.centred(reach.env[:, None] * (np.asarray(curl) - k.c.curl[i]))


_PROGRAMS = _program_table()
assert set(_PROGRAMS) == set(MA52_CLASS_NAMES), "every MA-52 class needs exactly one motion program"


# ----------------------------------------------------------------------------------------------------------------
# From controls to joints

def _rest_direction(rest: np.ndarray, pulled: np.ndarray, weight: np.ndarray, kappa: float) -> np.ndarray:
    """Resting directions (2, L, 3) turned away from where reaches pull them (`pulled`, weighted sums of goal
    directions), so that a clip's mean direction changes little; the turn is limited to stay plausible."""
    shift = kappa * (pulled - weight * rest).mean(axis=1, keepdims=True) / (
        1.0 - np.minimum(weight.mean(axis=1, keepdims=True), 0.8))
    size = np.sqrt(np.sum(shift * shift, axis=-1, keepdims=True))
    return _unit(rest - shift * np.minimum(1.0, 1.2 / np.maximum(size, 1e-9)))


def _pose(k: _Clip) -> np.ndarray:
    """(L, 44, 3) joint positions of a clip's body. Left and right limbs are computed together, stacked on a
    leading axis of 2."""
    c, b = k.c, k.person
    out = np.zeros((len(k.t), NUM_JOINTS, 3))

    rp = _rot(c.pelvis)
    rc = rp @ _rot(c.chest)
    rh = rc @ _rot(c.head)
    root = c.root
    up = -rc[:, :, 1]  # the chest's own upward axis (columns of a rotation are its rotated axes)
    neck = root + b.trunk * up
    pivot = neck + 0.03 * up
    out[:, 19], out[:, 18] = root, neck
    out[:, list(_HEAD_JOINTS)] = pivot[:, None] + (_HEAD_POINTS * b.head) @ rh.transpose(0, 2, 1)

    seat = _rot(c.pelvis[:1] * (1.0, 0.0, 0.0))[0].T  # feet stay on the floor, which turns with the chair only
    hip = root + _SIDES * b.hip_w * rp[:, :, 0]
    knee, ankle = _two_link(hip, c.ankle @ seat, b.thigh, b.shin, c.knee_pole @ seat)
    heel = c.heel[:, :, None]
    toes = _unit(np.concatenate([np.broadcast_to(0.25 * _SIDES, heel.shape), 0.35 + 1.2 * heel,
                                 np.ones_like(heel)], axis=2) @ seat)
    shoulder = root + _SIDES * b.shoulder_w * rc[:, :, 0] + (b.trunk - 0.02 + c.shrug.T[:, :, None]) * up
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
             (20, ankle + b.foot * toes + _SIDES * (-0.02, 0.0, 0.0) + (0.0, 0.04, 0.0)),
             (22, ankle + 0.85 * b.foot * toes + _SIDES * (0.03, 0.0, 0.0) + (0.0, 0.045, 0.0)))
    for joint, value in limbs:
        out[:, joint:joint + 2] = value.transpose(1, 0, 2)
    out[:, [32, 38]] = hand.transpose(1, 0, 2)
    out[:, 33:38], out[:, 39:44] = tips
    return out


def _arms(k: _Clip, frames: dict[str, tuple[np.ndarray, np.ndarray]], shoulder: np.ndarray, rp: np.ndarray,
          rc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Elbows, wrists, finger directions and palm directions, (2, L, 3) each: resting hands pulled to their goals."""
    c, b, n = k.c, k.person, len(k.t)
    rest = c.root + np.einsum("lij,slj->sli", rp, c.wrist)
    weight = np.zeros((2, n, 1))
    excursion, hand_dir, palm_dir, pole = np.zeros((4, 2, n, 3))
    for r in c.reaches:
        i = 0 if r.side == _LEFT else 1
        mirror = np.array([r.side, 1.0, 1.0])
        origin, rot = frames[r.frame.replace("same", str(i)).replace("other", str(1 - i)).replace("_", "")]
        w = r.env[:, None]
        goal_dir = _unit(rc @ (r.hand_dir * mirror))
        goal = origin + rot @ (r.point * mirror) - r.grip * b.finger * goal_dir
        if r.wiggle is not None:
            goal = goal + r.wiggle * mirror * w
        excursion[i] += w * (goal - rest[i])
        weight[i] += w
        hand_dir[i] += w * goal_dir
        palm_dir[i] += w * _unit(rc @ (r.palm * mirror))
        pole[i] += w * _unit(rc @ (r.pole * mirror))
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
        return _unit(np.einsum("lij,sj->sli", rc, v))

    rest_pole = _rest_direction(resting(c.elbow_pole), pole, weight, kappa)
    elbow, wrist = _two_link(shoulder, target, b.upper_arm, b.forearm, rest_pole * (1 - weight) + pole)
    forearm = _rest_direction(_unit(_unit(wrist - elbow) + np.einsum("lij,sj->sli", rc, c.wrist_bend)), hand_dir,
                              weight, kappa)
    fingers = _unit(forearm * (1 - weight) + hand_dir)
    palm = _rest_direction(resting(c.palm), palm_dir, weight, kappa) * (1 - weight) + palm_dir
    palm = _unit(palm - np.sum(palm * fingers, axis=-1, keepdims=True) * fingers)
    return elbow, wrist, fingers, palm


def _hands(k: _Clip, wrist: np.ndarray, fingers: np.ndarray, palm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hand roots (2, L, 3) and fingertips (2, L, 5, 3) from the wrists, finger directions, palms and curls."""
    b = k.person
    thumb = _SIDES * _cross(fingers, palm)  # the thumb lies towards the body's midline when the palm faces down
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


# ----------------------------------------------------------------------------------------------------------------
# One clip, one split, a whole set

def render_clip(rng: np.random.Generator, label: int, difficulty: Difficulty = DEFAULT_DIFFICULTY,
                ) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic clip of class `label`: keypoints (L, 44, 2) in pixels and scores (L, 44), float32."""
    length = int(round(np.exp(rng.uniform(np.log(MIN_FRAMES), np.log(MAX_FRAMES)))))
    clip = _Clip(rng, length, difficulty)
    _PROGRAMS[MA52_CLASS_NAMES[label]](clip)
    _fidget(clip)
    joints = _pose(clip)

    # Camera: a view angle around the person, then an in-plane rotation, scale and offset in pixels.
    view = _rot(np.radians([[rng.uniform(-1, 1) * difficulty.camera_yaw_deg, rng.uniform(-5, 12), 0.0]]))[0]
    xy = (joints @ view.T)[..., :2]
    roll = np.radians(rng.uniform(-1, 1) * difficulty.camera_roll_deg)
    scale = rng.uniform(330.0, 520.0)  # pixels per standing height
    in_plane = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    xy = xy @ in_plane.T * scale + np.array([rng.uniform(480, 800), rng.uniform(380, 520)])

    xy += rng.normal(size=xy.shape) * (difficulty.jitter * scale * _JITTER_SCALE)[None, :, None]
    xy += rng.normal(size=xy.shape[1:]) * (difficulty.bias * scale * _JITTER_SCALE)[:, None]
    score = rng.uniform(0.6, 1.0, (length, NUM_JOINTS)) / np.sqrt(_JITTER_SCALE)
    if rng.random() < difficulty.missing_prob:
        for _ in range(int(rng.integers(1, 4))):
            choice = int(rng.integers(len(_MISSING_GROUPS) + 2))
            if choice < len(_MISSING_GROUPS):
                joints_out, run = list(_MISSING_GROUPS[choice]), int(rng.integers(1, 9))
            elif choice == len(_MISSING_GROUPS):
                joints_out, run = [int(rng.integers(NUM_JOINTS))], int(rng.integers(1, 9))
            else:  # the whole person for a frame or two: a missed detection
                joints_out, run = list(range(NUM_JOINTS)), int(rng.integers(1, 3))
            start = int(rng.integers(0, length - run + 1))
            xy[start:start + run, joints_out] = 0.0
            score[start:start + run, joints_out] = 0.0
    return xy.astype(np.float32), score.astype(np.float32)


def split_counts(split: str, clips_per_class: int, long_tail: bool, seed: int) -> list[int]:
    """Clips per class of a split: val and test get a quarter of `clips_per_class`; a long-tailed train split
    falls exponentially from 3x to 1/8 of it over a seed-dependent class order, like MA-52's frequencies."""
    num = len(MA52_CLASS_NAMES)
    if split != "train":
        return [max(2, clips_per_class // 4)] * num
    if not long_tail:
        return [clips_per_class] * num
    head, tail = 3.0 * clips_per_class, max(2.0, clips_per_class / 8)
    rank = np.random.default_rng([seed, 0x7A11]).permutation(num)
    return [int(round(head * (tail / head) ** (r / (num - 1)))) for r in rank]


def _split_clips(split: str, seed: int, counts: Sequence[int], difficulty: Difficulty,
                 ) -> tuple[list[dict], list[dict]]:
    """Annotations and label records of one split, in a seeded shuffled order."""
    key = zlib.crc32(split.encode())
    jobs = [(label, j) for label, count in enumerate(counts) for j in range(count)]
    order = np.random.default_rng([seed, key]).permutation(len(jobs))
    annotations, labels = [], []
    for position, job in enumerate(order):
        label, j = jobs[job]
        xy, score = render_clip(np.random.default_rng([seed, key, label, j]), label, difficulty)
        name = f"{split}{position:05d}"
        annotations.append({"frame_dir": name, "keypoint": xy[None], "keypoint_score": score[None],
                            "total_frames": len(xy), "label": label})
        labels.append({"file_name": name, "length": len(xy), "label": label})
    return annotations, labels


def _atomic_write(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder, so readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's private mode would hide a shared cache from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def generate(out_dir: str | os.PathLike, seed: int = 0, clips_per_class: int = DEFAULT_CLIPS_PER_CLASS,
             long_tail: bool = False, splits: Sequence[str] = SPLITS,
             difficulty: Difficulty = DEFAULT_DIFFICULTY) -> Path:
    """Write `<split>_data.pkl` and `<split>_label.pkl` for each split into `out_dir`, then the manifest.

    Same arguments, same bytes. `clips_per_class` is the train count per class (see `split_counts`).
    """
    if clips_per_class < 1:
        raise ValueError(f"clips_per_class must be at least 1, got {clips_per_class}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, int] = {}
    for split in splits:
        counts = split_counts(split, clips_per_class, long_tail, seed)
        annotations, labels = _split_clips(split, seed, counts, difficulty)
        names = [a["frame_dir"] for a in annotations]
        # Protocol 4 is fixed so that the bytes do not depend on the Python version's default.
        _atomic_write(out / f"{split}_data.pkl",
                      pickle.dumps({"split": {split: names}, "annotations": annotations}, protocol=4))
        _atomic_write(out / f"{split}_label.pkl", pickle.dumps(labels, protocol=4))
        summary[split] = len(annotations)
    manifest = {"generator_version": GENERATOR_VERSION, "seed": seed, "clips_per_class": clips_per_class,
                "long_tail": long_tail, "difficulty": asdict(difficulty), "clips": summary,
                "class_names": list(MA52_CLASS_NAMES), "test_labels": "kept (synthetic)"}
    _atomic_write(out / MANIFEST, json.dumps(manifest, indent=1).encode())
    return out


def cache_name(seed: int, clips_per_class: int, long_tail: bool, difficulty: Difficulty) -> str:
    """Folder name of a cached set; it changes whenever the generator or its knobs do."""
    digest = hashlib.sha256(json.dumps({"version": GENERATOR_VERSION, "difficulty": asdict(difficulty)},
                                       sort_keys=True).encode()).hexdigest()[:10]
    return f"synthetic-s{seed}-n{clips_per_class}{'-lt' if long_tail else ''}-{digest}"


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An advisory lock on `path`, so that concurrent callers wait for one generation instead of all doing it."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_synthetic(cache_dir: str | os.PathLike | None = None, seed: int = 0,
                     clips_per_class: int = DEFAULT_CLIPS_PER_CLASS, long_tail: bool = False,
                     difficulty: Difficulty = DEFAULT_DIFFICULTY) -> Path:
    """The folder of a synthetic set, generated on first use under `cache_dir` (default `$MMN_CACHE`, else
    ~/.cache/mmn) and reused afterwards.

    Safe with concurrent callers (e.g. several Ray workers): they take turns on a lock file, and the set is
    generated into a temporary folder renamed into place only when complete, so a crash never leaves half a set
    (and where locks do not work, a caller that loses the race discards its copy and uses the winner's).
    """
    root = Path(cache_dir or os.environ.get("MMN_CACHE") or Path.home() / ".cache" / "mmn")
    final = root / cache_name(seed, clips_per_class, long_tail, difficulty)
    if (final / MANIFEST).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / f".{final.name}.lock"):
        if (final / MANIFEST).is_file():  # made by another caller while this one waited
            return final
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.tmp-"))
        try:
            generate(tmp, seed=seed, clips_per_class=clips_per_class, long_tail=long_tail, difficulty=difficulty)
            tmp.chmod(0o755)  # mkdtemp's private mode would hide a shared cache from other users
            try:
                os.rename(tmp, final)  # atomic; fails if another caller already put its set there
            except OSError:
                if not (final / MANIFEST).is_file():
                    raise RuntimeError(f"{final} exists but is not a complete synthetic set (no {MANIFEST}); "
                                       f"delete it and retry") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final
