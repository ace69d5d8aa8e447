"""What trials leave behind: nothing per trial in Ray's session temp folder; trial workers with bounded malloc arenas."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from ablations.runner import RunOptions, run_experiment, worker_runtime_env
from ablations.spec import load_spec

TINY_SET = {"data.synthetic_clips_per_class": 4, "model.num_frames": 16, "train.batch_size": 16}


def _files(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()


@pytest.mark.ray
@pytest.mark.slow
def test_an_experiment_leaves_no_trial_files_in_rays_temp_folder(ray_session, tmp_path):
    spec = tmp_path / "temp_clean.yaml"
    spec.write_text(textwrap.dedent("""\
        name: temp_clean
        factors:
          model.mtm: {values: [true, false]}
        seeds: 1
        metric: val_top1
        """))
    artifacts = Path(ray_session._private.worker._global_node.get_session_dir_path()) / "artifacts"
    before = _files(artifacts)
    outcome = run_experiment(load_spec(spec), RunOptions(storage=str(tmp_path / "runs"), epochs=1,
                                                         overrides=dict(TINY_SET)))
    assert len(outcome.finished) == 2
    left = _files(artifacts) - before
    assert not left, f"left in Ray's session temp folder: {sorted(map(str, left))[:5]}"
    assert not [path for path in artifacts.rglob("*") if "temp_clean" in path.name]
    # The checkpoints themselves are kept where they belong: in the experiment folder.
    assert len(list((tmp_path / "runs" / "temp_clean").rglob("checkpoint_*"))) == 2


def test_trial_workers_get_bounded_malloc_arenas_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert worker_runtime_env() == {"env_vars": {"MALLOC_ARENA_MAX": "2"}}
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert worker_runtime_env() == {"env_vars": {"MALLOC_ARENA_MAX": "4"}}


@pytest.mark.ray
def test_a_ray_worker_started_with_the_runtime_env_sees_the_arena_cap(ray_session, monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    probe = ray_session.remote(lambda: os.environ.get("MALLOC_ARENA_MAX"))
    assert ray_session.get(probe.options(runtime_env=worker_runtime_env()).remote()) == "2"
