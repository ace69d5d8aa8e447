"""The context a motion program works in: one clip's time axis, its individual, its controls, and random draws
scaled by the clip's amplitude and speed.

Every draw comes from the clip's own generator, in the order the programs ask for them, so a clip is a function of
its seed alone.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .body import FPS, LEFT, RIGHT, Reach, rest_controls, sample_person, smooth_noise
from .difficulty import Difficulty
from .geometry import bump


class Clip:
    """What a class program needs: time, random draws scaled by the clip's amplitude and speed, and the controls."""

    def __init__(self, rng: np.random.Generator, length: int, diff: Difficulty) -> None:
        self.rng = rng
        self.diff = diff
        self.t = np.arange(length) / FPS
        self.duration = length / FPS
        self.amp = rng.uniform(*diff.amplitude)
        self.speed = rng.uniform(*diff.speed)
        self.person = sample_person(rng, diff.proportions)
        self.c = rest_controls(rng, length, diff)

    def u(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def deg(self, low: float, high: float) -> float:
        """A random angle in radians, scaled by the clip's amplitude."""
        return float(np.radians(self.rng.uniform(low, high))) * self.amp

    def side(self) -> float:
        return RIGHT if self.rng.random() < 0.6 else LEFT  # most people act with the right hand

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
        return bump(self.t, start, rise * self.duration, keep * self.duration, fall * self.duration)

    def active(self) -> np.ndarray:
        """Envelope of an action that lasts most of the clip (oscillations)."""
        rise, fall = self.u(0.03, 0.15), self.u(0.03, 0.15)
        start = self.u(0.0, 0.1)
        keep = max(self.u(0.55, 0.85) - rise - start, 0.1)
        return bump(self.t, start * self.duration, rise * self.duration, keep * self.duration,
                    fall * self.duration)

    def wave(self, low: float, high: float) -> np.ndarray:
        """A sinusoid of random frequency (Hz, scaled by speed) and phase."""
        return np.sin(2 * np.pi * self.freq(low, high) * self.t + self.u(0, 2 * np.pi))

    def centred(self, x: np.ndarray) -> np.ndarray:
        """An excursion (time on axis 0) less part of its mean: the resting posture takes the rest, so the mean
        posture of a clip carries little of its class."""
        return x - self.diff.mean_compensation * x.mean(axis=0)

    def noise(self, dims: int, low: float, high: float) -> np.ndarray:
        return smooth_noise(self.rng, self.t, dims, low * self.speed, high * self.speed)

    def reach(self, frame: str, point: Sequence[float], *, grip: float, hand_dir: Sequence[float],
              palm: Sequence[float], pole: Sequence[float], side: float | None = None,
              env: np.ndarray | None = None, wiggle: np.ndarray | None = None) -> Reach:
        """A hand (`side`, else a random one) to `point` in `frame` and back over `env` (else one `window`)."""
        def styled(v: Sequence[float], spread: float) -> np.ndarray:  # each person reaches a little differently
            return np.asarray(v, float) + self.diff.posture * self.rng.uniform(-spread, spread, 3)

        r = Reach(self.side() if side is None else side, frame, styled(point, 0.015),
                  self.window() if env is None else env, grip, styled(hand_dir, 0.35), styled(palm, 0.35),
                  styled(pole, 0.35), wiggle)
        self.c.reaches.append(r)
        return r

    def both(self, frame: str, point: Sequence[float], single: float = 0.0, **kw: Any) -> tuple[Reach, ...]:
        """The same reach with both hands, mirrored, the second hand slightly late; with probability `single`
        one hand only."""
        env = kw.pop("env", None)
        env = self.window() if env is None else env
        if self.rng.random() < single:
            return (self.reach(frame, point, env=env, **kw),)
        lag = int(self.rng.integers(0, 4))
        late = np.concatenate([np.zeros(lag), env[:len(env) - lag]])
        return (self.reach(frame, point, side=LEFT, env=env, **kw),
                self.reach(frame, point, side=RIGHT, env=late, **kw))
