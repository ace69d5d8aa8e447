"""Experiment names stay inside --storage: every way a name reaches the folder is checked before anything is
written (issue 16, item 2)."""
from __future__ import annotations

from pathlib import Path

import pytest

from ablations import run as ablations_run
from ablations.storage import StorageError, check_experiment_name, locate

BAD_NAMES = ["../x", "../../escape", "a/b", "/abs/path", "..", ".", "", ".hidden", "a..b", "a\\b", "a\0b",
             "C:x", "a b", "~x", "s3://bucket/x", "a/../b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_name_that_could_leave_storage_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a valid experiment name"):
        locate(str(tmp_path / "runs"), name)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["msm_mtm", "run-2.v1", "A1", "_x", "x.y_z-1"])
def test_plain_names_are_kept(name: str, tmp_path: Path) -> None:
    check_experiment_name(name)
    assert locate(str(tmp_path), name).path == str(tmp_path.resolve() / name)


@pytest.mark.parametrize("name", ["../x", "a/b", "/abs/x", "..", ".", "", "a\\b"])
def test_the_cli_refuses_a_bad_name_in_one_line(name: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    storage = tmp_path / "a" / "b"
    code = ablations_run.main(["msm_mtm", "--storage", str(storage), "--name", name])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "--name" in err and "not a valid experiment name" in err
    assert not any(tmp_path.rglob("*")), "nothing may be written anywhere"

