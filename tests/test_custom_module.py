"""Your own module in one of MMN's slots (issue 19, item 2): registered by name, imported only when asked for, and
then validated, profiled, packed and tabled like a built-in variant. The worked example is docs/examples/se_mtm.py."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from mmn.config import ConfigError
from mmn.folders import RESULT
from mmn.model import MMN, ModelConfig
from mmn.model import registry
from mmn.model.registry import RegistryError, import_user_modules, register
from mmn.profile import count_gflops, count_parameters
from mmn.provenance import code_fingerprint

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "se_mtm.py"
SMALL = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "model.num_frames": 8}


@pytest.fixture(autouse=True)
def registry_as_it_was():
    """What a test registers or imports is forgotten after it, so that other tests see the registry they expect."""
    modules = {slot: dict(names) for slot, names in registry._modules.items()}
    imported = dict(registry._imported)
    yield
    registry._modules.clear()
    registry._modules.update(modules)
    registry._imported.clear()
    registry._imported.update(imported)


def test_the_worked_example_trains_from_the_command_line_that_imports_it(tmp_path: Path) -> None:
    tiny = ["data.synthetic_clips_per_class=1", "model.num_frames=8", "model.embed_dim=16", "model.depth=1",
            "model.num_scales=1", "train.epochs=1", "train.warmup_epochs=0", "train.batch_size=8", "train.max_steps=2",
            "train.threads=1"]
    done = subprocess.run([sys.executable, "-m", "mmn.train", "--import", str(EXAMPLE), "model.mtm=se_gate", *tiny,
                           "--out", str(tmp_path / "run"), "--quiet"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "run" / RESULT).read_text())
    assert record["status"] == "finished" and record["config"]["model"]["mtm"] == "se_gate"
    # Without the import nothing registers it, and nothing else imports it: one line, exit 2, before any training.
    refused = subprocess.run([sys.executable, "-m", "mmn.train", "model.mtm=se_gate", *tiny, "--out",
                              str(tmp_path / "no")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: model.mtm expects true or false (or on/off), got 'se_gate', nor a registered module (none is "
        "registered): for your own, import the file that registers it (--import FILE, or the spec's `imports:`)")
    assert not (tmp_path / "no").exists()


def test_a_registered_module_is_validated_profiled_and_packed_like_a_built_in() -> None:
    import_user_modules([str(EXAMPLE)])
    plain, gated = ModelConfig(**{k[6:]: v for k, v in SMALL.items()}), ModelConfig(
        mtm="se_gate", **{k[6:]: v for k, v in SMALL.items()})
    assert count_parameters(gated) != count_parameters(plain) and count_gflops(gated) > 0
    with pytest.raises(ConfigError, match=r"model.mtm must be true or false, got 'se_gat', nor a registered module "
                                          r"\(registered: se_gate\)"):
        ModelConfig(mtm="se_gat")
    # K members in one fused model give each member's own logits (its Linears take `members`).
    torch.manual_seed(0)
    members = [MMN(gated).double() for _ in range(3)]
    fused = MMN([gated] * 3).double()
    for name, tensor in fused.state_dict().items():
        if tensor.ndim:  # BatchNorm's step counts are one number for all
            tensor.copy_(torch.cat([m.state_dict()[name] for m in members]))
    x = torch.randn(3, 4, 2, 8, 44, 1, dtype=torch.float64)
    index_t = torch.linspace(-1, 1, 8, dtype=torch.float64).expand(3, 4, -1)
    fused.eval()
    logits = fused(x, index_t)
    for k, model in enumerate(members):
        torch.testing.assert_close(logits[k], model.eval()(x[k], index_t[k]), rtol=1e-9, atol=1e-9)


def test_registration_mistakes_say_what_to_do() -> None:
    with pytest.raises(RegistryError, match="unknown slot 'fusion_gate': register for one of mtm, msm, pos_enc"):
        register("fusion_gate", "x")
    with pytest.raises(RegistryError, match="'graph' is a built-in msm: register yours under another name"):
        register("msm", "graph")
    with pytest.raises(RegistryError, match="cannot name a module"):
        register("mtm", "my-gate")

    @register("pos_enc", "zero_test_encoding")
    class ZeroEncoding(nn.Module):  # no `members`: it cannot be packed
        def __init__(self, config: ModelConfig) -> None:
            super().__init__()

        def forward(self, x: torch.Tensor, index_t: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(RegistryError, match=r"registered already, by .*ZeroEncoding: register .*Other under another"):
        @register("pos_enc", "zero_test_encoding")
        class Other(nn.Module):
            pass
    config = ModelConfig(pos_enc="zero_test_encoding", **{k[6:]: v for k, v in SMALL.items()})
    assert not registry.packable("pos_enc", "zero_test_encoding") and registry.packable("pos_enc", "stpe")
    assert MMN(config)(torch.randn(2, 2, 8, 44, 1), torch.zeros(2, 8)).shape == (2, 52)
    with pytest.raises(RegistryError, match="takes no `members` argument, so it cannot be in a trial pack"):
        MMN([config, config])
    with pytest.raises(RegistryError, match="cannot import nowhere.py: no such file"):
        import_user_modules(["nowhere.py"])


def test_a_users_module_counts_in_the_code_fingerprint(tmp_path: Path) -> None:
    copy = tmp_path / "se_mtm_copy.py"
    shutil.copy(EXAMPLE, copy)
    import_user_modules([str(copy)])
    alone, with_module = code_fingerprint(), code_fingerprint(user_modules=[str(copy)])
    copy.write_text(copy.read_text() + "\n# edited\n")
    edited = code_fingerprint(user_modules=[str(copy)])
    assert len({alone, with_module, edited}) == 3  # a run that imports it, then edited: its results would be stale
    assert code_fingerprint() == alone  # a run that does not import it is not affected by its being imported here


@pytest.mark.ray
@pytest.mark.slow
def test_a_spec_that_imports_its_module_runs_packed_and_tables_it(ray_session, tmp_path: Path) -> None:
    from ablations.runner import RunOptions, run_experiment
    from ablations.spec import load_spec
    from analysis.report import build_report

    shutil.copy(EXAMPLE, tmp_path / "se_mtm.py")
    (tmp_path / "gates.yaml").write_text(textwrap.dedent("""\
        name: gates
        imports: [se_mtm.py]
        factors:
          model.mtm: {values: [true, se_gate], label: MTM}
        seeds: 2
        metric: val_top1
        """))
    spec = load_spec(tmp_path / "gates.yaml")
    assert spec.imports == (str(tmp_path / "se_mtm.py"),)
    options = RunOptions(storage=str(tmp_path / "runs"), epochs=1, pack=2,
                         overrides={"data.synthetic_clips_per_class": 2, "model.num_frames": 8, "train.batch_size": 16})
    outcome = run_experiment(spec, options)
    assert (len(outcome.finished), len(outcome.failed)) == (4, 0)
    assert {r["pack"]["name"] for r in outcome.finished} == {"pack-mtm=true,seeds=1-2", "pack-mtm=se_gate,seeds=1-2"}
    table = (build_report([tmp_path / "runs" / "gates"]) / "table.md").read_text()
    assert "| se\\_gate |" in table and "Params (M)" in table  # the variant's row, with its own size
