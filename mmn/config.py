"""The configuration of one training run: model, data and training sections, named budgets, dotted overrides.

Everything is plain data: a run is fully described by `RunConfig.to_dict()`, and `config_hash` names it, so an
experiment can tell whether a configuration has already been trained.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

from .data.formats import FORMATS
from .data.preprocess import AUGMENTS, BONE_MODES, MODALITIES, MODALITY_ALIASES
from .layouts import LAYOUTS, LayoutError, SkeletonLayout, data_layout, load_layout
from .model import registry
from .model.config import ConfigError, IncompatibleOptions, ModelConfig, is_integer, is_number, need
from .suggest import closest

DATASETS = tuple(LAYOUTS)
OPTIMIZERS = ("adamw", "sgd")
COMPILE_CHOICES = ("off", "on", "auto")  # train.compile (mmn.compiled)
# Upper bounds that catch a typo (epochs=1e9) before a trial runs for years; documented in docs/reliability.md.
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_CLIPS_PER_CLASS = 100_000


def _choice(key: str, value: Any, choices: tuple[str, ...], aliases: Mapping[str, str] | None = None) -> None:
    if value not in choices:
        close = closest(str(value), choices, aliases)
        hint = f" (did you mean {close}?)" if close else ""
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}{hint}")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "ma52"
    root: str | None = None  # folder of real data; None trains on the built-in synthetic set
    format: str = "auto"  # release | pyskl | miga | auto
    modality: str = "joint"
    augment: str = "released"
    bones: str = "released"
    synthetic_clips_per_class: int = 40
    synthetic_seed: int = 0
    synthetic_long_tail: bool = False
    # a layout file (or a shipped layout's name, e.g. coco17) for skeletons other than data.dataset's; None: those
    layout: str | None = None

    def validate(self) -> None:
        for f in fields(self):
            self.check_field(f.name, getattr(self, f.name))
        if self.root is None and self.dataset != "ma52":
            raise IncompatibleOptions("the built-in synthetic set is in the MA-52 layout: with data.dataset=imigue "
                                      "set data.root to a folder of iMiGUE files", ("data.dataset", "data.root"))
        if self.root is None and self.layout is not None:
            raise IncompatibleOptions("the built-in synthetic set is in the MA-52 layout: with data.layout set "
                                      "data.root to a folder of clips in that layout", ("data.layout", "data.root"))

    def skeleton(self) -> SkeletonLayout:
        """The layout the data is read with: data.layout's, with data.dataset's classes where its file names none;
        without data.layout, data.dataset's."""
        return data_layout(self.dataset, self.layout)

    @staticmethod
    def check_field(name: str, value: Any) -> None:
        """One field's value, whatever the other fields are; ConfigError says what is wrong."""
        choices = {"dataset": DATASETS, "format": ("auto", *FORMATS), "modality": MODALITIES, "augment": AUGMENTS,
                   "bones": BONE_MODES}
        if name in choices:
            _choice(f"data.{name}", value, choices[name], MODALITY_ALIASES if name == "modality" else None)
        elif name == "synthetic_clips_per_class":
            need(is_integer(value) and 1 <= value <= MAX_CLIPS_PER_CLASS,
                 f"data.synthetic_clips_per_class must be an integer in [1, {MAX_CLIPS_PER_CLASS}], got {value!r}")
        elif name == "synthetic_seed":
            need(is_integer(value) and 0 <= value <= MAX_SEED,
                 f"data.synthetic_seed must be an integer in [0, {MAX_SEED}], got {value!r}")
        elif name == "layout" and value is not None:
            need(isinstance(value, str) and value != "", f"data.layout must be a layout file or a shipped layout's "
                                                         f"name, got {value!r}")
            try:
                load_layout(value)
            except LayoutError as error:
                raise ConfigError(f"data.layout: {error}") from None


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 120
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    optimizer: str = "adamw"
    momentum: float = 0.9  # sgd only
    warmup_epochs: int = 20
    warmup_lr: float = 1e-7
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = False  # bf16 autocast on CUDA
    threads: int = 0  # CPU threads for torch; 0 keeps torch's default
    eval_batch_size: int = 256
    max_steps: int = 0  # training steps per epoch at most (a rehearsal or smoke test); 0: whole epochs
    compile: str = "off"  # off | on | auto (on CUDA only): torch.compile the solo training forward (mmn.compiled)

    def validate(self) -> None:
        for f in fields(self):
            self.check_field(f.name, getattr(self, f.name))
        if self.warmup_epochs > self.epochs:
            raise IncompatibleOptions(f"train.warmup_epochs must lie in [0, epochs={self.epochs}], got "
                                      f"{self.warmup_epochs}", ("train.warmup_epochs", "train.epochs"))

    @staticmethod
    def check_field(name: str, value: Any) -> None:
        """One field's value, whatever the other fields are; ConfigError says what is wrong."""
        if name == "optimizer":
            _choice("train.optimizer", value, OPTIMIZERS)
        elif name == "compile":
            _choice("train.compile", value, COMPILE_CHOICES)
        elif name == "epochs":
            need(is_integer(value) and 1 <= value <= MAX_EPOCHS,
                 f"train.epochs must be an integer in [1, {MAX_EPOCHS}], got {value!r}")
        elif name in ("batch_size", "eval_batch_size"):
            need(is_integer(value) and 1 <= value <= MAX_BATCH,
                 f"train.{name} must be an integer in [1, {MAX_BATCH}], got {value!r}")
        elif name == "max_steps":
            need(is_integer(value) and value >= 0, f"train.max_steps must be 0 (whole epochs) or a positive "
                                                   f"integer, got {value!r}")
        elif name == "warmup_epochs":
            need(is_integer(value) and value >= 0, f"train.warmup_epochs must lie in [0, epochs], got {value!r}")
        elif name in ("lr", "warmup_lr", "min_lr"):
            # no upper bound: a huge rate is how tests/test_train.py makes a run diverge on purpose
            need(is_number(value) and value > 0, f"train.{name} must be positive, got {value!r}")
        elif name == "weight_decay":
            need(is_number(value) and value >= 0, f"train.weight_decay must be >= 0, got {value!r}")
        elif name == "momentum":
            need(is_number(value) and 0 <= value < 1, f"train.momentum must lie in [0, 1), got {value!r}")
        elif name == "label_smoothing":
            need(is_number(value) and 0 <= value < 1, f"train.label_smoothing must lie in [0, 1), got {value!r}")
        elif name == "seed":
            need(is_integer(value) and 0 <= value <= MAX_SEED, f"train.seed must be an integer in [0, {MAX_SEED}], "
                                                               f"got {value!r}")
        elif name == "threads":
            need(is_integer(value) and value >= 0, f"train.threads must be 0 (torch's default) or a positive "
                                                   f"integer, got {value!r}")
        elif name == "device":
            need(value in ("auto", "cpu", "cuda") or str(value).startswith("cuda:"),
                 f"train.device must be auto, cpu, cuda or cuda:N, got {value!r}")


# Fields that say where and how a run executes, not what it computes: they stay out of the config hash.
_EXECUTION_FIELDS = {"train": ("device", "threads", "eval_batch_size", "compile")}
# Fields added after results were recorded: at these defaults they stay out of the hash, so that every earlier
# result keeps its hash (and is still found finished by a rerun).
_ADDED_FIELDS = {"train": {"max_steps": 0}, "data": {"layout": None}}

BUDGETS: dict[str, dict[str, Any]] = {
    # The release's protocol (docs/spec-mmn.md): the defaults as they are.
    "paper": {},
    # The built-in synthetic set on a laptop CPU: a narrower, shallower model at a higher learning rate. In equal
    # training time, 8 frames on 3 scales for 10 epochs reached 44% val Top-1 where 16 frames on 4 scales for 5
    # epochs reached 36% (measured, same data); 16 epochs use the rest of the time. Without augmentation: in 5
    # epochs the release's random crops cost about 20 points of val Top-1 on the synthetic set.
    "quick": {
        "model.embed_dim": 32, "model.depth": 1, "model.num_frames": 8, "model.num_scales": 3, "model.drop_path": 0.1,
        "data.augment": "none", "data.synthetic_clips_per_class": 40,
        "train.epochs": 16, "train.warmup_epochs": 1, "train.batch_size": 32, "train.lr": 1e-2,
        "train.weight_decay": 0.05, "train.min_lr": 1e-4,
    },
}


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        self.data.validate()
        self.train.validate()
        layout = self.data.skeleton()
        if (self.model.num_joints, self.model.num_classes) != (layout.num_joints, layout.num_classes):
            # joints and classes are properties of the data set (and its layout): the model follows them
            object.__setattr__(self, "model", replace(self.model, num_joints=layout.num_joints,
                                                      num_classes=layout.num_classes))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {"model": asdict(self.model), "data": asdict(self.data), "train": asdict(self.train)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        return apply_overrides(cls(), flatten(values))

    def hash(self) -> str:
        return config_hash(self.to_dict())


_SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def valid_keys() -> list[str]:
    """Every dotted key a run accepts, e.g. model.msm or train.lr."""
    return [f"{section}.{f.name}" for section, cls in _SECTIONS.items() for f in fields(cls)]


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"msm": "off"}} → {"model.msm": "off"}; already dotted keys pass through."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


# What people call a setting elsewhere (other code bases, papers, habit) → its key here.
KEY_ALIASES = {
    "lr": "train.lr", "learning_rate": "train.lr", "wd": "train.weight_decay", "width": "model.embed_dim",
    "dim": "model.embed_dim", "blocks": "model.depth", "layers": "model.depth", "bs": "train.batch_size",
    "batch": "train.batch_size", "frames": "model.num_frames", "scales": "model.num_scales",
    "smoothing": "train.label_smoothing", "warmup": "train.warmup_epochs",
}


def suggest_key(key: str) -> str:
    """' (did you mean train.lr?)' for a mistyped or foreign config key, else the list of valid keys."""
    keys = valid_keys()
    bare = {name.rsplit(".", 1)[1]: name for name in keys}  # a field named without its section, e.g. "msm"
    close = closest(key, keys, {**bare, **KEY_ALIASES})
    return f" (did you mean {close}?)" if close else f"; valid keys: {', '.join(keys)}"


def check_key(key: str) -> tuple[str, str]:
    """(section, field) of a dotted config key; an unknown key is an error naming the nearest valid one."""
    section, _, name = key.partition(".")
    if section not in _SECTIONS or name not in {f.name for f in fields(_SECTIONS[section])}:
        raise ConfigError(f"unknown config key {key!r}{suggest_key(key)}")
    return section, name


def check_value(key: str, value: Any) -> Any:
    """One dotted key's value on its own, returned with its field's type (lr=1 becomes 1.0): the key exists, the
    value has the field's type and lies in its range. Conditions between fields (IncompatibleOptions) are checked
    when a whole configuration is built, since other settings may still meet them."""
    section, name = check_key(key)
    value = _coerce(key, value, type(getattr(_SECTIONS[section](), name)))
    _SECTIONS[section].check_field(name, value)
    return value


def apply_overrides(config: RunConfig, overrides: Mapping[str, Any]) -> RunConfig:
    """A new RunConfig with dotted-key overrides applied; an unknown key is an error naming the nearest valid one."""
    sections = {name: asdict(getattr(config, name)) for name in _SECTIONS}
    for key, value in overrides.items():
        section, name = check_key(key)
        sections[section][name] = _coerce(key, value, type(sections[section][name]))
    return RunConfig(**{name: _SECTIONS[name](**values) for name, values in sections.items()})


_BOOL_WORDS = {"on": True, "yes": True, "true": True, "off": False, "no": False, "false": False}


def _coerce(key: str, value: Any, expected: type) -> Any:
    """Accept an int where a float is expected (lr=1) and on/off for switches; refuse nan, inf and other
    mismatches."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    if expected is bool and isinstance(value, str) and value.lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.lower()]
    if key.startswith("model.") and registry.is_registered(key[6:], value):
        return value  # a user's module by name (mmn.model.registry)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if expected is type(None) or value is None or (isinstance(value, expected)
                                                   and not (isinstance(value, bool) and expected is not bool)):
        return value
    wanted = {bool: "true or false (or on/off)", int: "an integer", float: "a number", str: "a string"}
    slot = key[6:] if key.startswith("model.") else ""
    quote = (' (YAML reads on, off, yes and no as true or false: quote the word, e.g. "off")'
             if expected is str and isinstance(value, bool) else "")
    raise ConfigError(f"{key} expects {wanted.get(expected, expected.__name__)}, got {value!r}{quote}"
                      + registry.hint(slot, value))


def with_budget(config: RunConfig, budget: str) -> RunConfig:
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    return apply_overrides(config, BUDGETS[budget])


def parse_value(text: str) -> Any:
    """A command-line value: true/false, none, int, float, or the string itself (never evaluated as code)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """["model.msm=graph", "train.lr=1e-3"] → {"model.msm": "graph", "train.lr": 0.001}."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r}")
        overrides[key.strip()] = parse_value(value)
    return overrides


def config_hash(config: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON of a config, execution-only fields left out."""
    canonical = {section: dict(values) for section, values in config.items()}
    for section, names in _EXECUTION_FIELDS.items():
        for name in names:
            canonical.get(section, {}).pop(name, None)
    for section, defaults in _ADDED_FIELDS.items():
        for name, default in defaults.items():
            if canonical.get(section, {}).get(name, default) == default:
                canonical.get(section, {}).pop(name, None)
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()[:16]

