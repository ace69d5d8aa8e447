"""Validation up front: every bad value in a config, a spec or the command line is one line naming the problem and
the fix, exit 2, before Ray starts and before anything is written to the experiment folder."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ablations.run import main as run_main
from ablations.spec import SpecError, load_spec
from mmn.config import ConfigError, RunConfig, apply_overrides, check_value
from mmn.yamlfile import YamlError, load_yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("key, value, message", [
    ("train.weight_decay", float("nan"), "train.weight_decay must be a finite number, got nan"),
    ("train.lr", float("inf"), "train.lr must be a finite number, got inf"),
    ("train.min_lr", float("-inf"), "train.min_lr must be a finite number, got -inf"),
    ("model.mlp_ratio", float("inf"), "model.mlp_ratio must be a finite number, got inf"),
    ("model.drop_path", float("nan"), "model.drop_path must be a finite number, got nan"),
    ("train.lr", -1e-3, "train.lr must be positive, got -0.001"),
    ("train.warmup_lr", 0, "train.warmup_lr must be positive, got 0.0"),
    ("train.weight_decay", -0.1, "train.weight_decay must be >= 0, got -0.1"),
    ("train.momentum", 1.0, "train.momentum must lie in [0, 1), got 1.0"),
    ("train.label_smoothing", 1.0, "train.label_smoothing must lie in [0, 1), got 1.0"),
    ("model.head_dropout", 1.0, "model.head_dropout must lie in [0, 1), got 1.0"),
    ("train.epochs", 1e9, "train.epochs must be an integer in [1, 10000], got 1000000000"),
    ("train.epochs", 0, "train.epochs must be an integer in [1, 10000], got 0"),
    ("train.batch_size", 10**6, "train.batch_size must be an integer in [1, 65536], got 1000000"),
    ("train.eval_batch_size", -4, "train.eval_batch_size must be an integer in [1, 65536], got -4"),
    ("train.seed", -1, "train.seed must be an integer in [0, 4294967295], got -1"),
    ("train.threads", -2, "train.threads must be 0 (torch's default) or a positive integer, got -2"),
    ("data.synthetic_clips_per_class", 0, "data.synthetic_clips_per_class must be an integer in [1, 100000], got 0"),
    ("data.synthetic_seed", -5, "data.synthetic_seed must be an integer in [0, 4294967295], got -5"),
])
def test_each_config_field_has_a_range(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        check_value(key, value)
    assert str(error.value) == message


def test_values_at_the_documented_bounds_are_accepted() -> None:
    assert check_value("train.epochs", 10_000) == 10_000
    assert check_value("train.seed", 0) == 0
    assert check_value("train.weight_decay", 0) == 0.0


@pytest.mark.parametrize("module, assignment, message", [
    ("mmn.train", "train.weight_decay=nan", "train.weight_decay must be a finite number, got nan"),
    ("mmn.train", "train.lr=inf", "train.lr must be a finite number, got inf"),
    ("mmn.profile", "train.epochs=1e9", "train.epochs must be an integer in [1, 10000], got 1000000000"),
])
def test_cli_refuses_bad_values_with_one_line(module: str, assignment: str, message: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, assignment], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("seeds, message", [
    ("100000000", "a seed count must lie in [1, 1000], got 100000000"),
    ("0", "a seed count must lie in [1, 1000], got 0"),
    ("1,1", "seed 1 is listed twice (each seed trains once; remove the repeat)"),
    ("1,-2", "seed -2 is outside [0, 4294967295]"),
    (",".join(str(s) for s in range(1001)), "at most 1000 seeds, got 1001"),
])
def test_bad_seeds_on_the_command_line_exit_2_before_anything_is_written(tmp_path: Path, capsys, seeds: str,
                                                                        message: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_main(["msm_mtm", "--seeds", seeds, "--dry-run", "--storage", str(tmp_path / "runs")])
    assert exit_.value.code == 2
    assert f"argument --seeds: {message}" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_huge_seed_count_answers_at_once() -> None:
    done = subprocess.run([sys.executable, "-m", "ablations.run", "msm_mtm", "--seeds", "100000000", "--dry-run"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "a seed count must lie in [1, 1000]" in done.stderr


def test_a_bad_override_on_the_run_command_line_exits_2_before_ray(tmp_path: Path, capsys) -> None:
    code = run_main(["msm_mtm", "--storage", str(tmp_path / "runs"), "train.weight_decay=nan"])
    assert code == 2
    assert "train.weight_decay must be a finite number, got nan" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


GRID = """\
    name: bad
    factors:
      model.msm: {values: [released, 'off'], label: MSM}
      model.mtm: {values: [true, false], label: MTM}
"""


def _spec_error(tmp_path: Path, extra: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(GRID) + textwrap.dedent(extra))
    with pytest.raises(SpecError) as error:
        load_spec(path)
    return str(error.value).replace(str(path), "bad.yaml")


def test_a_factor_value_listed_twice_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nfactors:\n  model.depth: [1, 2, 1]\n")
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert str(error.value) == (f"{path}:3: factor model.depth lists 1 twice: each value is one variant; remove the "
                                f"repeat")


def test_a_factor_value_repeated_under_another_spelling_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nfactors:\n  model.mtm: [true, 'off', 'on']\n")  # quoted: strings, as on the CLI
    with pytest.raises(SpecError, match=r"bad.yaml:3: factor model.mtm lists 'on' twice \(also as True\): "):
        load_spec(path)


def test_an_exclude_that_removes_every_variant_is_an_error(tmp_path: Path) -> None:
    message = _spec_error(tmp_path, """\
        reference: {model.msm: released, model.mtm: true}
        exclude:
          - {model.msm: 'off'}
          - {model.msm: released, model.mtm: false}
          - {model.mtm: true}
    """)
    assert message == "bad.yaml:6: exclude removes every variant of the grid; nothing would run (narrow the " \
                      "exclude entries)"


def test_one_variant_left_by_exclude_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("name: ok\nfactors:\n  model.mtm: [true, false]\nreference: {model.mtm: true}\n"
                    "exclude:\n  - {model.mtm: false}\n")
    assert load_spec(path).exclude == ({"model.mtm": False},)


def test_a_default_reference_removed_by_exclude_is_named_at_exclude(tmp_path: Path) -> None:
    # without a reference line the reference is every factor's first value
    message = _spec_error(tmp_path, "exclude:\n  - {model.msm: released, model.mtm: true}\n")
    assert message == ("bad.yaml:5: the reference model.msm='released', model.mtm=True is removed by exclude; name "
                       "a kept variant as reference (or narrow the exclude)")


def test_a_reference_removed_by_exclude_is_an_error(tmp_path: Path) -> None:
    message = _spec_error(tmp_path, """\
        reference: {model.msm: 'off', model.mtm: false}
        exclude:
          - {model.msm: 'off', model.mtm: false}
    """)
    assert message == ("bad.yaml:5: the reference model.msm='off', model.mtm=False is removed by exclude; name a "
                       "kept variant as reference (or narrow the exclude)")


def test_a_reference_outside_the_grid_is_an_error(tmp_path: Path) -> None:
    message = _spec_error(tmp_path, "reference: {model.msm: graph, model.mtm: true}\n")
    assert message == "bad.yaml:5: reference: model.msm='graph' is not one of its values ['released', 'off']"


@pytest.mark.parametrize("seeds, message", [
    ("[1, 1]", "seed 1 is listed twice (each seed trains once; remove the repeat)"),
    ("[1, -2]", "seed -2 is outside [0, 4294967295]"),
    ("100000000", "a seed count must lie in [1, 1000], got 100000000"),
    ("0", "a seed count must lie in [1, 1000], got 0"),
    ("[1, true]", "seeds must be a count (e.g. 3) or a list of distinct non-negative integers, got [1, True]"),
])
def test_bad_seeds_in_a_spec(tmp_path: Path, seeds: str, message: str) -> None:
    assert _spec_error(tmp_path, f"seeds: {seeds}\n") == f"bad.yaml:5: {message}"


def test_bad_seeds_of_a_budget(tmp_path: Path) -> None:
    assert _spec_error(tmp_path, "budgets:\n  quick: {seeds: [2, 2]}\n") == \
        "bad.yaml:6: seed 2 is listed twice (each seed trains once; remove the repeat)"


def test_a_bad_spec_exits_2_before_anything_is_written(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(GRID) + "exclude:\n  - {model.msm: released}\n  - {model.msm: 'off'}\n")
    code = run_main([str(path), "--storage", str(tmp_path / "runs")])
    assert code == 2
    assert "exclude removes every variant of the grid" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_duplicate_yaml_keys_are_refused_in_a_spec_a_search_space_and_a_config(tmp_path: Path) -> None:
    spec = tmp_path / "dup.yaml"
    spec.write_text("name: dup\nfactors:\n  model.mtm: [true, false]\nseeds: 2\nseeds: 3\n")
    with pytest.raises(SpecError, match=r"dup.yaml:5: .*seeds"):
        load_spec(spec)
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {type: float, low: 1.0e-4, high: 1.0e-2}\ntrain.lr: {type: float, low: 1, high: 2}\n")
    with pytest.raises(YamlError, match=r"space.yaml:2"):
        load_yaml(space)
    config = tmp_path / "config.yaml"
    config.write_text("train:\n  lr: 0.1\n  lr: 0.2\n")
    done = subprocess.run([sys.executable, "-m", "mmn.train", "--config", str(config), "--print-config"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "config.yaml:3" in done.stderr and "Traceback" not in done.stderr


def test_no_yaml_is_read_around_load_yaml() -> None:
    """Every YAML file we read goes through mmn.yamlfile.load_yaml, which refuses repeated keys."""
    bypass = re.compile(r"yaml\.(safe_load|load|full_load|unsafe_load|load_all|safe_load_all)\(")
    found = [f"{path.relative_to(ROOT)}:{number}"
             for folder in ("mmn", "ablations", "search_spaces", "analysis")
             for path in sorted((ROOT / folder).rglob("*.py")) if path.name != "yamlfile.py"
             for number, line in enumerate(path.read_text().splitlines(), 1) if bypass.search(line)]
    assert found == []


def test_a_yaml_word_read_as_a_boolean_where_a_word_is_expected_says_to_quote_it() -> None:
    with pytest.raises(ConfigError, match=r'train\.compile expects a string, got True \(YAML reads on, off, yes and '
                                          r'no as true or false: quote the word, e\.g\. "off"\)'):
        apply_overrides(RunConfig(), {"train.compile": True})
