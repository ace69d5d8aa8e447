"""The release's preprocessing, vectorised: normalisation and bones once per dataset, then sampling and augmentation.

Order of operations, matched bit for bit against what the released loader returns (`fixtures/ma52_preprocess_val.npz`):
1. per clip, in float32: subtract the centre joint of frame 0, then min-max scale each axis over all the clip's frames
   and joints: `2 * (x - min) / (max - min + 1e-6) - 1`;
2. bone and bone_motion: `bone[a] = x[a] - x[b]` on the normalised joints, raw joint indices (see
   `bone_references`);
3. joints reordered by body part;
4. per item: sample T frame indices, `index_t = 2 * idx / L - 1` (float32), then augmentation (below), then for
   joint_motion and bone_motion the difference of consecutive sampled frames (`motion`).
Steps 1-3 commute with frame sampling, so they run once over every frame of the dataset; per item only 4 remains.

The four modalities are the release's four input streams (its data types j, b, jm, bm), matched against
`fixtures/ma52_motion_val.npz` for the motion streams. Motion is taken after sampling and after augmentation, so a
zeroed frame block shows in it as a jump in and out of zero, and its last frame is 0 (the model's own motion branch,
mmn/model/block.py, repeats the last difference instead).

Augmentation draws all its randomness as one fixed-length vector of uniforms per item (`augment_draws`), so a batch is
augmented with array operations and an item's augmentation depends only on its own draws.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmn.layouts import SkeletonLayout

MODALITIES = ("joint", "bone", "joint_motion", "bone_motion")
BONE_MODALITIES = ("bone", "bone_motion")  # the streams computed on bones rather than joints
MOTION_MODALITIES = ("joint_motion", "bone_motion")  # the streams that are frame differences
# Other names for the modalities, for did-you-mean: the release's data types, and this project's former `motion`
# (joint frame differences with the last one repeated), retired for the release's joint_motion.
MODALITY_ALIASES = {"j": "joint", "b": "bone", "jm": "joint_motion", "bm": "bone_motion", "motion": "joint_motion"}
BONE_MODES = ("released", "parent")
AUGMENTS = ("none", "released", "full")

_EPS = 1e-6  # the release's guard in the min-max denominator

# Augmentation. The release applies each step with this probability; "full" reuses it for the steps the release
# meant to have but which have no effect there.
AUGMENT_P = 0.2
_BLOCK_MIN, _BLOCK_MAX = 4, 16  # frames zeroed by the block step, inclusive
_MAX_ROTATION = np.pi / 12  # affine: rotation up to ±15 degrees,
_MAX_SCALE = 0.1  # each axis scaled by 1 ± 0.1,
_MAX_SHEAR = 0.1  # x sheared by up to ±0.1 y
_JOINT_DROP = 0.1  # joint masking: each joint hidden over the whole clip with this probability

# Columns of the per-item draw vector; the last T + V columns are per-frame jitter and per-joint masking draws.
_AXIS_ON, _AXIS, _BLOCK_ON, _BLOCK_LEN, _BLOCK_START = 0, 1, 2, 3, 4
_AFFINE_ON, _ROTATION, _SCALE_X, _SCALE_Y, _SHEAR = 5, 6, 7, 8, 9
_JITTER_ON, _REVERSE_ON, _MASK_ON = 10, 11, 12
_FIXED_DRAWS = 13


@dataclass(frozen=True)
class PackedClips:
    """Every clip's frames in one channel-first array, so per-clip steps are array operations over contiguous joint
    rows; clip i is `frames[:, starts[i] : starts[i] + lengths[i]]`."""

    frames: np.ndarray  # float32 (2, total frames, V)
    starts: np.ndarray  # int64 (N,)
    lengths: np.ndarray  # int64 (N,)


def pack(keypoints: Sequence[np.ndarray]) -> PackedClips:
    """Concatenate clips of shape (L_i, V, 2) into one float32 (2, total frames, V) array with offsets."""
    lengths = np.array([len(clip) for clip in keypoints], dtype=np.int64)
    starts = np.zeros_like(lengths)
    np.cumsum(lengths[:-1], out=starts[1:])
    frames = np.concatenate([clip.transpose(2, 0, 1) for clip in keypoints], axis=1).astype(np.float32, copy=False)
    return PackedClips(frames, starts, lengths)


def normalise(packed: PackedClips, centre_joint: int) -> PackedClips:
    """Centre on the centre joint of each clip's first frame, then min-max scale each axis per clip to [-1, 1]."""
    def repeat(per_clip: np.ndarray) -> np.ndarray:  # (2, N) -> (2, total frames, 1)
        return np.repeat(per_clip, packed.lengths, axis=1)[:, :, None]

    frames = packed.frames - repeat(packed.frames[:, packed.starts, centre_joint])
    lowest = np.minimum.reduceat(frames.min(axis=2), packed.starts, axis=1)  # (2, N)
    highest = np.maximum.reduceat(frames.max(axis=2), packed.starts, axis=1)
    span = highest - lowest + np.float32(_EPS)  # the same float32 rounding as the release's per-clip expression
    # in place, in the release's order of float32 operations: 2 * (x - min) / span - 1
    frames -= repeat(lowest)
    frames *= np.float32(2)
    frames /= repeat(span)
    frames -= np.float32(1)
    return PackedClips(frames, packed.starts, packed.lengths)


def bone_references(bones: Sequence[tuple[int, int]], num_joints: int, mode: str) -> np.ndarray:
    """For each joint j its reference r[j], so that `bone[j] = x[j] - x[r[j]]`; joints without a bone reference
    themselves, which gives exactly 0.

    released: for each pair (a, b) in order `bone[a] = x[a] - x[b]`, so the last pair naming a joint first wins and
    joints never named first stay 0 (MA-52: 16 of them, hands and toes included).
    parent: pairs read as (parent, child), the skeleton the bone list describes; each child minus its parent, the
    first pair naming a joint as child defining its parent; roots (never a child: MA-52 joint 31, iMiGUE joint 1)
    stay 0.
    """
    reference = np.arange(num_joints)
    named = set()
    for a, b in bones:
        if mode == "released":
            reference[a] = b
        elif mode == "parent":
            if b not in named:
                reference[b] = a
                named.add(b)
        else:
            raise ValueError(f"unknown bones mode {mode!r}: choose one of {', '.join(BONE_MODES)}")
    return reference


def prepare(keypoints: Sequence[np.ndarray], layout: SkeletonLayout, modality: str, bones: str) -> PackedClips:
    """Everything the release does per clip before sampling: normalise, bones (bone streams), reorder joints."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}: choose one of {', '.join(MODALITIES)}")
    packed = normalise(pack(keypoints), layout.centre_joint)
    order = np.array(layout.body_part_order)
    frames = np.take(packed.frames, order, axis=2)  # np.take: much faster than fancy indexing here
    if modality in BONE_MODALITIES:  # bones use raw joint indices, so look up each reordered joint's reference
        frames -= np.take(packed.frames, bone_references(layout.bones, layout.num_joints, bones)[order], axis=2)
    return PackedClips(frames, packed.starts, packed.lengths)


def eval_indices(lengths: np.ndarray, num_frames: int) -> np.ndarray:
    """Val/test sampling of the release: floor(linspace(0, L - 1, T)) per clip, (N, T) int64."""
    return np.floor(np.linspace(0, lengths - 1, num_frames, axis=-1)).astype(np.int64)


def train_indices(rng: np.random.Generator, length: int, num_frames: int) -> np.ndarray:
    """Train sampling of the release: T draws without replacement from T copies of range(L), sorted."""
    # position p of the pool tile(range(L), T) holds frame p % L; Floyd's algorithm (shuffle=False) is O(T)
    picks = rng.choice(num_frames * length, size=num_frames, replace=False, shuffle=False)
    return np.sort(picks % length)


def frame_time(indices: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """index_t = 2 * idx / L - 1 in float32, (B, T), as the release computes it."""
    return np.float32(2) * indices.astype(np.float32) / lengths.astype(np.float32)[:, None] - np.float32(1)


def motion(x: np.ndarray) -> np.ndarray:
    """The release's motion stream of (B, C, T, V) frames: `d[t] = x[t + 1] - x[t]`, the last frame 0."""
    out = np.empty_like(x)
    np.subtract(x[:, :, 1:], x[:, :, :-1], out=out[:, :, :-1])
    out[:, :, -1] = 0
    return out


def augment_draws(num_frames: int, num_joints: int) -> int:
    """How many uniforms one item's augmentation consumes."""
    return _FIXED_DRAWS + num_frames + num_joints


def temporal_augment(indices: np.ndarray, lengths: np.ndarray, draws: np.ndarray | None,
                     augment: str) -> tuple[np.ndarray, np.ndarray]:
    """(frames to gather, positions for index_t), both (B, T), after the "full" temporal steps.

    Jitter moves each sampled index by up to max(1, L // 2T) frames (half the mean gap), clipped and re-sorted.
    Reversal plays the clip backwards: the sampled positions stay increasing (so index_t keeps its meaning, a place in
    the clip as shown) and the frame shown at position p is L - 1 - p.
    """
    if augment != "full":
        return indices, indices
    num_frames = indices.shape[1]
    last = (lengths - 1)[:, None]
    reach = np.maximum(1, lengths // (2 * num_frames))[:, None]
    offsets = np.floor(draws[:, _FIXED_DRAWS:_FIXED_DRAWS + num_frames] * (2 * reach + 1)).astype(np.int64) - reach
    jitter = (draws[:, _JITTER_ON] < AUGMENT_P)[:, None]
    positions = np.where(jitter, np.sort(np.clip(indices + offsets, 0, last), axis=1), indices)
    reverse = (draws[:, _REVERSE_ON] < AUGMENT_P)[:, None]
    return np.where(reverse, last - positions, positions), positions


def spatial_augment(x: np.ndarray, draws: np.ndarray, augment: str) -> np.ndarray:
    """Augment x (B, 2, T, V) in place and return it; zeroing steps come last so zeros stay zero.

    released: each with probability 0.2, zero one coordinate axis (x or y); zero a block of 4-16 consecutive frames.
    full: before those, each with probability 0.2, a random affine map of the coordinates (rotation, per-axis scale,
    shear; no translation, so it commutes with bones); after them, with probability 0.2, each joint hidden
    over the whole clip with probability 0.1.
    """
    if augment == "none":
        return x
    batch, _, num_frames, num_joints = x.shape
    if augment == "full":
        affine = draws[:, _AFFINE_ON] < AUGMENT_P
        if affine.any():
            m = _affine_matrices(draws[affine])[:, :, :, None, None]  # (b, 2, 2, 1, 1)
            chosen = x[affine]
            # written out rather than einsum/matmul, whose summation order may depend on the batch size
            x[affine] = np.stack([m[:, 0, 0] * chosen[:, 0] + m[:, 0, 1] * chosen[:, 1],
                                  m[:, 1, 0] * chosen[:, 0] + m[:, 1, 1] * chosen[:, 1]], axis=1)
    keep = np.ones(x.shape, dtype=bool)
    axis_off = draws[:, _AXIS_ON] < AUGMENT_P
    axis = np.minimum((draws[:, _AXIS] * 2).astype(np.int64), 1)
    keep[axis_off, axis[axis_off]] = False
    block_len = np.minimum(_BLOCK_MIN + (draws[:, _BLOCK_LEN] * (_BLOCK_MAX - _BLOCK_MIN + 1)).astype(np.int64),
                           num_frames)
    block_start = (draws[:, _BLOCK_START] * (num_frames - block_len + 1)).astype(np.int64)
    frame = np.arange(num_frames)
    in_block = (frame >= block_start[:, None]) & (frame < (block_start + block_len)[:, None])
    keep &= ~(in_block & (draws[:, _BLOCK_ON] < AUGMENT_P)[:, None])[:, None, :, None]
    if augment == "full":
        hidden = draws[:, _FIXED_DRAWS + num_frames:_FIXED_DRAWS + num_frames + num_joints] < _JOINT_DROP
        keep &= ~(hidden & (draws[:, _MASK_ON] < AUGMENT_P)[:, None])[:, None, None, :]
    x[~keep] = 0
    return x


def _affine_matrices(draws: np.ndarray) -> np.ndarray:
    """rotation @ shear @ scale, (b, 2, 2), from the items' draws."""
    angle = (2 * draws[:, _ROTATION] - 1) * _MAX_ROTATION
    scale_x = 1 + (2 * draws[:, _SCALE_X] - 1) * _MAX_SCALE
    scale_y = 1 + (2 * draws[:, _SCALE_Y] - 1) * _MAX_SCALE
    shear = (2 * draws[:, _SHEAR] - 1) * _MAX_SHEAR
    cos, sin = np.cos(angle), np.sin(angle)
    # [[cos, -sin], [sin, cos]] @ [[1, shear], [0, 1]] @ diag(scale_x, scale_y)
    matrix = np.stack([
        np.stack([cos * scale_x, (cos * shear - sin) * scale_y], axis=-1),
        np.stack([sin * scale_x, (sin * shear + cos) * scale_y], axis=-1),
    ], axis=-2)
    return matrix.astype(np.float32)
