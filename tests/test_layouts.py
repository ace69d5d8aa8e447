"""Skeleton layouts as data files: the shipped ones, the loader's checks (one line naming file and line), and
data.layout in the config."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mmn.config import ConfigError, IncompatibleOptions, RunConfig, apply_overrides, check_value, config_hash
from mmn.layouts import (
    FOLDER,
    LAYOUTS,
    MA52_ACTION_TO_BODY,
    MA52_CLASS_NAMES,
    LayoutError,
    data_layout,
    load_layout,
    shipped,
)
from mmn.data import SkeletonDataset
from mmn.folders import RESULT
from mmn.metrics import evaluate
from tests.helpers.skeletons import coco17_pyskl, synthetic_set

# The release's lists as docs/spec-mmn.md gives them, "Data of the release".
MA52_BONES = ((7, 9), (9, 32), (32, 33), (32, 34), (32, 35), (32, 36), (32, 37), (8, 10), (10, 38), (38, 39),
              (38, 40), (38, 41), (38, 42), (38, 43), (13, 15), (15, 24), (24, 20), (24, 22), (14, 16), (16, 25),
              (25, 21), (25, 23), (31, 30), (30, 27), (27, 0), (0, 26), (26, 1), (1, 29), (29, 3), (26, 2), (2, 28),
              (28, 4), (17, 18), (18, 5), (18, 6), (18, 19), (19, 11), (19, 12), (5, 7), (6, 8), (11, 13), (12, 14),
              (0, 18), (0, 17))
MA52_ORDER = (7, 9, 32, 33, 34, 35, 36, 37, 8, 10, 38, 39, 40, 41, 42, 43, 13, 15, 24, 22, 20, 14, 16, 25, 23, 21,
              31, 30, 27, 0, 26, 1, 29, 3, 2, 28, 4, 17, 18, 5, 6, 19, 11, 12)
IMIGUE_BONES = ((1, 0), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (0, 8), (8, 10), (0, 9), (9, 11), (4, 12),
                (4, 13), (4, 14), (4, 15), (4, 16), (7, 17), (7, 18), (7, 19), (7, 20), (7, 21))
IMIGUE_ORDER = (4, 12, 13, 14, 15, 16, 7, 17, 18, 19, 20, 21, 0, 8, 9, 10, 11, 1, 2, 5, 3, 6)

COCO = (FOLDER / "coco17.yaml").read_text()


def test_shipped_layouts_hold_the_release_lists():
    ma52, imigue = LAYOUTS["ma52"], LAYOUTS["imigue"]
    assert (ma52.num_joints, ma52.num_classes, ma52.centre_joint) == (44, 52, 19)
    assert ma52.bones == MA52_BONES and ma52.body_part_order == MA52_ORDER
    assert ma52.body_parts == (("left arm", 8), ("right arm", 8), ("left leg", 5), ("right leg", 5), ("head", 11),
                               ("trunk", 7))
    assert MA52_CLASS_NAMES[0] == "shaking body" and MA52_CLASS_NAMES[-1] == "scratching feet"
    assert ma52.body_names == ("body", "head", "upper limb", "lower limb", "body-hand", "head-hand", "leg-hand")
    assert [MA52_ACTION_TO_BODY.count(level) for level in range(7)] == [5, 6, 13, 8, 6, 10, 4]
    assert (imigue.num_joints, imigue.num_classes, imigue.centre_joint) == (22, 32, 1)
    assert imigue.bones == IMIGUE_BONES and imigue.body_part_order == IMIGUE_ORDER
    assert imigue.action_to_body == () and imigue.class_names[13] == ("buckling button, pulling shirt collar or "
                                                                        "adjusting tie")
    assert sorted(shipped()) == ["coco17", "imigue", "ma52"]


def test_the_release_ma52_bones_are_one_cycle_and_a_tree_rooted_at_the_chin():
    # what the loader's rule is built around (mmn/layouts/__init__.py): 44 bones on 44 joints close one cycle,
    # and read as (parent, child), first pair per child, they form one tree whose root is joint 31, not the centre
    parent: dict[int, int] = {}
    for a, b in MA52_BONES:
        parent.setdefault(b, a)
    assert [joint for joint in range(44) if joint not in parent] == [31]
    assert [b for _, b in MA52_BONES].count(18) == 2 and {(17, 18), (0, 18), (0, 17)} <= set(MA52_BONES)


def test_coco17_is_a_tree_rooted_at_its_centre_named_by_joint_names():
    coco = load_layout("coco17")
    assert (coco.num_joints, coco.num_classes, coco.centre_joint, len(coco.bones)) == (17, 0, 0, 16)
    assert {b for _, b in coco.bones} == set(range(1, 17))
    assert sorted(coco.body_part_order) == list(range(17))
    # no classes of its own: data.dataset's
    assert data_layout("ma52", "coco17").class_names == MA52_CLASS_NAMES
    assert data_layout("imigue", "coco17").num_classes == 32
    assert data_layout("imigue") is LAYOUTS["imigue"]


def _line(text: str, needle: str) -> int:
    return text[:text.index(needle)].count("\n") + 1


# (what is changed in coco17.yaml, the message, the line it must name: of the text given, in the changed file)
BROKEN = [
    (("bones:", "bone:"), r"unknown key 'bone' \(did you mean bones\?\)", "bone:"),
    (("  - [nose, left_eye]", "  - [nose, left_eyes]"),
     r"bone 0's child is 'left_eyes', which is no joint of this layout \(did you mean left_eye\?\): give an index "
     r"in \[0, 17\) or one of the joint names", "[nose, left_eyes]"),
    (("  - [nose, right_eye]", "  - [0, 17]"), r"bone 1's child is joint 17, out of range: give an index in "
                                               r"\[0, 17\) or a joint name", "[0, 17]"),
    (("  - [nose, right_eye]", "  - [nose, nose]"), r"bone 1 joins joint 'nose' to itself; remove it",
     "[nose, nose]"),
    (("  - [nose, right_eye]", "  - [left_eye, nose]"), r"bone 1 repeats bone 0 \(left_eye-nose\); remove one",
     "[left_eye, nose]"),
    (("  - [left_eye, left_ear]", "  - [left_eye, left_ear]\n  - [left_ear, nose]"),
     r"bone 3 \(left_ear → nose\) closes a loop of parents: nose would be its own ancestor; reverse or remove it",
     "[left_ear, nose]"),
    (("  - [right_knee, right_ankle]\n", ""),
     r"1 joint\(s\) not joined to the centre joint 'nose' by bones \(right_ankle\); add a bone", "- right_ankle"),
    (("  right leg: [right_hip, right_knee, right_ankle]", "  right leg: [right_hip, right_knee, left_ankle]"),
     r"joint 'left_ankle' is in body parts 'left leg' and 'right leg'; keep it in one", "right leg:"),
    (("  head: [nose, left_eye, right_eye, left_ear, right_ear]", "  head: [nose, left_eye, right_eye, left_ear]"),
     r"joint\(s\) right_ear in no body part; add each to one", "body_parts:"),
    (("centre: nose", "centre: hip"), r"the centre joint is 'hip', which is no joint of this layout", "centre:"),
    (("centre: nose", "centre: nose\ncentre: neck"), r"duplicate key 'centre' in the file \(first on line \d+\)",
     "centre: neck"),
    (("  - nose              # 0", "  - nose              # 0\n  - nose"), r"joint name 'nose' is given twice "
                                                                          r"\(joints 0 and 1\)", "  - nose\n"),
    (("body_parts:", "classes: [a, b]\nbody_levels:\n  one: [a]\nbody_parts:"),
     r"class\(es\) b in no body level; add each to one", "body_levels:"),
]


@pytest.mark.parametrize(("change", "message", "where"), BROKEN, ids=[case[0][1][:24] for case in BROKEN])
def test_each_mistake_in_a_layout_file_is_one_line_naming_file_line_and_fix(tmp_path, change, message, where):
    old, new = change
    assert COCO.count(old) == 1
    text = COCO.replace(old, new)
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(LayoutError) as error:
        load_layout(path)
    shown = str(error.value)
    assert "\n" not in shown
    assert shown.startswith(f"{path}:{_line(text, where)}: "), shown
    assert re.search(message, shown), shown


def test_a_layout_that_is_not_a_mapping_or_lacks_a_part_says_what_a_layout_needs(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("- nose\n")
    with pytest.raises(LayoutError, match=r"empty.yaml:1: expected a mapping with joints, centre, bones, "
                                          r"body_parts, got a list"):
        load_layout(path)
    path.write_text(COCO[:COCO.index("# The model's joint order")])
    with pytest.raises(LayoutError, match=r"empty.yaml:\d+: no 'body_parts': a layout names joints, centre, bones, "
                                          r"body_parts \(see docs/custom.md\)"):
        load_layout(path)
    with pytest.raises(LayoutError, match=r"layout 'coco' is neither a file nor a shipped layout \(did you mean "
                                          r"coco17\?\)"):
        load_layout("coco")


def test_a_layout_edited_in_place_is_read_again(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(COCO)
    assert load_layout(path).name == "coco17"
    path.write_text(COCO.replace("name: coco17", "name: mine") + "classes: [a, b, c]\n")
    assert (load_layout(path).name, load_layout(path).num_classes) == ("mine", 3)


def test_data_layout_sets_the_model_joints_and_classes_and_keeps_earlier_hashes(tmp_path):
    config = apply_overrides(RunConfig(), {"data.layout": "coco17", "data.root": str(tmp_path)})
    assert (config.model.num_joints, config.model.num_classes) == (17, 52)
    assert config.model.graph_joints == 17
    imigue = apply_overrides(config, {"data.dataset": "imigue"})
    assert (imigue.model.num_joints, imigue.model.num_classes) == (17, 32)
    path = tmp_path / "mine.yaml"
    path.write_text(COCO + "classes: [sitting, standing, waving]\n")
    mine = apply_overrides(config, {"data.layout": str(path)})
    assert (mine.model.num_joints, mine.model.num_classes) == (17, 3)
    assert mine.hash() != config.hash()
    # results recorded before data.layout existed keep their hash
    default = RunConfig()
    recorded = default.to_dict()
    del recorded["data"]["layout"]
    assert config_hash(recorded) == default.hash()


def test_data_layout_is_checked_alone_then_with_the_data_root(tmp_path):
    with pytest.raises(ConfigError, match=r"data.layout: layout 'coco18' is neither a file nor a shipped layout "
                                          r"\(did you mean coco17\?\)"):
        check_value("data.layout", "coco18")
    broken = tmp_path / "broken.yaml"
    broken.write_text(COCO.replace("centre: nose", "centre: 99"))
    with pytest.raises(ConfigError, match=rf"data.layout: {re.escape(str(broken))}:\d+: the centre joint is joint "
                                          r"99, out of range"):
        check_value("data.layout", str(broken))
    with pytest.raises(ConfigError, match=r"data.layout must be a layout file or a shipped layout's name, got 3"):
        check_value("data.layout", 3)
    assert check_value("data.layout", "coco17") == "coco17"
    with pytest.raises(IncompatibleOptions) as conflict:
        apply_overrides(RunConfig(), {"data.layout": "coco17"})
    assert conflict.value.keys == ("data.layout", "data.root")


def test_a_layout_names_its_source_and_copies_classes_without_changing_the_skeleton():
    coco = load_layout("coco17")
    assert Path(coco.source) == FOLDER / "coco17.yaml"
    assert replace(coco.with_classes_of(LAYOUTS["ma52"]), class_names=(), body_names=(), action_to_body=()) == coco


def test_metrics_follow_the_layout_classes_and_body_levels_only_where_they_are_ma52s(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(COCO + "classes: [a, b, c, d, e, f]\nbody_levels:\n  one: [a, b, c]\n  two: [d, e, f]\n")
    mine = data_layout("ma52", path)
    logits, labels = torch.eye(6)[[0, 1, 2, 3, 4, 4]], [0, 1, 2, 3, 4, 5]
    assert set(evaluate(logits, labels, mine)) == {"top1", "top5", "f1_micro", "f1_macro"}
    assert evaluate(logits, labels, mine)["top1"] == pytest.approx(500 / 6)
    with pytest.raises(ValueError, match=r"ma52 has 52 classes but logits have 6 columns"):
        evaluate(logits, labels, "ma52")
    coco = data_layout("ma52", "coco17")
    assert evaluate(torch.eye(52), list(range(52)), coco) == evaluate(torch.eye(52), list(range(52)), "ma52")
    assert "body_top1" in evaluate(torch.eye(52), list(range(52)), coco)


@pytest.fixture(scope="module")
def coco17_clips(tmp_path_factory) -> Path:
    """The smallest synthetic set's clips as COCO-17 skeletons with scores, in one PYSKL pickle."""
    folder = tmp_path_factory.mktemp("coco17")
    return coco17_pyskl(synthetic_set(folder / "synth"), folder / "coco17.pkl")


def test_coco17_clips_are_preprocessed_in_its_body_part_order(coco17_clips):
    layout = data_layout("ma52", "coco17")
    joints = SkeletonDataset(coco17_clips, dataset=layout, split="val", modality="joint", num_frames=8)
    bones = SkeletonDataset(coco17_clips, dataset=layout, split="val", modality="bone", num_frames=8)
    x, index_t, label = joints[0]
    assert x.shape == (2, 8, 17, 1) and index_t.shape == (8,) and 0 <= label < 52
    assert len(joints) == 104 and joints.num_classes == 52
    # the model sees the left arm first (raw joints 5, 7, 9); the elbow's released bone is elbow minus wrist
    assert layout.body_part_order[:3] == (5, 7, 9)
    raw = joints.get_batch([0])[0][0, :, :, :, 0]
    assert torch.equal(bones.get_batch([0])[0][0, :, :, 1, 0], raw[:, :, 1] - raw[:, :, 2])


def test_the_experiment_driver_checks_the_data_with_data_layout(coco17_clips):
    from ablations.expand import build_config
    from ablations.runner import TrialPlan, _prepare_data
    from mmn.data import DataFormatError

    def prepare(**settings):
        config = build_config("quick", {"data.root": str(coco17_clips), **settings}, "test")
        return _prepare_data(TrialPlan("k", {}, "k", 1, {}, config, config.hash()))

    assert prepare(**{"data.layout": "coco17"}) == (52, 104)
    with pytest.raises(DataFormatError, match=r"clip 'train00000' has 17 joints, expected 44 for the ma52 layout"):
        prepare()


@pytest.mark.slow
def test_python_m_mmn_train_trains_on_coco17_clips_with_data_layout(coco17_clips, tmp_path):
    out = tmp_path / "run"
    # the smallest run the tests make (tests/test_evaluate.py SMALL), for two steps
    settings = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "model.num_frames": 8,
                "train.batch_size": 8, "train.epochs": 1, "train.warmup_epochs": 0, "train.max_steps": 2,
                "train.threads": 1, "data.layout": "coco17", "data.root": coco17_clips}
    done = subprocess.run([sys.executable, "-m", "mmn.train", "budget=quick", "--out", str(out), "--quiet",
                           *(f"{key}={value}" for key, value in settings.items())],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads((out / RESULT).read_text())
    assert record["status"] == "finished" and record["epochs_completed"] == 1
    assert (record["config"]["model"]["num_joints"], record["config"]["model"]["num_classes"]) == (17, 52)
    assert record["config"]["data"]["layout"] == "coco17"
    assert "val_body_top1" in record["final"]  # MA-52's classes, so MA-52's body-level metrics


def test_an_edited_layout_file_changes_the_data_fingerprint(tmp_path) -> None:
    # Results read with a layout that was edited since are stale (mmn.provenance.data_fingerprint).
    from mmn.config import DataConfig
    from mmn.provenance import data_fingerprint

    layout = tmp_path / "mine.yaml"
    layout.write_text((Path(__file__).resolve().parents[1] / "mmn" / "layouts" / "coco17.yaml").read_text())
    plain = DataConfig(root=str(tmp_path))
    first = data_fingerprint(DataConfig(root=str(tmp_path), layout=str(layout)))
    text = layout.read_text()
    layout.write_text(text.replace("centre: nose", "centre: left_shoulder"))  # another centre joint
    second = data_fingerprint(DataConfig(root=str(tmp_path), layout=str(layout)))
    assert len({data_fingerprint(plain), first, second}) == 3
