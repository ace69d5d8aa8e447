"""`SkeletonDataset`: one split of a skeleton dataset, preprocessed once, sampled and augmented per item or per batch.

Randomness: item i in epoch e draws from its own counter-based generator, Philox keyed by the seed with counter
(0, 0, i, e). So an item's frames and augmentation depend only on (seed, epoch, i): not on batch composition, on
which DataLoader worker loads it, or on what was loaded before. `get_batch` and `__getitem__` therefore agree exactly,
and a run resumed at epoch e (after `set_epoch(e)`) sees the very same data. An item drawn twice in one epoch gets the
same sample both times.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mmn.data import preprocess as pp
from mmn.data.formats import SPLITS, read_split
from mmn.layouts import SkeletonLayout, get_layout
from mmn.suggest import closest


class SkeletonDataset(Dataset):
    """Items are (x float32 (2, T, V, 1), index_t float32 (T,), label int); see the module docstring for the RNG.

    Train split: random frame sampling and `augment`; val/test: the release's evenly spaced frames, no augmentation.
    `dataset` names a benchmark (ma52, imigue) or is a layout (`mmn.layouts.load_layout`, data.layout).
    """

    def __init__(self, root: str | Path, dataset: str | SkeletonLayout = "ma52", split: str = "train",
                 modality: str = "joint", num_frames: int = 64, augment: str = "released", bones: str = "released",
                 format: str = "auto", seed: int = 0) -> None:
        _check_choice("split", split, SPLITS)
        _check_choice("modality", modality, pp.MODALITIES, pp.MODALITY_ALIASES)
        _check_choice("augment", augment, pp.AUGMENTS)
        _check_choice("bones", bones, pp.BONE_MODES)
        least = 2 if modality in pp.MOTION_MODALITIES else 1  # one frame has no motion
        if num_frames < least:
            raise ValueError(f"num_frames must be at least {least} for modality {modality}, got {num_frames}")
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {seed}")
        self.layout: SkeletonLayout = get_layout(dataset)
        self.split, self.modality, self.num_frames, self.augment, self.seed = split, modality, num_frames, augment, seed
        self.epoch = 0
        clips = read_split(root, split, self.layout, format)
        self.names: list[str] = [clip.name for clip in clips]
        self.labels: np.ndarray = np.array([clip.label for clip in clips], dtype=np.int64)
        # the model takes one person: the first of each clip (validation has made sure any others are all zero)
        self._packed = pp.prepare([clip.keypoint[0] for clip in clips], self.layout, modality, bones)
        self._train = split == "train"
        self._eval_indices = None if self._train else pp.eval_indices(self._packed.lengths, num_frames)

    def with_seed(self, seed: int) -> SkeletonDataset:
        """The same split drawing from another seed, sharing the preprocessed clips (a pack's members, one per
        seed, hold the split once)."""
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {seed}")
        other = copy.copy(self)
        other.seed, other.epoch = seed, 0
        return other

    @property
    def num_classes(self) -> int:
        return self.layout.num_classes

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose samples the following items are; call before each epoch (resume included)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def item_rng(self, index: int) -> np.random.Generator:
        """The generator of item `index` in the current epoch (a fresh one on each call)."""
        return np.random.Generator(np.random.Philox(key=self.seed, counter=[0, 0, index, self.epoch]))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        x, index_t, labels = self.get_batch([index])
        return x[0], index_t[0], int(labels[0])

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x (B, 2, T, V, 1), index_t (B, T), labels (B,) int64) for dataset `indices`, with array operations over
        the batch; item by item identical to `__getitem__`."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"indices must be in [0, {len(self)}), got {indices.min()}..{indices.max()}")
        lengths = self._packed.lengths[indices]
        if self._train:
            frames, draws = self._draw(indices, lengths)
            sources, positions = pp.temporal_augment(frames, lengths, draws, self.augment)
        else:
            sources = positions = self._eval_indices[indices]
            draws = None
        gathered = self._packed.frames[:, self._packed.starts[indices, None] + sources]  # (2, B, T, V)
        x = np.ascontiguousarray(gathered.transpose(1, 0, 2, 3))  # (B, 2, T, V), a fresh copy we may modify
        if draws is not None:
            x = pp.spatial_augment(x, draws, self.augment)
        if self.modality in pp.MOTION_MODALITIES:  # the release takes motion after augmentation
            x = pp.motion(x)
        x = x[..., None]
        return (torch.from_numpy(x), torch.from_numpy(pp.frame_time(positions, lengths)),
                torch.from_numpy(self.labels[indices]))

    def _draw(self, indices: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        # per item, in this order: frame indices, then the augmentation uniforms
        count = pp.augment_draws(self.num_frames, self.layout.num_joints)
        frames = np.empty((len(indices), self.num_frames), dtype=np.int64)
        draws = np.empty((len(indices), count)) if self.augment != "none" else None
        for row, (index, length) in enumerate(zip(indices.tolist(), lengths.tolist())):
            rng = self.item_rng(index)
            frames[row] = pp.train_indices(rng, length, self.num_frames)
            if draws is not None:
                draws[row] = rng.random(count)
        return frames, draws


def _check_choice(option: str, value: str, choices: Sequence[str], aliases: dict[str, str] | None = None) -> None:
    if value not in choices:
        close = closest(str(value), choices, aliases)
        hint = f" (did you mean {close}?)" if close else ""
        raise ValueError(f"unknown {option} {value!r}: choose one of {', '.join(choices)}{hint}")
