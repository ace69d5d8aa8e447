"""Hand business that belongs to no class: what a hand the class leaves free does, and the finger shape a hand
holds at its goal (the index pointing, knuckles to the eyes).

Fidgeting runs after the class's program, on the hands that program did not use, so resting a chin on a hand or
shifting a hand's place happens in every class alike and tells nothing about it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .body import LEFT, RIGHT, Reach
from .clip import Clip
from .geometry import smoothstep


def fidget(k: Clip) -> None:
    """Class-independent business of the hands the class leaves free: resting the chin on one (from the start, or
    moving it there), or shifting where it rests."""
    busy = {r.side for r in k.c.reaches}
    for i, s in enumerate((LEFT, RIGHT)):
        if s in busy or k.rng.random() >= k.diff.fidget:
            continue
        if k.rng.random() < 0.5:
            env = np.ones_like(k.t) if k.rng.random() < 0.7 else k.window(stay=1.0)
            k.reach("head", (0.02, 0.0, 0.075), side=s, env=env, grip=0.08, hand_dir=(-0.3, -1, 0.3),
                    palm=(-0.5, -1, 0), pole=(0.3, 1, 0.3))
        else:
            step = smoothstep((k.t - k.u(0.0, 0.8) * k.duration) / k.u(0.3, 0.8))
            k.c.wrist[i] += step[:, None] * k.rng.uniform(-0.08, 0.08, 3)


def pose_fingers(k: Clip, reach: Reach, curl: Sequence[float]) -> None:
    """Fingers take a shape (e.g. the index pointing) while the hand is at its goal."""
    i = 0 if reach.side == LEFT else 1
    k.c.curl[i] += k.centred(reach.env[:, None] * (np.asarray(curl) - k.c.curl[i]))
