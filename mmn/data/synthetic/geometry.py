"""Geometry of the synthetic body: rotations, vectors, a two-link limb solved by inverse kinematics, and the smooth
envelopes that motions are built from.

Coordinates: x to the right, y down (image convention), z towards the camera; body units, 1 = standing height.
Arrays hold time (frames L) on a leading axis, and the three coordinates on the last.
"""
from __future__ import annotations

import numpy as np


def rot(angles: np.ndarray) -> np.ndarray:
    """Rotation matrices (L, 3, 3) from (L, 3) yaw, pitch, roll: yaw turns about the vertical axis, pitch > 0 bends
    forward/down, roll tilts in the image plane."""
    (cy, cp, cr), (sy, sp, sr) = np.cos(angles.T), np.sin(angles.T)
    # The product Ry(yaw) Rx(pitch) Rz(roll) written out, with Rx(p) = [[1, 0, 0], [0, cp, sp], [0, -sp, cp]].
    return np.stack([
        cy * cr - sy * sp * sr, -cy * sr - sy * sp * cr, sy * cp,
        cp * sr, cp * cr, sp,
        -sy * cr - cy * sp * sr, sy * sr - cy * sp * cr, cy * cp,
    ], axis=1).reshape(-1, 3, 3)


def unit(v: np.ndarray) -> np.ndarray:
    """`v` scaled to length 1 over its last axis (a zero vector stays zero)."""
    return v / np.maximum(np.sqrt(np.sum(v * v, axis=-1, keepdims=True)), 1e-9)


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product over the last axis (np.cross is slow on small arrays)."""
    return np.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1], a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                     a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], axis=-1)


def two_link(root: np.ndarray, target: np.ndarray, a: float, b: float, pole: np.ndarray,
             ) -> tuple[np.ndarray, np.ndarray]:
    """Middle joint and reachable end of a two-link limb (L, 3) each; the middle joint bends towards `pole`."""
    d = target - root
    dist = np.sqrt(np.sum(d * d, axis=-1, keepdims=True))
    axis = d / np.maximum(dist, 1e-9)
    dist = np.clip(dist, abs(a - b) + 1e-3, (a + b) * 0.999)  # out-of-reach targets straighten the limb
    along = (a * a + dist * dist - b * b) / (2.0 * dist)
    side = pole - np.sum(pole * axis, axis=-1, keepdims=True) * axis
    mid = root + axis * along + unit(side) * np.sqrt(np.maximum(a * a - along * along, 0.0))
    return mid, root + axis * dist


def smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, and a smooth S between."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def bump(t: np.ndarray, start: float, rise: float, hold: float, fall: float) -> np.ndarray:
    """0 until `start`, smooth rise to 1, hold, smooth fall back to 0 (an infinite hold never falls)."""
    return smoothstep((t - start) / rise) * (1.0 - smoothstep((t - start - rise - hold) / fall))
