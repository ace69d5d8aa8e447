"""Search spaces: the shipped files load, sampling follows the file, and every bad file says where and why."""
from __future__ import annotations

import pickle
from pathlib import Path

import optuna
import pytest
import yaml

from search_spaces import SearchSpaceError, list_search_spaces, load_search_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

CONDITIONAL = """\
name: cond
parameters:
  train.optimizer: {type: categorical, choices: [adamw, sgd]}
  train.momentum:  {type: float, low: 0.8, high: 0.99, when: {train.optimizer: sgd}}
  model.depth:     {type: int, low: 1, high: 4}
  model.groups:    {type: categorical, choices: [2, 4], when: {model.depth: [3, 4]}}
  model.mtm:       {type: categorical, choices: [true, false], when: {model.groups: 4}}
"""


def write(tmp_path: Path, text: str, name: str = "bad") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def run_study(space, n_trials: int = 20, seed: int = 0) -> optuna.Study:
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(lambda trial: float(len(space.define_by_run(trial))), n_trials=n_trials)
    return study


def test_shipped_spaces_load_by_name_and_path():
    assert [name for name, _ in list_search_spaces()] == ["regularisation", "tune"]
    tune = load_search_space("tune")
    assert tune.keys == ("train.lr", "train.weight_decay", "model.drop_path", "train.label_smoothing",
                         "model.embed_dim")
    assert load_search_space(Path(__file__).parents[1] / "search_spaces" / "tune.yaml") == tune
    assert set(load_search_space("regularisation").keys) == {
        "model.drop_path", "model.fusion_dropout", "model.head_dropout", "train.label_smoothing",
        "train.weight_decay"}
    assert all(description for _, description in list_search_spaces())


def test_unknown_name_suggests_nearest():
    with pytest.raises(SearchSpaceError, match=r"no search space named 'tun' \(did you mean 'tune'\?\)"):
        load_search_space("tun")


@pytest.mark.parametrize("name", ["tune", "regularisation"])
def test_samples_stay_in_bounds_with_the_right_type(name):
    space = load_search_space(name)
    study = run_study(space)
    for trial in study.trials:
        assert list(trial.params) == list(space.keys)  # file order is the define-by-run order
        for parameter in space.parameters:
            value = trial.params[parameter.key]
            if parameter.type == "categorical":
                assert value in parameter.choices and type(value) is int
                continue
            assert type(value) is float and parameter.low <= value <= parameter.high
            if parameter.step:
                assert value / parameter.step == pytest.approx(round(value / parameter.step))


def test_log_float_is_sampled_on_a_log_scale():
    trial = run_study(load_search_space("tune"), n_trials=1).trials[0]
    lr = trial.distributions["train.lr"]
    assert isinstance(lr, optuna.distributions.FloatDistribution) and lr.log and (lr.low, lr.high) == (1e-4, 3e-3)
    assert not trial.distributions["model.drop_path"].log
    assert trial.distributions["train.label_smoothing"].step == 0.05


def test_conditional_parameters_follow_their_condition(tmp_path):
    space = load_search_space(write(tmp_path, CONDITIONAL, "cond"))
    study = run_study(space, n_trials=30)
    optimizers, depths, mtm = set(), set(), set()
    for trial in study.trials:
        params = trial.params
        optimizers.add(params["train.optimizer"])
        depths.add(params["model.depth"] >= 3)
        mtm.add("model.mtm" in params)
        assert ("train.momentum" in params) == (params["train.optimizer"] == "sgd")
        assert ("model.groups" in params) == (params["model.depth"] in (3, 4))
        assert ("model.mtm" in params) == (params.get("model.groups") == 4)  # chained: needs depth >= 3 too
    assert optimizers == {"adamw", "sgd"} and depths == mtm == {True, False}


def test_define_by_run_returns_the_sampled_values(tmp_path):
    space = load_search_space(write(tmp_path, CONDITIONAL, "cond"))
    trial = optuna.create_study().ask()
    assert space.define_by_run(trial) == trial.params


def test_optuna_space_fn_samples_but_returns_only_constants():
    space = load_search_space("tune")
    trial = optuna.create_study().ask()
    assert space.optuna_space_fn()(trial) is None
    assert set(trial.params) == set(space.keys)
    fn = pickle.loads(pickle.dumps(space.optuna_space_fn({"train.epochs": 2})))  # Ray pickles its searcher
    assert fn(optuna.create_study().ask()) == {"train.epochs": 2}
    with pytest.raises(SearchSpaceError, match="constants train.lr are also sampled"):
        space.optuna_space_fn({"train.lr": 1e-3})


def test_seeded_sampler_is_deterministic():
    space = load_search_space("tune")
    first, second = (run_study(space, n_trials=15, seed=3) for _ in range(2))
    assert [t.params for t in first.trials] == [t.params for t in second.trials]


def test_to_dict_round_trips(tmp_path):
    space = load_search_space(write(tmp_path, CONDITIONAL, "cond"))
    again = load_search_space(write(tmp_path, yaml.safe_dump(space.to_dict(), sort_keys=False), "cond"))
    assert again == space


def test_known_keys_suggest_the_nearest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    known = {"train.lr", "train.weight_decay", "model.drop_path", "train.label_smoothing", "model.embed_dim"}
    assert load_search_space("tune", known_keys=known).keys[0] == "train.lr"
    write(tmp_path, "parameters:\n  train.lr: {type: float, low: 0.1, high: 0.2}\n"
                    "  model.droppath: {type: float, low: 0.0, high: 0.4}\n")
    with pytest.raises(SearchSpaceError) as error:
        load_search_space("bad.yaml", known_keys=known)
    assert str(error.value) == "bad.yaml:3: model.droppath: unknown config key (did you mean 'model.drop_path'?)"


P = "parameters:\n"
BAD_FILES = [
    (P + "  train.x: {type: float, low: 0, high: 1}\n  train.lr: {type: log_float, low: 0.01, high: 0.001}\n",
     "bad.yaml:3: train.lr: low must be < high (got low=0.01, high=0.001)"),
    (P + "  train.lr: {type: float, low: 0.1, hgh: 0.2}\n",
     "bad.yaml:2: train.lr: unknown field 'hgh' (did you mean 'high'?)"),
    (P + "  train.lr:\n    type: float\n    low: 0.1\n    hgh: 0.2\n",
     "bad.yaml:5: train.lr: unknown field 'hgh' (did you mean 'high'?)"),
    (P + "  train.lr: {type: loguniform, low: 0.1, high: 0.2}\n",
     "bad.yaml:2: train.lr: unknown type 'loguniform'; valid types: float, log_float, int, categorical"),
    (P + "  train.lr: {type: [float], low: 0.1, high: 0.2}\n",
     "bad.yaml:2: train.lr: unknown type ['float']; valid types: float, log_float, int, categorical"),
    (P + "  train.lr: {type: float, low: 0.1}\n",
     "bad.yaml:2: train.lr: missing field 'high' (type float needs low, high)"),
    (P + "  train.lr: {low: 0.1, high: 0.2}\n",
     "bad.yaml:2: train.lr: missing field 'type' (one of float, log_float, int, categorical)"),
    (P + "  train.lr: {type: log_float, low: 0.0, high: 0.2}\n",
     "bad.yaml:2: train.lr: low must be > 0 on a log scale (got low=0.0)"),
    (P + "  train.lr: {type: log_float, low: 1e-4, high: 0.2}\n",
     "bad.yaml:2: train.lr: low must be a number, got '1e-4'; YAML reads 1e-4 as text, write it with a dot: "
     "1.0e-4"),
    (P + "  train.lr: {type: log_float, low: 0.1, high: 0.2, step: 0.05}\n",
     "bad.yaml:2: train.lr: field 'step' does not apply to type log_float (its fields: type, low, high, when)"),
    (P + "  model.embed_dim: {type: categorical, choices: []}\n",
     "bad.yaml:2: model.embed_dim: choices is empty; give at least one value"),
    (P + "  model.embed_dim: {type: categorical, choices: [64, 96, 64]}\n",
     "bad.yaml:2: model.embed_dim: duplicate choice 64"),
    (P + "  model.depth: {type: int, low: 1.5, high: 4}\n",
     "bad.yaml:2: model.depth: low must be an integer, got 1.5"),
    (P + "  model.depth: {type: int, low: 1, high: 4, step: 2}\n",
     "bad.yaml:2: model.depth: step=2 does not divide high - low = 3"),
    (P + "  model.depth: {type: int, low: 0, high: 4, log: true}\n",
     "bad.yaml:2: model.depth: low must be > 0 on a log scale (got low=0)"),
    (P + "  train.lr: {type: float, low: 0.1, high: 0.2}\n  train.lr: {type: float, low: 0.1, high: 0.3}\n",
     "bad.yaml:3: duplicate key 'train.lr' in parameters (first on line 2)"),
    (P + "  lr: {type: float, low: 0.1, high: 0.2}\n",
     "bad.yaml:2: lr: a parameter key must be a dotted config key like train.lr or model.drop_path"),
    ("name: bad\nparamters:\n  train.lr: {type: float, low: 0.1, high: 0.2}\n",
     "bad.yaml:2: unknown top-level key 'paramters' (did you mean 'parameters'?); allowed: name, description, "
     "parameters"),
    ("name: tune\n" + P + "  train.lr: {type: float, low: 0.1, high: 0.2}\n",
     "bad.yaml:1: name 'tune' must match the file name 'bad'"),
    ("name: bad\ndescription: x\n", "bad.yaml:1: missing top-level key 'parameters'"),
    (P, "bad.yaml:1: parameters must be a mapping, got nothing"),
    ("", "bad.yaml:1: file is empty; expected keys name, description, parameters"),
    (P + "  train.lr: {type: float, low: 0.1, high: 0.2\n  train.wd: {type: float}\n",
     "bad.yaml:3: YAML syntax error: expected ',' or '}', but got ':'"),
    (P + "  train.lr: {type: float, low: 0.1, high: 0.2}\x07\n",
     "bad.yaml:2: YAML syntax error: special characters are not allowed (character #x0007)"),
    (P + "  train.momentum: {type: float, low: 0.8, high: 0.99, when: {train.optimizer: sgd}}\n"
         "  train.optimizer: {type: categorical, choices: [adamw, sgd]}\n",
     "bad.yaml:2: train.momentum: condition on 'train.optimizer', defined later (line 3); move it above "
     "'train.momentum'"),
    (P + "  train.optimizer: {type: categorical, choices: [adamw, sgd]}\n"
         "  train.momentum: {type: float, low: 0.8, high: 0.99, when: {train.optimiser: sgd}}\n",
     "bad.yaml:3: train.momentum: condition on unknown parameter 'train.optimiser' (did you mean "
     "'train.optimizer'?)"),
    (P + "  train.optimizer: {type: categorical, choices: [adamw, sgd]}\n"
         "  train.momentum: {type: float, low: 0.8, high: 0.99, when: {train.optimizer: [sgd, adam]}}\n",
     "bad.yaml:3: train.momentum: condition train.optimizer='adam' can never hold; train.optimizer takes "
     "'adamw', 'sgd'"),
    (P + "  model.depth: {type: int, low: 1, high: 4}\n"
         "  model.groups: {type: int, low: 1, high: 4, when: {model.depth: 5}}\n",
     "bad.yaml:3: model.groups: condition model.depth=5 can never hold; model.depth takes integers 1..4"),
    (P + "  train.lr: {type: float, low: 0.1, high: 0.2}\n"
         "  model.depth: {type: int, low: 1, high: 4, when: {train.lr: 0.1}}\n",
     "bad.yaml:3: model.depth: conditions may only name categorical or int parameters; 'train.lr' is float"),
]


@pytest.mark.parametrize("text, message", BAD_FILES, ids=[m.split(": ", 1)[1][:40] for _, m in BAD_FILES])
def test_bad_files_name_file_line_and_problem(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, text)
    with pytest.raises(SearchSpaceError) as error:
        load_search_space("bad.yaml")
    assert str(error.value) == message
