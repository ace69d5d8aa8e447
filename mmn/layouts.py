"""Skeleton layouts of the two benchmarks, as data (see docs/spec-mmn.md, "Data of the release").

Joint indices are those of the raw files; `body_part_order` is the reordering the release applies last, so the
model sees joints grouped by body part.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SkeletonLayout:
    name: str
    joint_names: tuple[str, ...]
    bones: tuple[tuple[int, int], ...]  # (joint, reference joint) in the release's order
    centre_joint: int  # subtracted (at frame 0) before scaling
    body_part_order: tuple[int, ...]  # raw joint index at each model position
    body_parts: tuple[tuple[str, int], ...]  # (part name, number of joints) along body_part_order
    class_names: tuple[str, ...]

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


_MA52_JOINTS = (
    # 0-25: Halpe-26
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle", "head", "neck", "hip", "left_big_toe", "right_big_toe", "left_small_toe", "right_small_toe",
    "left_heel", "right_heel",
    # 26-31: six face points, named by where the bone list attaches them
    "nose_bridge", "upper_lip", "right_temple", "left_temple", "mouth", "chin",
    # 32-43: a hand root and five fingertips per hand
    "left_hand", "left_thumb", "left_index", "left_middle", "left_ring", "left_little",
    "right_hand", "right_thumb", "right_index", "right_middle", "right_ring", "right_little",
)

_MA52_BONES = (
    (7, 9), (9, 32), (32, 33), (32, 34), (32, 35), (32, 36), (32, 37), (8, 10), (10, 38), (38, 39), (38, 40),
    (38, 41), (38, 42), (38, 43), (13, 15), (15, 24), (24, 20), (24, 22), (14, 16), (16, 25), (25, 21), (25, 23),
    (31, 30), (30, 27), (27, 0), (0, 26), (26, 1), (1, 29), (29, 3), (26, 2), (2, 28), (28, 4), (17, 18), (18, 5),
    (18, 6), (18, 19), (19, 11), (19, 12), (5, 7), (6, 8), (11, 13), (12, 14), (0, 18), (0, 17),
)

_MA52_ORDER = (
    7, 9, 32, 33, 34, 35, 36, 37,
    8, 10, 38, 39, 40, 41, 42, 43,
    13, 15, 24, 22, 20,
    14, 16, 25, 23, 21,
    31, 30, 27, 0, 26, 1, 29, 3, 2, 28, 4,
    17, 18, 5, 6, 19, 11, 12,
)

# MA-52's 52 action classes, in label order (Guo et al., "Benchmarking Micro-action Recognition", TCSVT 2024), as
# listed in the authors' label file (VUT-HFUT/Micro-Action, mar_scripts/manet/mmaction2/data/ma52/label_name.txt).
MA52_CLASS_NAMES: tuple[str, ...] = (
    # 0-4 body
    "shaking body", "sitting straightly", "shrugging", "turning around", "rising up",
    # 5-10 head
    "bowing head", "head up", "tilting head", "turning head", "nodding", "shaking head",
    # 11-23 upper limb
    "scratching arms", "playing objects", "putting hands together", "rubbing hands", "pointing oneself",
    "clenching fist", "stretching arms", "retracting arms", "waving", "spreading hands", "hands touching fingers",
    "other finger movements", "illustrative gestures",
    # 24-31 lower limb
    "shaking legs", "curling legs", "spread legs", "closing legs", "crossing legs", "stretching feet",
    "retracting feet", "tiptoe",
    # 32-37 body-hand
    "scratching or touching neck", "scratching or touching chest", "scratching or touching back",
    "scratching or touching shoulder", "arms akimbo", "crossing arms",
    # 38-47 head-hand
    "playing or tidying hair", "scratching or touching hindbrain", "scratching or touching forehead",
    "scratching or touching face", "rubbing eyes", "touching nose", "touching ears", "covering face",
    "covering mouth", "pushing glasses",
    # 48-51 leg-hand
    "patting legs", "touching legs", "scratching legs", "scratching feet",
)

# Body-part label of each action (SPEC: "Benchmark metrics").
MA52_BODY_NAMES = ("body", "head", "upper limb", "lower limb", "body-hand", "head-hand", "leg-hand")
_MA52_BODY_RANGES = ((0, 5), (5, 11), (11, 24), (24, 32), (32, 38), (38, 48), (48, 52))
MA52_ACTION_TO_BODY: tuple[int, ...] = tuple(
    body for body, (start, stop) in enumerate(_MA52_BODY_RANGES) for _ in range(start, stop)
)

_IMIGUE_JOINTS = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_eye", "left_eye", "right_ear", "left_ear",
    "right_thumb", "right_index", "right_middle", "right_ring", "right_little",
    "left_thumb", "left_index", "left_middle", "left_ring", "left_little",
)

_IMIGUE_BONES = (
    (1, 0), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (0, 8), (8, 10), (0, 9), (9, 11),
    (4, 12), (4, 13), (4, 14), (4, 15), (4, 16), (7, 17), (7, 18), (7, 19), (7, 20), (7, 21),
)

_IMIGUE_ORDER = (4, 12, 13, 14, 15, 16, 7, 17, 18, 19, 20, 21, 0, 8, 9, 10, 11, 1, 2, 5, 3, 6)

# iMiGUE's 32 micro-gesture classes in label order (Liu et al., CVPR 2021): the dataset's class ids 1-32 less one,
# as MiGA's label files number them. Order and names agree across two public listings (a class-id table, and the
# MiGA 2023 track-1 winners' label file); spelling normalised here.
IMIGUE_CLASS_NAMES: tuple[str, ...] = (
    "turtle neck", "bulging face or deep breath", "touching hat", "touching or scratching head",
    "touching or scratching forehead", "covering face", "rubbing eyes", "touching or scratching facial parts",
    "touching ears", "biting nails", "touching jaw", "touching or scratching neck", "playing or adjusting hair",
    "buckling button, pulling shirt collar or adjusting tie", "touching or covering suprasternal notch",
    "scratching back", "folding arms", "dusting off clothes", "putting arms behind body", "moving torso",
    "sitting straightly", "scratching or touching arms", "rubbing or holding hands", "crossing fingers",
    "minaret gesture", "playing or manipulating objects", "holding back arms", "head up", "pressing lips",
    "arms akimbo", "shaking shoulders", "illustrative hand gestures",
)


def _layouts() -> dict[str, SkeletonLayout]:
    return {
        "ma52": SkeletonLayout(
            name="ma52",
            joint_names=_MA52_JOINTS,
            bones=_MA52_BONES,
            centre_joint=19,
            body_part_order=_MA52_ORDER,
            body_parts=(("left arm", 8), ("right arm", 8), ("left leg", 5), ("right leg", 5), ("head", 11),
                        ("trunk", 7)),
            class_names=MA52_CLASS_NAMES,
        ),
        "imigue": SkeletonLayout(
            name="imigue",
            joint_names=_IMIGUE_JOINTS,
            bones=_IMIGUE_BONES,
            centre_joint=1,
            body_part_order=_IMIGUE_ORDER,
            body_parts=(("right hand", 6), ("left hand", 6), ("head", 5), ("trunk", 5)),
            class_names=IMIGUE_CLASS_NAMES,
        ),
    }


LAYOUTS: dict[str, SkeletonLayout] = _layouts()


def get_layout(dataset: str) -> SkeletonLayout:
    """The layout of `dataset` ("ma52" or "imigue"), with an error naming the choices otherwise."""
    try:
        return LAYOUTS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}: choose one of {', '.join(sorted(LAYOUTS))}") from None
