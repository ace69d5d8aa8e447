"""The release's preprocessing: fixture match, normalisation, bones, sampling, motion and augmentation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmn.data import SkeletonDataset
from mmn.data import preprocess as pp
from mmn.layouts import get_layout
from tests.helpers.fixtures import MOTION_VAL, PREPROCESSED_VAL, RAW_VAL


@pytest.mark.parametrize(("modality", "fixture"), [("joint", PREPROCESSED_VAL), ("bone", PREPROCESSED_VAL),
                                                    ("joint_motion", MOTION_VAL), ("bone_motion", MOTION_VAL)])
def test_matches_the_released_loader(modality: str, fixture: Path) -> None:
    expected = np.load(fixture)
    dataset = SkeletonDataset(RAW_VAL, dataset="ma52", split="val", modality=modality)
    x, index_t, labels = dataset.get_batch(np.arange(4))
    np.testing.assert_allclose(x.numpy(), expected[f"{modality}_data"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(index_t.numpy(), expected[f"{modality}_index_t"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(labels.numpy(), expected["label"])
    item_x, item_t, item_label = dataset[2]
    np.testing.assert_allclose(item_x.numpy(), expected[f"{modality}_data"][2], rtol=0, atol=1e-6)
    np.testing.assert_allclose(item_t.numpy(), expected[f"{modality}_index_t"][2], rtol=0, atol=1e-6)
    assert item_label == 2


def test_normalise_centres_on_frame_zero_and_scales_each_axis() -> None:
    rng = np.random.default_rng(0)
    clips = [(rng.normal(size=(n, 5, 2)) * [10, 3]).astype(np.float32) for n in (3, 7)]
    packed = pp.normalise(pp.pack(clips), centre_joint=2)
    for clip, start, length in zip(clips, packed.starts, packed.lengths):
        centred = clip - clip[0, 2]
        low, high = centred.min(axis=(0, 1)), centred.max(axis=(0, 1))
        expected = 2 * (centred - low) / (high - low + 1e-6) - 1
        got = packed.frames[:, start:start + length].transpose(1, 2, 0)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        assert got.min() == -1 and got.max() <= 1


def test_bone_references_released_overwrite_and_parent_first_wins() -> None:
    bones = ((0, 1), (0, 2), (1, 3), (2, 3))
    # released: bone[a] = x[a] - x[b], the last pair for a wins; 3 and 4 never written (reference themselves)
    np.testing.assert_array_equal(pp.bone_references(bones, 5, "released"), [2, 3, 3, 3, 4])
    # parent: bone[child] = x[child] - x[parent], the first pair naming the child wins; root 0 and 4 stay 0
    np.testing.assert_array_equal(pp.bone_references(bones, 5, "parent"), [0, 0, 0, 1, 4])


def test_parent_bones_of_imigue() -> None:
    layout = get_layout("imigue")
    references = pp.bone_references(layout.bones, layout.num_joints, "parent")
    assert references[0] == 1  # nose minus neck
    assert references[1] == 1  # the neck is the root
    assert references[12] == 4 and references[17] == 7  # fingertips minus wrists


def test_eval_indices_are_the_releases_linspace() -> None:
    lengths = np.array([1, 40, 64, 97, 250])
    indices = pp.eval_indices(lengths, 64)
    for row, length in zip(indices, lengths):
        np.testing.assert_array_equal(row, np.floor(np.linspace(0, length - 1, 64)).astype(int))


def test_train_indices_sample_without_replacement_from_copies() -> None:
    rng = np.random.default_rng(0)
    for length in (1, 5, 40, 300):
        indices = pp.train_indices(rng, length, 64)
        assert indices.shape == (64,) and np.all(np.diff(indices) >= 0)
        assert indices.min() >= 0 and indices.max() < length
        assert np.bincount(indices).max() <= 64  # at most T copies of each frame exist
    again = [pp.train_indices(np.random.default_rng(7), 50, 64) for _ in range(2)]
    np.testing.assert_array_equal(*again)


def test_frame_time() -> None:
    t = pp.frame_time(np.array([[0, 5, 9]]), np.array([10]))
    assert t.dtype == np.float32
    np.testing.assert_allclose(t, [[-1.0, 0.0, 0.8]], atol=1e-7)


def test_motion_is_the_next_frame_minus_this_one_and_zero_at_the_end() -> None:
    x = np.random.default_rng(0).normal(size=(2, 2, 6, 4)).astype(np.float32)
    m = pp.motion(x)
    assert m.shape == x.shape and m.dtype == np.float32
    np.testing.assert_array_equal(m[:, :, :5], x[:, :, 1:] - x[:, :, :-1])
    assert not m[:, :, 5].any()


def _draws(batch: int, frames: int, joints: int, **columns: float) -> np.ndarray:
    """Draws with every step off (uniform 0.99), then the named columns set."""
    draws = np.full((batch, pp.augment_draws(frames, joints)), 0.99)
    for name, value in columns.items():
        draws[:, getattr(pp, name)] = value
    return draws


def test_released_augmentation_zeroes_an_axis_and_a_frame_block() -> None:
    x = np.ones((1, 2, 64, 5), np.float32)
    draws = _draws(1, 64, 5, _AXIS_ON=0.0, _AXIS=0.7, _BLOCK_ON=0.1, _BLOCK_LEN=0.5, _BLOCK_START=0.0)
    out = pp.spatial_augment(x.copy(), draws, "released")
    assert not out[0, 1].any()  # axis int(0.7 * 2) = 1 zeroed
    zero_frames = np.flatnonzero(~out[0, 0].any(axis=-1))
    np.testing.assert_array_equal(zero_frames, np.arange(4 + int(0.5 * 13)))  # a block of 4..16 frames from 0


def test_augmentation_off_changes_nothing() -> None:
    x = np.random.default_rng(0).normal(size=(3, 2, 16, 5)).astype(np.float32)
    draws = _draws(3, 16, 5)
    for augment in ("none", "released", "full"):
        np.testing.assert_array_equal(pp.spatial_augment(x.copy(), draws, augment), x)
    indices, lengths = np.tile(np.arange(16), (3, 1)), np.full(3, 20)
    sources, positions = pp.temporal_augment(indices, lengths, draws, "full")
    np.testing.assert_array_equal(sources, indices)
    np.testing.assert_array_equal(positions, indices)


def test_full_augmentation_steps() -> None:
    x = np.random.default_rng(0).normal(size=(1, 2, 16, 5)).astype(np.float32)
    # an affine map with rotation 0, scales 1 + 0.1 and shear 0: x scaled by 1.1, y by 1.1
    draws = _draws(1, 16, 5, _AFFINE_ON=0.0, _ROTATION=0.5, _SCALE_X=1.0, _SCALE_Y=1.0, _SHEAR=0.5)
    np.testing.assert_allclose(pp.spatial_augment(x.copy(), draws, "full"), x * 1.1, rtol=1e-6)
    # joint masking hides whole joints: those whose draw is below 0.1
    draws = _draws(1, 16, 5, _MASK_ON=0.0)
    draws[0, -5:] = [0.05, 0.5, 0.5, 0.01, 0.5]
    hidden = ~pp.spatial_augment(x.copy(), draws, "full")[0].any(axis=(0, 1))
    np.testing.assert_array_equal(hidden, [True, False, False, True, False])
    # reversal: positions stay increasing, frames shown are L - 1 - position
    indices, lengths = np.array([[0, 3, 3, 9]]), np.array([10])
    sources, positions = pp.temporal_augment(indices, lengths, _draws(1, 4, 5, _REVERSE_ON=0.0), "full")
    np.testing.assert_array_equal(positions, indices)
    np.testing.assert_array_equal(sources, [[9, 6, 6, 0]])
    # jitter: at most one frame away for short clips, clipped to the clip and sorted
    draws = _draws(1, 4, 5, _JITTER_ON=0.0)
    draws[0, pp._FIXED_DRAWS:pp._FIXED_DRAWS + 4] = [0.0, 0.99, 0.5, 0.99]
    sources, positions = pp.temporal_augment(indices, lengths, draws, "full")
    np.testing.assert_array_equal(positions, [[0, 3, 4, 9]])
    np.testing.assert_array_equal(sources, positions)
