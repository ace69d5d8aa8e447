"""SkeletonDataset: items, batches, RNG determinism per (seed, epoch, index), modalities and options."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mmn.config import ConfigError, RunConfig, apply_overrides, check_value
from mmn.data import DataFormatError, SkeletonDataset
from mmn.data import preprocess as pp
from mmn.layouts import get_layout


def write_release(root: Path, split: str, lengths: list[int], joints: int, classes: int) -> None:
    rng = np.random.default_rng(len(lengths))
    names = [f"{split}{i:04d}" for i in range(len(lengths))]
    annotations = [{"frame_dir": name, "keypoint": (rng.normal(size=(1, n, joints, 2)) * 50 + 300).astype(np.float32)}
                   for name, n in zip(names, lengths)]
    (root / f"{split}_data.pkl").write_bytes(pickle.dumps({"split": {split: names}, "annotations": annotations}))
    (root / f"{split}_label.pkl").write_bytes(pickle.dumps(
        [{"file_name": name, "length": n, "label": i % classes} for i, (name, n) in enumerate(zip(names, lengths))]))


@pytest.fixture(scope="module")
def ma52_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ma52")
    lengths = [3, 17, 40, 64, 65, 100, 250, 31, 8, 120]
    for split in ("train", "val"):
        write_release(root, split, lengths, joints=44, classes=52)
    return root


def test_items_and_attributes(ma52_root: Path) -> None:
    dataset = SkeletonDataset(ma52_root, split="train")
    assert len(dataset) == 10 and dataset.num_classes == 52 and dataset.layout.name == "ma52"
    assert dataset.names[:2] == ["train0000", "train0001"]
    np.testing.assert_array_equal(dataset.labels, np.arange(10))
    x, index_t, label = dataset[3]
    assert x.shape == (2, 64, 44, 1) and x.dtype == torch.float32
    assert index_t.shape == (64,) and index_t.dtype == torch.float32
    assert label == 3 and isinstance(label, int)
    assert torch.all(index_t[1:] >= index_t[:-1]) and index_t.min() >= -1 and index_t.max() < 1


@pytest.mark.parametrize("modality", pp.MODALITIES)
@pytest.mark.parametrize("augment", ["none", "released", "full"])
def test_get_batch_equals_items(ma52_root: Path, modality: str, augment: str) -> None:
    dataset = SkeletonDataset(ma52_root, split="train", modality=modality, augment=augment, seed=3)
    dataset.set_epoch(2)
    order = [7, 0, 9, 3, 3]
    x, index_t, labels = dataset.get_batch(order)
    assert x.shape == (5, 2, 64, 44, 1) and index_t.shape == (5, 64) and labels.dtype == torch.int64
    for row, index in enumerate(order):
        item_x, item_t, item_label = dataset[index]
        assert torch.equal(x[row], item_x) and torch.equal(index_t[row], item_t) and labels[row] == item_label


def test_dataloader_agrees_with_get_batch(ma52_root: Path) -> None:
    dataset = SkeletonDataset(ma52_root, split="train", augment="full", seed=1)
    x, index_t, labels = next(iter(DataLoader(dataset, batch_size=4)))
    bx, bt, blabels = dataset.get_batch(range(4))
    assert torch.equal(x, bx) and torch.equal(index_t, bt) and torch.equal(labels, blabels)


def test_randomness_is_a_function_of_seed_epoch_and_index(ma52_root: Path) -> None:
    def batch(seed: int, epoch: int) -> torch.Tensor:
        dataset = SkeletonDataset(ma52_root, split="train", augment="full", seed=seed)
        dataset.set_epoch(epoch)
        return torch.cat([dataset.get_batch(range(10))[0].flatten(), dataset.get_batch(range(10))[1].flatten()])

    assert torch.equal(batch(0, 0), batch(0, 0))  # same seed: same data
    assert not torch.equal(batch(0, 0), batch(1, 0))  # another seed
    assert not torch.equal(batch(0, 0), batch(0, 1))  # another epoch
    resumed = SkeletonDataset(ma52_root, split="train", augment="full", seed=0)
    resumed.set_epoch(5)
    resumed.get_batch(range(10))  # what came before does not matter, only (seed, epoch, index)
    resumed.set_epoch(0)
    assert torch.equal(batch(0, 0), torch.cat([resumed.get_batch(range(10))[0].flatten(),
                                               resumed.get_batch(range(10))[1].flatten()]))


def test_released_augmentation_zeroes_some_items(ma52_root: Path) -> None:
    dataset = SkeletonDataset(ma52_root, split="train", augment="released")
    zeroed = 0
    for epoch in range(10):
        dataset.set_epoch(epoch)
        x = dataset.get_batch(range(10))[0]
        zeroed += int((x == 0).all(dim=(2, 3, 4)).any(dim=1).sum())  # an axis zeroed entirely
    assert 5 < zeroed < 40  # about 0.2 of 100 items


def test_val_is_deterministic_and_unaugmented(ma52_root: Path) -> None:
    dataset = SkeletonDataset(ma52_root, split="val", augment="full")
    first = dataset.get_batch(range(10))
    dataset.set_epoch(4)
    second = dataset.get_batch(range(10))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    expected = pp.frame_time(pp.eval_indices(np.array([250]), 64), np.array([250]))
    np.testing.assert_array_equal(first[1][6].numpy(), expected[0])


@pytest.mark.parametrize(("stream", "frames"), [("joint_motion", "joint"), ("bone_motion", "bone")])
def test_motion_is_the_difference_of_the_augmented_frames(ma52_root: Path, stream: str, frames: str) -> None:
    def batches(modality: str) -> torch.Tensor:
        dataset = SkeletonDataset(ma52_root, split="train", modality=modality, augment="full", seed=5)
        epochs = []
        for epoch in range(4):
            dataset.set_epoch(epoch)
            epochs.append(dataset.get_batch(range(10))[0])
        return torch.stack(epochs)

    motion, x = batches(stream), batches(frames)
    assert motion.shape == x.shape == (4, 10, 2, 64, 44, 1)
    # the same draws zero frame blocks of both streams: motion taken after them jumps in and out of the block
    assert (x == 0).all(dim=(2, 4, 5)).any(), "no frame block was zeroed: the test would not see the order"
    assert torch.equal(motion[:, :, :, :-1], x[:, :, :, 1:] - x[:, :, :, :-1])
    assert not motion[:, :, :, -1].any()


def test_parent_bones(tmp_path: Path) -> None:
    write_release(tmp_path, "val", [20, 30], joints=22, classes=32)
    layout = get_layout("imigue")

    def load(modality: str, bones: str = "released") -> torch.Tensor:
        dataset = SkeletonDataset(tmp_path, dataset="imigue", split="val", modality=modality, bones=bones)
        return dataset.get_batch([0, 1])[0]

    joint, parent_bones, released_bones = load("joint"), load("bone", "parent"), load("bone")
    at = {raw: model for model, raw in enumerate(layout.body_part_order)}  # raw joint -> model position
    for parent, child in ((1, 0), (4, 12), (0, 8), (8, 10)):
        assert torch.equal(parent_bones[..., at[child], :], joint[..., at[child], :] - joint[..., at[parent], :])
    assert not parent_bones[..., at[1], :].any()  # the root (neck) stays 0
    # released: bone[a] = x[a] - x[b], the last pair for a wins; the right ear (10) is never written
    assert torch.equal(released_bones[..., at[1], :], joint[..., at[1], :] - joint[..., at[5], :])
    assert torch.equal(released_bones[..., at[0], :], joint[..., at[0], :] - joint[..., at[9], :])
    assert not released_bones[..., at[10], :].any()


def test_num_frames(ma52_root: Path) -> None:
    x, index_t, _ = SkeletonDataset(ma52_root, split="train", num_frames=16, augment="full").get_batch([0, 6])
    assert x.shape == (2, 2, 16, 44, 1) and index_t.shape == (2, 16)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("split", "dev", r"unknown split 'dev': choose one of train, val, test"),
    ("modality", "rgb", r"unknown modality 'rgb': choose one of joint, bone, joint_motion, bone_motion$"),
    ("modality", "motion", r"unknown modality 'motion': choose one of .* \(did you mean joint_motion\?\)"),
    ("modality", "bm", r"unknown modality 'bm': choose one of .* \(did you mean bone_motion\?\)"),
    ("augment", "heavy", r"unknown augment 'heavy': choose one of none, released, full"),
    ("bones", "tree", r"unknown bones 'tree': choose one of released, parent"),
    ("dataset", "ntu", r"unknown dataset 'ntu': choose one of imigue, ma52"),
    ("seed", -1, r"seed must be an integer in \[0, 2\*\*64\)"),
])
def test_bad_options(ma52_root: Path, option: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SkeletonDataset(ma52_root, **{option: value})


def test_motion_needs_two_frames_and_the_retired_motion_names_joint_motion(ma52_root: Path) -> None:
    assert SkeletonDataset(ma52_root, split="val", num_frames=1).get_batch([0])[0].shape == (1, 2, 1, 44, 1)
    with pytest.raises(ValueError, match=r"^num_frames must be at least 2 for modality bone_motion, got 1$"):
        SkeletonDataset(ma52_root, modality="bone_motion", num_frames=1)
    message = ("data.modality='motion' is not one of joint, bone, joint_motion, bone_motion "
               "(did you mean joint_motion?)")
    with pytest.raises(ConfigError) as error:
        check_value("data.modality", "motion")
    assert str(error.value) == message
    with pytest.raises(ConfigError, match=r"'jm' is not one of .* \(did you mean joint_motion\?\)$"):
        apply_overrides(RunConfig(), {"data.modality": "jm"})
    assert check_value("data.modality", "bone_motion") == "bone_motion"


def test_wrong_dataset_for_the_files(ma52_root: Path) -> None:
    with pytest.raises(DataFormatError, match=r"has 44 joints, expected 22 for the imigue layout"):
        SkeletonDataset(ma52_root, dataset="imigue", split="val")


def test_index_out_of_range(ma52_root: Path) -> None:
    dataset = SkeletonDataset(ma52_root, split="val")
    with pytest.raises(IndexError):
        dataset[10]
    with pytest.raises(IndexError):
        dataset.get_batch([0, -1])
