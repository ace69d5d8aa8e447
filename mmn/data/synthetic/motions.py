"""The motion programs: one function per MA-52 class, registered under the class's name, that adds the class's
motion to a clip's controls.

Motions are oscillations about, or excursions from and back to, the resting posture; what an excursion adds to
the clip's mean is taken back out of the resting posture (`Clip.centred`, `Difficulty.mean_compensation`), within
plausible limits, so the mean posture of a clip says little about its class while the motion says much.

Classes come in confusable families on purpose: the same head rotation on different axes (nodding, shaking head,
bowing, tilting, turning), one-off versus repeated (bowing head / nodding), the same motion in opposite order
(stretching / retracting feet, spreading / closing legs), a hand travelling to neighbouring spots (nose, mouth,
eyes, face, forehead, ears) and touching versus scratching there.

A program draws from the clip's generator in the order it is written; reordering calls changes the data.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from mmn.layouts import MA52_CLASS_NAMES

from .body import LEFT, RIGHT
from .clip import Clip
from .geometry import smoothstep, unit
from .hands import pose_fingers

Program = Callable[[Clip], None]
PROGRAMS: dict[str, Program] = {}  # MA-52 class name: its motion

PALM, FINGER, KNUCKLE = 0.075, 0.11, 0.08  # wrist-to-contact distances of three grips


def motion(name: str) -> Callable[[Program], Program]:
    """Register the decorated function as the motion program of the MA-52 class `name`."""
    def register(program: Program) -> Program:
        if name in PROGRAMS:
            raise ValueError(f"two motion programs for {name!r}: {PROGRAMS[name].__name__} and {program.__name__}")
        PROGRAMS[name] = program
        return program
    return register


def check_programs(programs: Mapping[str, Program], class_names: Sequence[str]) -> None:
    """Raise unless `programs` holds one program for each of `class_names` and nothing else."""
    missing = [name for name in class_names if name not in programs]
    extra = [name for name in programs if name not in class_names]
    if missing or extra:
        raise RuntimeError("every MA-52 class needs exactly one motion program: "
                           + "; ".join(f"{what} {', '.join(map(repr, names))}"
                                       for what, names in (("missing", missing), ("extra", extra)) if names))


# ----------------------------------------------------------------------------------------------------------------
# Contact motions of a hand at its goal, (L, 3) in body units

def scratch(k: Clip) -> np.ndarray:
    direction = unit(k.rng.normal(size=3) * (1.0, 1.0, 0.3))
    return k.u(0.006, 0.013) * k.amp * k.wave(3.0, 5.0)[:, None] * direction


def rub(k: Clip) -> np.ndarray:
    phase = 2 * np.pi * k.freq(2.0, 3.5) * k.t
    return k.u(0.008, 0.016) * k.amp * np.stack([np.cos(phase), np.sin(phase), 0 * phase], axis=1)


def taps(k: Clip, direction: Sequence[float], low: float = 1.5, high: float = 3.0) -> np.ndarray:
    lift = np.abs(np.sin(np.pi * k.freq(low, high) * k.t + k.u(0, np.pi)))
    return k.u(0.02, 0.04) * k.amp * lift[:, None] * np.asarray(direction, float)


def stroke(k: Clip, direction: Sequence[float]) -> np.ndarray:
    slide = 0.5 - 0.5 * np.cos(2 * np.pi * k.freq(0.7, 1.3) * k.t)
    return k.u(0.02, 0.04) * k.amp * slide[:, None] * unit(np.asarray(direction, float))


def hold(k: Clip) -> np.ndarray:
    return 0.004 * k.noise(3, 0.3, 1.0)


def scratch_or_touch(k: Clip) -> np.ndarray:
    return scratch(k) if k.rng.random() < 0.5 else hold(k)


def scratching_or_touching(k: Clip, frame: str, point: Sequence[float], *, hand_dir: Sequence[float],
                           palm: Sequence[float], pole: Sequence[float]) -> None:
    """One hand's fingers to a spot (see `Clip.reach`), scratching or just touching it."""
    k.reach(frame, point, grip=FINGER, hand_dir=hand_dir, palm=palm, pole=pole, wiggle=scratch_or_touch(k))


# ----------------------------------------------------------------------------------------------------------------
# Body

@motion("shaking body")
def shaking_body(k: Clip) -> None:
    sway = k.active() * k.wave(1.0, 2.5)
    k.c.chest[:, 2] += k.deg(3, 6) * sway
    k.c.root[:, 0] += 0.012 * k.amp * sway


@motion("sitting straightly")
def sitting_straightly(k: Clip) -> None:
    start = k.u(0.1, 0.5) * k.duration
    up = smoothstep((k.t - start) / (k.u(0.3, 0.8) / k.speed))
    k.c.chest[:, 1] += k.centred(k.deg(10, 20) * (1.0 - up))
    k.c.head[:, 1] += k.centred(k.deg(3, 8) * (1.0 - up))


@motion("shrugging")
def shrugging(k: Clip) -> None:
    env = k.window(stay=0.0, hold=(0.05, 0.2))
    if k.rng.random() < 0.4:  # a second shrug
        env = np.maximum(env, k.window(stay=0.0, hold=(0.05, 0.2)))
    lift = k.centred(k.u(0.025, 0.045) * k.amp * env)
    k.c.shrug += lift[:, None] * (1.0 if k.rng.random() < 0.8 else np.array([1.0, 0.3]))
    k.c.head[:, 1] += k.centred(k.deg(-6, 0) * env)


@motion("turning around")
def turning_around(k: Clip) -> None:
    env = k.window(hold=(0.1, 0.3))
    turn = k.centred(k.deg(18, 32) * env * k.side())
    k.c.pelvis[:, 0] += 0.4 * turn
    k.c.chest[:, 0] += 0.6 * turn
    k.c.head[:, 0] += 0.5 * turn


@motion("rising up")
def rising_up(k: Clip) -> None:
    env = k.window(stay=0.2)
    if k.rng.random() < 0.42:  # the clip begins with the person already up, who then sits back down
        env = 1.0 - env
    k.c.root[:, 1] -= k.centred(k.u(0.025, 0.06) * k.amp * env)
    k.c.root[:, 2] += k.centred(0.05 * k.amp * env)
    k.c.chest[:, 1] += k.centred(k.deg(8, 18) * env)  # leaning forward to lift off the seat


# ----------------------------------------------------------------------------------------------------------------
# Head

def head_turn(k: Clip, axis: int, low: float, high: float, signed: bool) -> None:
    """One excursion of the head about `axis` (0 yaw, 1 pitch, 2 roll) by `low`..`high` degrees, to a random side
    if `signed`."""
    sign = k.side() if signed else 1.0
    k.c.head[:, axis] += k.centred(k.deg(low, high) * sign * k.window(hold=(0.2, 0.5)))


@motion("bowing head")
def bowing_head(k: Clip) -> None:
    head_turn(k, 1, 18, 35, signed=False)


@motion("head up")
def head_up(k: Clip) -> None:
    head_turn(k, 1, -30, -15, signed=False)


@motion("tilting head")
def tilting_head(k: Clip) -> None:
    head_turn(k, 2, 12, 25, signed=True)


@motion("turning head")
def turning_head(k: Clip) -> None:
    head_turn(k, 0, 18, 35, signed=True)


@motion("nodding")
def nodding(k: Clip) -> None:
    k.c.head[:, 1] += k.centred(k.deg(6, 12) * k.active() * (0.5 + 0.5 * k.wave(1.5, 3.0)))


@motion("shaking head")
def shaking_head(k: Clip) -> None:
    k.c.head[:, 0] += k.deg(8, 18) * k.active() * k.wave(1.5, 3.0)


# ----------------------------------------------------------------------------------------------------------------
# Upper limb

@motion("scratching arms")
def scratching_arms(k: Clip) -> None:
    k.reach("forearm_other", (0.0, -0.01, 0.03), grip=FINGER, hand_dir=(-1, 0.3, 0), palm=(0, 1, 0),
            pole=(0.6, 1, 0.4), wiggle=scratch(k))


@motion("playing objects")
def playing_objects(k: Clip) -> None:
    fiddle = 0.015 * k.amp * k.noise(6, 1.5, 3.0)
    env = k.window(hold=(0.2, 0.5))
    left, right = k.both("chest", (0.04, 0.24, 0.20), grip=FINGER, hand_dir=(-0.6, 0.2, 1), palm=(-1, 0.5, 0),
                         pole=(1, 1, 0), env=env)
    left.wiggle, right.wiggle = fiddle[:, :3], fiddle[:, 3:]
    k.c.curl += 0.3 * env[None, :, None] * k.noise(10, 1.0, 3.0).reshape(-1, 2, 5).transpose(1, 0, 2)


@motion("putting hands together")
def putting_hands_together(k: Clip) -> None:
    k.both("chest", (0.012, 0.22, 0.17), grip=PALM, hand_dir=(0, -0.5, 1), palm=(-1, 0, 0), pole=(1, 1, 0),
           wiggle=hold(k))


@motion("rubbing hands")
def rubbing_hands(k: Clip) -> None:
    slide = (k.u(0.015, 0.03) * k.amp * k.wave(2.0, 3.5))[:, None] * np.array([0.0, 0.6, 0.8])
    left, right = k.both("chest", (0.015, 0.24, 0.17), grip=PALM, hand_dir=(0, -0.5, 1), palm=(-1, 0, 0),
                         pole=(1, 1, 0), env=k.window(hold=(0.15, 0.4)))
    left.wiggle, right.wiggle = slide, -slide


@motion("pointing oneself")
def pointing_oneself(k: Clip) -> None:
    r = k.reach("chest", (0.0, 0.10, 0.09), grip=FINGER, hand_dir=(-0.2, 0, -1), palm=(-1, 0, 0),
                pole=(0.8, 1, 0.3), wiggle=taps(k, (0, 0, 0.6), 1.0, 2.0))
    pose_fingers(k, r, (0.7, 0.0, 0.9, 0.9, 0.9))


@motion("clenching fist")
def clenching_fist(k: Clip) -> None:
    env = k.window(stay=0.2, hold=(0.05, 0.3))
    if k.rng.random() < 0.4:
        env = np.maximum(env, k.window(stay=0.0, hold=(0.05, 0.2)))
    hands = [0, 1] if k.rng.random() < 0.4 else [int(k.rng.integers(2))]
    for i in hands:
        k.c.curl[i] += k.centred((1.0 - k.c.curl[i]) * env[:, None])
        k.c.wrist[i, :, 1] -= k.centred(0.01 * env)  # the fist tenses and rises a little


@motion("stretching arms")
def stretching_arms(k: Clip) -> None:
    goal, hand_dir = [((0.06, -0.32, 0.02), (0, -1, 0)), ((0.32, -0.02, 0.05), (1, 0, 0)),
                      ((0.03, 0.02, 0.32), (0, 0, 1))][int(k.rng.choice(3, p=(0.2, 0.4, 0.4)))]
    env = k.window(stay=0.0, hold=(0.1, 0.3))
    k.both("shoulder_same", goal, grip=PALM, hand_dir=hand_dir, palm=(0, 1, 0), pole=(0.5, 1, -0.5), env=env)
    k.c.chest[:, 1] -= k.centred(k.deg(3, 8) * env)


@motion("retracting arms")
def retracting_arms(k: Clip) -> None:
    start = k.u(0.1, 0.5) * k.duration
    out = 1.0 - smoothstep((k.t - start) / (k.u(0.3, 0.7) / k.speed))
    k.both("shoulder_same", (0.05, 0.10, 0.30), grip=PALM, hand_dir=(0, 0, 1), palm=(0, 1, 0),
           pole=(0.5, 1, -0.5), env=out)


@motion("waving")
def waving(k: Clip) -> None:
    swing = k.wave(2.0, 3.0)
    r = k.reach("shoulder_same", (0.12, -0.12, 0.15), grip=PALM, hand_dir=(0, -1, 0), palm=(0, 0, 1),
                pole=(1, 0.8, 0), env=k.window(hold=(0.15, 0.35)))
    r.wiggle = k.u(0.03, 0.05) * k.amp * swing[:, None] * np.array([1.0, 0.0, 0.0])


@motion("spreading hands")
def spreading_hands(k: Clip) -> None:
    env = k.window(hold=(0.1, 0.35))
    k.both("hip_same", (0.20, -0.14, 0.16), grip=PALM, hand_dir=(0.7, 0, 1), palm=(0, -1, 0),
           pole=(1, 0.7, -0.3), env=env, single=0.3)
    for i in range(2):  # fingers spread wide
        k.c.curl[i] += k.centred((-0.4 - k.c.curl[i]) * env[:, None])


@motion("hands touching fingers")
def hands_touching_fingers(k: Clip) -> None:
    env = k.window(hold=(0.1, 0.35))
    k.both("chest", (0.03, 0.18, 0.20), grip=FINGER, hand_dir=(-0.5, -1, 0), palm=(-1, 0, 0.3),
           pole=(1, 1, 0), env=env)
    k.c.curl += k.centred(0.25 * k.amp * env * (0.5 + 0.5 * k.wave(1.5, 3.0)))[None, :, None]


@motion("other finger movements")
def other_finger_movements(k: Clip) -> None:
    env = k.active()
    hands = [0, 1] if k.rng.random() < 0.4 else [int(k.rng.integers(2))]
    for i in hands:
        k.c.curl[i] += 0.4 * k.amp * env[:, None] * k.noise(5, 2.0, 4.0)


@motion("illustrative gestures")
def illustrative_gestures(k: Clip) -> None:
    env = k.window(hold=(0.3, 0.6))
    gesture = k.u(0.04, 0.08) * k.amp * k.noise(6, 0.8, 2.0)
    if k.rng.random() < 0.5:
        left, right = k.both("chest", (0.10, 0.20, 0.22), grip=PALM, hand_dir=(-0.3, -0.3, 1),
                             palm=(-0.5, 0, 0.5), pole=(1, 1, 0), env=env)
        left.wiggle, right.wiggle = gesture[:, :3], gesture[:, 3:]
    else:
        k.reach("chest", (0.08, 0.18, 0.22), grip=PALM, hand_dir=(-0.3, -0.3, 1), palm=(-0.5, 0, 0.5),
                pole=(1, 1, 0), env=env, wiggle=gesture[:, :3])
    k.c.curl += 0.3 * env[None, :, None] * k.noise(2, 0.5, 1.5).T[:, :, None]


# ----------------------------------------------------------------------------------------------------------------
# Lower limb

def legs(k: Clip) -> list[int]:
    """Both legs, or one at random."""
    return [0, 1] if k.rng.random() < 0.5 else [int(k.rng.integers(2))]


def move_feet(k: Clip, which: list[int], delta: Sequence[float], env: np.ndarray, heel: float = 0.0) -> None:
    """The ankles of `which` legs moved by `delta` (left leg; mirrored for the right) and the heels raised by
    `heel`, over `env`."""
    for i in which:
        s = LEFT if i == 0 else RIGHT
        k.c.ankle[i] += k.centred(k.amp * env[:, None] * (np.asarray(delta) * (s, 1.0, 1.0)))
        k.c.heel[i] += k.centred(heel * env)


@motion("shaking legs")
def shaking_legs(k: Clip) -> None:
    env = k.active()
    vertical = k.rng.random() < 0.7  # heel bouncing, otherwise knees opening and closing
    for i in legs(k):
        osc = env * k.wave(3.0, 5.5)
        if vertical:
            bounce = k.u(0.012, 0.025) * k.amp * (0.5 + 0.5 * osc)
            k.c.ankle[i, :, 1] -= k.centred(bounce)
            k.c.heel[i] += k.centred(bounce / 0.03)
        else:
            k.c.knee_pole[i, :, 0] += k.centred(0.8 * k.amp * osc * (LEFT if i == 0 else RIGHT))


@motion("curling legs")
def curling_legs(k: Clip) -> None:
    move_feet(k, legs(k), (-0.02, -0.03, -0.15), k.window(stay=0.2), heel=0.8)


@motion("spread legs")
def spread_legs(k: Clip) -> None:
    env = k.window(stay=0.5)
    move_feet(k, [0, 1], (0.06, 0.0, 0.0), env)
    for i, s in enumerate((LEFT, RIGHT)):
        k.c.knee_pole[i, :, 0] += k.centred(0.4 * k.amp * env * s)


@motion("closing legs")
def closing_legs(k: Clip) -> None:
    env = k.window(stay=0.5)
    for i, s in enumerate((LEFT, RIGHT)):  # ankles and knees towards the midline
        k.c.ankle[i, :, 0] += k.centred(env * (s * 0.035 - k.c.ankle[i, :, 0]))
        k.c.knee_pole[i, :, 0] += k.centred(env * (-0.4 * s - k.c.knee_pole[i, :, 0]))


@motion("crossing legs")
def crossing_legs(k: Clip) -> None:
    i = int(k.rng.integers(2))
    s, other = (LEFT, RIGHT)[i], 1 - i
    env = k.window(stay=0.2, hold=(0.2, 0.5))
    goal = k.c.ankle[other] + (-s * 0.06, -0.14, -0.02)  # over the other knee's shin
    k.c.ankle[i] += k.centred(env[:, None] * (goal - k.c.ankle[i]))
    k.c.knee_pole[i] += k.centred(env[:, None] * (np.array([-s * 0.4, -1.0, 0.5]) - k.c.knee_pole[i]))
    k.c.heel[i] += k.centred(env * 0.5)


@motion("stretching feet")
def stretching_feet(k: Clip) -> None:
    move_feet(k, legs(k), (0.01, -0.12, 0.16), k.window(stay=0.2), heel=-0.8)


@motion("retracting feet")
def retracting_feet(k: Clip) -> None:
    start = k.u(0.1, 0.5) * k.duration
    out = 1.0 - smoothstep((k.t - start) / (k.u(0.3, 0.7) / k.speed))
    move_feet(k, legs(k), (0.01, -0.12, 0.16), out, heel=-0.8)


@motion("tiptoe")
def tiptoe(k: Clip) -> None:
    env = k.window(stay=0.2)
    if k.rng.random() < 0.4:  # bouncing on the toes
        env = env * (0.6 + 0.4 * k.wave(1.5, 2.5))
    move_feet(k, legs(k), (0.0, -0.04, 0.0), env, heel=1.0)


# ----------------------------------------------------------------------------------------------------------------
# Hand to body

@motion("scratching or touching neck")
def scratching_or_touching_neck(k: Clip) -> None:
    scratching_or_touching(k, "chest", (0.035, -0.04, 0.03), hand_dir=(-0.3, -1, 0), palm=(-1, 0, -0.5),
                           pole=(0.7, 1, 0.3))


@motion("scratching or touching chest")
def scratching_or_touching_chest(k: Clip) -> None:
    scratching_or_touching(k, "chest", (0.04, 0.09, 0.08), hand_dir=(-0.7, -0.3, 0), palm=(0, 0, -1),
                           pole=(0.7, 1, 0.3))


@motion("scratching or touching back")
def scratching_or_touching_back(k: Clip) -> None:
    scratching_or_touching(k, "shoulder_same", (-0.03, -0.05, -0.09), hand_dir=(0, 1, -0.5), palm=(0, 0, 1),
                           pole=(1, -1.2, 0.3))


@motion("scratching or touching shoulder")
def scratching_or_touching_shoulder(k: Clip) -> None:
    scratching_or_touching(k, "shoulder_other", (0.0, 0.02, 0.05), hand_dir=(-0.5, -0.3, 0), palm=(0, 0, -1),
                           pole=(0.5, 1, 0.5))


@motion("arms akimbo")
def arms_akimbo(k: Clip) -> None:
    k.both("hip_same", (0.07, -0.07, 0.0), grip=PALM, hand_dir=(-0.3, 0.3, 1), palm=(-1, 0, 0),
           pole=(1, 0.2, -0.6), wiggle=hold(k), single=0.3)


@motion("crossing arms")
def crossing_arms(k: Clip) -> None:
    env = k.window(hold=(0.1, 0.35))
    _, right = k.both("chest", (-0.10, 0.14, 0.10), grip=PALM, hand_dir=(-1, 0, 0), palm=(0, 0, -1),
                      pole=(1, 1, 0.3), env=env)
    right.point = right.point + (0.0, 0.0, 0.02)  # one forearm lies over the other


# ----------------------------------------------------------------------------------------------------------------
# Hand to head

@motion("playing or tidying hair")
def playing_or_tidying_hair(k: Clip) -> None:
    wiggle = stroke(k, (0, -0.3, -1)) if k.rng.random() < 0.6 else scratch(k)
    k.reach("head", (0.05, -0.15, 0.0), grip=FINGER, hand_dir=(-0.5, -0.3, -0.6), palm=(-1, 0.5, 0),
            pole=(1, -0.7, 0.5), wiggle=wiggle)


@motion("scratching or touching hindbrain")
def scratching_or_touching_hindbrain(k: Clip) -> None:
    scratching_or_touching(k, "head", (0.02, -0.10, -0.09), hand_dir=(-0.8, 0, 0), palm=(0, 0, 1), pole=(1, -1, -0.2))


@motion("scratching or touching forehead")
def scratching_or_touching_forehead(k: Clip) -> None:
    scratching_or_touching(k, "head", (0.01, -0.12, 0.08), hand_dir=(-0.8, -0.4, 0), palm=(0, 0, -1),
                           pole=(0.6, 1, 0.6))


@motion("scratching or touching face")
def scratching_or_touching_face(k: Clip) -> None:
    scratching_or_touching(k, "head", (0.05, -0.05, 0.06), hand_dir=(0, -1, 0.2), palm=(-1, 0, 0), pole=(0.5, 1, 0.5))


@motion("rubbing eyes")
def rubbing_eyes(k: Clip) -> None:
    r = k.reach("head", (0.032, -0.085, 0.09), grip=KNUCKLE, hand_dir=(-0.3, -1, 0), palm=(0, 0, -1),
                pole=(0.5, 1, 0.6), wiggle=rub(k))
    pose_fingers(k, r, (0.6, 0.7, 0.7, 0.7, 0.7))


@motion("touching nose")
def touching_nose(k: Clip) -> None:
    r = k.reach("head", (0.0, -0.06, 0.10), grip=FINGER, hand_dir=(-0.5, -1, -0.2), palm=(-1, 0, -0.5),
                pole=(0.5, 1, 0.7), env=k.window(hold=(0.05, 0.3)), wiggle=hold(k))
    pose_fingers(k, r, (0.6, 0.0, 0.8, 0.8, 0.8))


@motion("touching ears")
def touching_ears(k: Clip) -> None:
    scratching_or_touching(k, "head", (0.08, -0.07, 0.02), hand_dir=(0, -1, 0), palm=(-1, 0, 0), pole=(1, 0.6, 0.2))


@motion("covering face")
def covering_face(k: Clip) -> None:
    env = k.window(hold=(0.1, 0.35))
    k.both("head", (0.035, -0.07, 0.11), grip=PALM, hand_dir=(-0.2, -1, 0), palm=(0, 0, -1),
           pole=(0.4, 1, 0.3), env=env, wiggle=hold(k), single=0.4)
    k.c.head[:, 1] += k.centred(k.deg(5, 15) * env)


@motion("covering mouth")
def covering_mouth(k: Clip) -> None:
    k.reach("head", (0.0, -0.03, 0.105), grip=PALM, hand_dir=(-1, -0.2, 0), palm=(0, 0, -1),
            pole=(0.5, 1, 0.6), env=k.window(hold=(0.15, 0.4)), wiggle=hold(k))


@motion("pushing glasses")
def pushing_glasses(k: Clip) -> None:
    env = k.window(hold=(0.05, 0.2))
    push = -0.015 * k.amp * smoothstep((env - 0.8) / 0.2)  # slides up once the finger is on the bridge
    r = k.reach("head", (0.0, -0.083, 0.10), grip=FINGER, hand_dir=(0, -1, -0.3), palm=(0, 0, -1),
                pole=(0.5, 1, 0.7), env=env, wiggle=push[:, None] * np.array([0.0, 1.0, 0.3]))
    pose_fingers(k, r, (0.6, 0.0, 0.8, 0.8, 0.8))


# ----------------------------------------------------------------------------------------------------------------
# Hand to leg

@motion("patting legs")
def patting_legs(k: Clip) -> None:
    kw = {"grip": PALM, "hand_dir": (0, 0.3, 1), "palm": (0, 1, 0), "pole": (0.6, 1, -0.3),
          "env": k.window(hold=(0.3, 0.5)), "wiggle": taps(k, (0, -1, 0))}
    if k.rng.random() < 0.4:
        k.both("thigh_same", (0.0, -0.03, 0.02), **kw)
    else:
        k.reach("thigh_same", (0.0, -0.03, 0.02), **kw)


@motion("touching legs")
def touching_legs(k: Clip) -> None:
    wiggle = stroke(k, (0, 0.2, 1)) if k.rng.random() < 0.5 else hold(k)
    k.reach(("thigh_same", "knee_same")[int(k.rng.integers(2))], (0.0, -0.03, 0.02), grip=PALM,
            hand_dir=(0, 0.3, 1), palm=(0, 1, 0), pole=(0.6, 1, -0.3), wiggle=wiggle)


@motion("scratching legs")
def scratching_legs(k: Clip) -> None:
    k.reach(("thigh_same", "knee_same")[int(k.rng.integers(2))], (0.0, -0.03, 0.02), grip=FINGER,
            hand_dir=(0, 0.5, 1), palm=(0, 1, 0), pole=(0.6, 1, -0.3), wiggle=scratch(k))


@motion("scratching feet")
def scratching_feet(k: Clip) -> None:
    env = k.window(hold=(0.2, 0.5))
    r = k.reach("ankle_same", (0.0, -0.03, 0.04), grip=FINGER, hand_dir=(0, 1, 0.3), palm=(0, 0, -1),
                pole=(0.6, 0.3, -0.5), env=env, wiggle=scratch(k))
    k.c.chest[:, 1] += k.centred(k.deg(15, 25) * env)  # bending down to the foot
    k.c.head[:, 1] += k.centred(k.deg(5, 15) * env)
    i = 0 if r.side == LEFT else 1
    k.c.ankle[i] += k.centred(env[:, None] * np.array([-r.side * 0.05, -0.12, 0.02]))  # and lifting it


check_programs(PROGRAMS, MA52_CLASS_NAMES)
