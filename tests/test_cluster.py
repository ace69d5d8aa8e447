"""The cluster definitions (cluster.yaml, deploy/) pass the checks Ray applies to them, keep token authentication on
and hold no secrets; a real two-node Ray cluster with token authentication runs an experiment through
`python -m ablations.run --address`, one trial on each node; and on a Ray instance with GPUs, paper trials get a GPU
share and quick trials none."""
from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from mmn.folders import RESULT

ROOT = Path(__file__).resolve().parents[1]
AWS_CONFIG = ROOT / "cluster.yaml"
LOCAL_CONFIG = ROOT / "deploy" / "cluster.local.yaml"
RAYJOB = ROOT / "deploy" / "rayjob.yaml"
ALL_YAML = [AWS_CONFIG, LOCAL_CONFIG, RAYJOB]
# What must never be in a committed cluster file: cloud keys, passwords, private keys, Ray's token auth switched off.
FORBIDDEN = ["aws_secret_access_key", "aws_access_key_id", "aws_session_token", "password", "private key-----",
             "ray_auth_mode=disabled", "--disable-auth", "mode: disabled", "value: disabled"]
AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _ray_start_invocations(commands: list[str]) -> list[list[str]]:
    """The argument lists of every `ray start` in a list of shell commands."""
    found = []
    for command in commands:
        for part in command.split(";"):
            words = shlex.split(part.replace("$RAY_HEAD_IP", "10.0.0.1"))
            if len(words) >= 2 and os.path.basename(words[0]) == "ray" and words[1] == "start":
                found.append(words[2:])
    return found


def _check_ray_start(args: list[str]) -> None:
    """Parse with Ray's own CLI (click): an unknown or misspelt option fails here instead of on the cluster."""
    from ray.scripts.scripts import start

    with start.make_context("ray start", list(args)) as context:
        assert context.params is not None


def _assert_token_auth(config: dict[str, Any]) -> None:
    """Token authentication on: every `ray start` runs with RAY_AUTH_MODE=token and each node gets the token file."""
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        commands = config[key]
        starts = [c for c in commands if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key
        for args in _ray_start_invocations(commands):
            _check_ray_start(args)
    assert any(remote.endswith(".ray/auth_token") for remote in config["file_mounts"]), \
        "the Ray token file must be mounted on every node"


# --- cluster.yaml (AWS) -------------------------------------------------------------------------------------------

def test_aws_cluster_passes_ray_schema_validation():
    """What `ray up` does before it contacts AWS: merge Ray's AWS defaults, then validate against ray-schema.json.
    (The AWS bootstrap after that needs credentials, so it is not run here.)"""
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load(AWS_CONFIG)
    validate_config(prepare_config(raw))  # raises jsonschema.ValidationError / ValueError on a bad config
    assert raw["provider"]["type"] == "aws"


def test_aws_cluster_has_a_cpu_head_and_autoscaling_spot_gpu_workers():
    config = _load(AWS_CONFIG)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and "IamInstanceProfile" in head["node_config"]
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert len(workers) == 1
    (worker,) = workers
    assert worker["resources"]["GPU"] >= 1 and worker["resources"]["CPU"] >= 1
    assert worker["min_workers"] == 0 < worker["max_workers"] <= config["max_workers"]
    assert worker["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert worker["node_config"]["InstanceType"].startswith(("g", "p"))
    assert "IamInstanceProfile" in worker["node_config"], "workers reach S3 through an instance profile"
    setup = " ".join(config["setup_commands"])
    assert "torch" in setup and "mmn-ablate" in setup and "aws s3 sync" in setup and "/data/ma52" in setup
    assert "RAY_AUTH_MODE=token" in " ".join(config["docker"]["run_options"])
    _assert_token_auth(config)


# --- deploy/cluster.local.yaml ------------------------------------------------------------------------------------

def test_local_cluster_passes_ray_up_bootstrap(tmp_path, monkeypatch):
    """The local provider's whole `ray up` bootstrap runs offline: defaults, `prepare_local`, schema validation."""
    from ray.autoscaler._private.commands import _bootstrap_config

    monkeypatch.setenv("TMPDIR", str(tmp_path))  # Ray's config cache file
    raw = _load(LOCAL_CONFIG)
    config = _bootstrap_config(raw, no_config_cache=True)
    (node_type,) = config["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == len(raw["provider"]["worker_ips"])
    assert config["provider"]["type"] == "local" and config["auth"]["ssh_user"]
    _assert_token_auth(raw)


# --- deploy/rayjob.yaml -------------------------------------------------------------------------------------------

def _containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    containers = group["template"]["spec"]["containers"]
    assert containers and all(c.get("name") and c.get("image") for c in containers)
    return containers


def test_rayjob_has_the_structure_kuberay_expects():
    documents = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d]
    by_kind = {d["kind"]: d for d in documents}
    job = by_kind["RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    spec = job["spec"]
    assert set(spec) <= {"entrypoint", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "rayClusterSpec",
                         "runtimeEnvYAML", "activeDeadlineSeconds", "submissionMode", "submitterPodTemplate"}
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]
    _containers(head)
    groups = cluster["workerGroupSpecs"]
    assert groups and all(g["groupName"] and g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] for g in groups)
    gpu_limits = [c["resources"]["limits"].get("nvidia.com/gpu", 0) for g in groups for c in _containers(g)]
    assert any(int(n) >= 1 for n in gpu_limits), "a worker group must ask for nvidia.com/gpu"
    for params in [head["rayStartParams"], *(g["rayStartParams"] for g in groups)]:
        _check_ray_start([f"--{key}={value}" for key, value in params.items()])

    # Secrets only by reference: a token or cloud key in a pod's environment must come from a Secret (valueFrom).
    for group in [head, *groups]:
        for container in group["template"]["spec"]["containers"]:
            for variable in container.get("env", []):
                if variable["name"].startswith(("RAY_AUTH_TOKEN", "AWS_")):
                    assert "valueFrom" in variable, variable["name"]

    # The data volume is a claim defined alongside, mounted by every pod; the service account too.
    claims = {d["metadata"]["name"] for d in documents if d["kind"] == "PersistentVolumeClaim"}
    accounts = {d["metadata"]["name"] for d in documents if d["kind"] == "ServiceAccount"}
    for group in [head, *groups]:
        pod = group["template"]["spec"]
        assert pod["serviceAccountName"] in accounts
        volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert set(volumes.values()) <= claims
        assert all(m["name"] in volumes for c in pod["containers"] for m in c["volumeMounts"])

    # The entrypoint is a valid command line of our own CLI, naming a shipped experiment.
    from ablations.run import build_parser
    from ablations.spec import load_spec

    words = shlex.split(spec["entrypoint"])
    assert words[:3] == ["python", "-m", "ablations.run"]
    args = build_parser().parse_args(words[3:])
    assert args.address == "auto" and args.storage.startswith("s3://") and args.gpus_per_trial == 0.25
    assert args.data_root.startswith("/data/") and args.budget == "paper"
    load_spec(args.experiment)


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.name)
def test_no_secrets_and_auth_never_disabled(path):
    text = path.read_text()
    for needle in FORBIDDEN:
        assert needle not in text.lower(), f"{path.name} contains {needle!r}"
    assert "AKIA" not in text and not AWS_KEY_ID.search(text), f"{path.name} contains an AWS access key id"
    assert not re.search(r"RAY_AUTH_TOKEN\s*[:=]\s*\S", text), f"{path.name} sets a Ray token inline"


# --- a real two-node cluster --------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else shutil.which("ray") or "ray"


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


class _TwoNodeCluster:
    """`ray start --block` head and worker, each with 1 CPU, its own temp dir and ports, and token authentication
    with a token file of its own (not ~/.ray/auth_token). Every process it starts carries a marker in its
    environment, so teardown ends exactly those (never `ray stop`, which would end every Ray on the machine)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.marker = f"mmn-test-cluster-{secrets.token_hex(6)}"
        token = root / "token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN") and not k.startswith("RAY_JOB")}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0",
                        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # SIGTERM ends a node at once, no 30 s drain
                        MMN_TEST_CLUSTER=self.marker)
        self.port = _free_port()
        self.address = ""
        self.nodes: list[subprocess.Popen] = []

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.root / f"{name}.log", "w")
        self.nodes.append(subprocess.Popen(
            [_ray_cli(), "start", "--block", "--num-cpus=1", "--num-gpus=0", f"--temp-dir={self.root / name}",
             f"--dashboard-agent-listen-port={_free_port()}", "--disable-usage-stats", *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        _wait_for(lambda: "Ray runtime started" in (self.root / f"{name}.log").read_text()
                  or self.nodes[-1].poll() is not None, 90, f"ray start of the {name}")
        assert self.nodes[-1].poll() is None, (self.root / f"{name}.log").read_text()[-3000:]

    def start(self) -> None:
        head = ["--head", f"--port={self.port}", f"--dashboard-port={_free_port()}", "--include-dashboard=false"]
        from ray._private.utils import get_ray_client_dependency_error

        if get_ray_client_dependency_error() is None:  # with ray[client] the head serves it, by default on 10001
            head.append(f"--ray-client-server-port={_free_port()}")
        self._start("h", head)
        self.address = (self.root / "h" / "ray_current_cluster").read_text().strip()
        self._start("w", [f"--address={self.address}"])
        _wait_for(lambda: self.alive_nodes() == 2, 60, "two alive nodes")

    def alive_nodes(self) -> int:
        probe = ("import ray._raylet as r, sys; c = r.GcsClient(address=sys.argv[1]); "
                 "print(sum(1 for n in c.get_all_node_info(timeout=10).values() if n.state == 0))")
        out = subprocess.run([sys.executable, "-c", probe, self.address], env=self.env, capture_output=True,
                             text=True, timeout=60)
        return int(out.stdout.strip() or 0) if out.returncode == 0 else -1

    def stop(self) -> None:
        for node in reversed(self.nodes):  # worker first; SIGTERM lets `ray start --block` end its processes
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGTERM)
        for node in self.nodes:
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
        for pid in self._marked_pids():  # anything left (a worker process in another group)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _marked_pids(self) -> list[int]:
        needle = f"MMN_TEST_CLUSTER={self.marker}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if needle in (entry / "environ").read_bytes().split(b"\0"):
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc to clean up the cluster's processes")
@pytest.mark.ray
def test_two_node_cluster_runs_an_experiment_through_address(tmp_path):
    """A driver started with --address joins a two-node cluster with token authentication; its two trials (1 CPU
    each, 1 CPU per node) run at once, one on each node, and both results arrive in the storage folder."""
    root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's Unix socket paths must fit 107 bytes
    spec = root / "two_nodes.yaml"
    spec.write_text(textwrap.dedent("""\
        name: two_nodes
        description: MTM on and off, one trial per node.
        factors:
          model.mtm: {values: [true, false]}
        seeds: 1
        metric: val_top1
        resources: {cpus_per_trial: 1, gpus_per_trial: 0}
        """))
    cluster = _TwoNodeCluster(root)
    try:
        cluster.start()
        # Without the token the cluster refuses a client: authentication is really on.
        refused = subprocess.run(
            [sys.executable, "-c", "import ray._raylet as r, sys; "
             "r.GcsClient(address=sys.argv[1]).get_all_node_info(timeout=5)", cluster.address],
            env={**cluster.env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}, capture_output=True, text=True,
            timeout=60)
        assert refused.returncode != 0 and "token" in refused.stderr, "a client with a wrong token was let in"

        # The driver has the token through RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH in its environment, as a user's
        # shell would. --max-concurrent lets Tune ask for both trials at once (with a searcher and no limit it keeps
        # one trial pending at a time, so the second could start late and reuse the first one's worker).
        storage = tmp_path / "runs"
        driver = subprocess.run(
            [sys.executable, "-m", "ablations.run", str(spec), "--address", cluster.address,
             "--storage", str(storage), "--epochs", "1", "--seeds", "1", "--set", "data.synthetic_clips_per_class=4",
             "--set", "model.num_frames=16", "--set", "train.batch_size=16", "--max-concurrent", "2"],
            cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=240)
        output = driver.stdout + driver.stderr
        assert driver.returncode == 0, output[-4000:]
        assert "Ray: 2 CPUs" in output, output[-4000:]
        results = [json.loads(p.read_text()) for p in (storage / "two_nodes").rglob(RESULT)]
        records = [r for r in results if "config_hash" in r]
        assert len(records) == 2 and all(r["status"] == "finished" for r in records), records
        assert {r["variant_key"] for r in records} == {"mtm=true", "mtm=false"}
        assert len({r["node_id"] for r in records}) == 2, "both trials ran on the same node"
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- GPU shares per budget -----------------------------------------------------------------------------------------

# A Ray instance that declares two GPUs, started in a process of its own (the test session's Ray has none, and a
# process holds one Ray), runs the same tiny experiment under paper, then quick.
_GPU_DRIVER = """\
import sys, tempfile, ray
from ablations import run
ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
         _temp_dir=tempfile.mkdtemp(prefix="rt", dir="/tmp"))
run._report = lambda outcome: None  # no plots: this is about resources
sys.exit(max(run.main([*sys.argv[1:], "--budget", budget, "--name", budget]) for budget in ("paper", "quick")))
"""
_SMALLEST = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "data.synthetic_clips_per_class": 1,
             "model.num_frames": 8, "train.batch_size": 8}


def _trial_records(folder: Path) -> list[dict[str, Any]]:
    records = [json.loads(p.read_text()) for p in folder.rglob(RESULT)]
    return [r for r in records if "config_hash" in r]


@pytest.mark.ray
@pytest.mark.slow
def test_paper_trials_get_a_gpu_share_where_the_cluster_has_gpus_and_quick_trials_none(tmp_path):
    """Two seeds of one variant: under paper, trials that get a GPU, which --pack auto packs; under quick, trials
    that get none, which it leaves alone."""
    spec = tmp_path / "one.yaml"
    spec.write_text("name: one\nfactors:\n  model.mtm: [true]\nseeds: 2\n")
    sets = [arg for key, value in _SMALLEST.items() for arg in ("--set", f"{key}={value}")]
    driver = subprocess.run([sys.executable, "-c", _GPU_DRIVER, str(spec), "--storage", str(tmp_path / "runs"),
                             "--epochs", "1", *sets], cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = driver.stdout + driver.stderr
    assert driver.returncode == 0, output[-4000:]
    assert "each trial gets 1 CPU, 0.5 GPU, device cuda" in output and "each trial gets 1 CPU, 0 GPU" in output
    papers = _trial_records(tmp_path / "runs" / "paper")
    quicks = _trial_records(tmp_path / "runs" / "quick")
    assert [r["status"] for r in papers + quicks] == ["finished"] * 4
    # --pack auto (the default): the paper trials' two seeds in one pack, as they get a GPU; the quick trials alone
    assert [r["pack"]["members"] for r in papers] == [["mtm=true,seed=1", "mtm=true,seed=2"]] * 2
    assert not any("pack" in r for r in quicks)
    paper, quick = papers[0], quicks[0]
    # Ray gave the paper trial half of one of its GPUs, and the quick trial none.
    assert (paper["resources"]["cpu"], paper["resources"]["gpu"]) == (1, 0.5)
    assert len(paper["resources"]["gpu_ids"]) == 1
    assert quick["resources"] == {"cpu": 1, "gpu": 0, "gpu_ids": []}
    # Where torch sees no CUDA device (a CPU build, a machine without GPUs), train.device=auto trains on the CPU
    # in spite of the share, and the result says so.
    assert paper["hardware"]["device"].startswith("cuda") == torch.cuda.is_available()
    assert quick["hardware"]["device"] == "cpu"
