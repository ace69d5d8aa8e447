"""`python -m mmn.data check DIR`: a real synthetic set, hand-damaged copies of it, COCO-17 clips in a PYSKL file."""
from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ablations import cli
from mmn.data.__main__ import main
from tests.helpers.skeletons import coco17_pyskl, synthetic_set

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return synthetic_set(tmp_path_factory.mktemp("synth") / "set")


def _copy(synthetic: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(synthetic, tmp_path / "copy"))


def _edit(root: Path, split: str, change) -> None:
    """Apply `change(annotations, labels)` to a split's release pickles, in place."""
    data_path, label_path = root / f"{split}_data.pkl", root / f"{split}_label.pkl"
    data, labels = pickle.loads(data_path.read_bytes()), pickle.loads(label_path.read_bytes())
    change(data["annotations"], labels)
    data_path.write_bytes(pickle.dumps(data))
    label_path.write_bytes(pickle.dumps(labels))


def _check(capsys, *argv: str) -> tuple[int, str]:
    status = main(["check", *map(str, argv)])
    return status, capsys.readouterr().out


def test_a_clean_set_is_reported_per_split_and_accepted(synthetic, capsys):
    status, out = _check(capsys, synthetic)
    assert status == 0, out
    assert f"{synthetic}: layout ma52 (44 joints, 52 classes," in out
    assert f"train: 52 clips (MA-52: 11,250), release format, {synthetic}" in out
    assert "val: 104 clips (MA-52: 5,586)" in out and "test: 104 clips (MA-52: 5,586)" in out
    assert out.count("classes: 52 present") == 3 and "0:1 1:1 2:1" in out and "0:2 1:2 2:2" in out
    assert "  frames: min 30, median " in out
    assert out.count("joints: 44; coordinate channels in the files: 2 (x, y kept)") == 3
    assert "read in " in out and "preprocessed in " in out
    assert "error" not in out and "warning" not in out
    assert out.rstrip().endswith("training would accept this folder")


def test_damaged_clips_are_named_and_refusal_is_exit_status_1(synthetic, tmp_path, capsys):
    root = _copy(synthetic, tmp_path)

    def train(annotations, labels):
        annotations[3]["keypoint"][0, 5, 7, 0] = np.nan
        labels[4]["label"] = 52

    def val(annotations, labels):
        annotations[1]["keypoint"][:] = 0

    _edit(root, "train", train)
    _edit(root, "val", val)
    status, out = _check(capsys, root)
    assert status == 1
    assert f"  error: {root / 'train_data.pkl'}: clip 'train00003' has non-finite coordinates" in out
    assert (f"  error: {root / 'train_data.pkl'}: clip 'train00004' has label 52, expected an integer in [0, 52)"
            in out)
    assert f"  warning: {root / 'val_data.pkl'}: clip 'val00001' is all zeros" in out
    assert out.rstrip().endswith("training would refuse this folder: fix the errors above")
    # as JSON, every problem is listed and the verdict is there
    status, out = _check(capsys, root, "--json")
    report = json.loads(out)
    assert status == 1 and report["accepted"] is False
    train_report = report["splits"][0]
    assert len(train_report["errors"]) == 2 and train_report["expected_clips"] == 11_250
    assert train_report["clips"] == 52 and len(train_report["classes"]) == 52


def test_all_zero_clips_and_clips_in_two_splits_are_warnings_only(synthetic, tmp_path, capsys):
    root = _copy(synthetic, tmp_path)

    def test(annotations, labels):  # test clip 0 becomes a copy of val clip 0, under its name
        annotations[0]["frame_dir"] = labels[0]["file_name"] = "val00000"

    _edit(root, "test", test)
    status, out = _check(capsys, root)
    assert status == 0, out
    assert "  warning: clip 'val00000' is in the val and test splits" in out


def test_a_missing_split_a_repeated_name_and_missing_classes(synthetic, tmp_path, capsys):
    root = _copy(synthetic, tmp_path)
    (root / "val_data.pkl").unlink()

    def train(annotations, labels):
        del annotations[:10]
        annotations[1]["frame_dir"] = annotations[0]["frame_dir"]

    _edit(root, "train", train)
    status, out = _check(capsys, root)
    assert status == 1
    assert "  error: no val data recognised in" in out
    assert "clip 'train00010' appears twice in the train split (clips 0 and 1)" in out
    assert "11 of 52 classes have no train clip" in out  # the renamed clip has its namesake's label
    assert "is in the train and train splits" not in out


def test_coco17_clips_in_a_pyskl_file_are_checked_with_their_layout(synthetic, tmp_path, capsys):
    path = coco17_pyskl(synthetic, tmp_path / "coco17.pkl")
    status, out = _check(capsys, path, "--layout", "coco17")
    assert status == 0, out
    assert f"{path}: layout coco17 (17 joints, 52 classes," in out
    assert out.count("joints: 17; coordinate channels in the files: 3 (x, y kept)") == 3
    assert "train: 52 clips (MA-52: 11,250), pyskl format" in out
    status, out = _check(capsys, path)  # read as MA-52's 44 joints
    assert status == 1
    assert f"error: {path}: clip 'train00000' has 17 joints, expected 44 for the ma52 layout" in out


def test_usage_errors_exit_2_with_one_line(synthetic, tmp_path, capsys):
    assert main(["check", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'nowhere'} does not exist; name the folder (or PYSKL "
                                       ".pkl file) that holds the data\n")
    layout = tmp_path / "mine.yaml"
    layout.write_text("joints: [a, b]\ncentre: c\nbones: [[a, b]]\nbody_parts: {all: [a, b]}\n")
    assert main(["check", str(synthetic), "--layout", str(layout)]) == 2
    assert capsys.readouterr().err == (f"error: {layout}:2: the centre joint is 'c', which is no joint of this "
                                       "layout: give an index in [0, 2) or one of the joint names\n")
    with pytest.raises(SystemExit) as usage:
        main(["check", str(synthetic), "--dataset", "ntu"])
    assert usage.value.code == 2


def test_mmn_ablate_data_check_routes_and_help_needs_no_torch(synthetic, capsys):
    assert cli.main(["data", "check", str(synthetic)]) == 0
    assert "training would accept this folder" in capsys.readouterr().out
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "mmn.data", "check", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--layout FILE" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "mmn.data.check" in imported and "torch" not in imported
