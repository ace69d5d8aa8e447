"""Shared test setup: one real Ray instance per session, tiny synthetic data in a short temporary cache."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from tests.helpers.fixtures import load_reference

os.environ.pop("RAY_ADDRESS", None)
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# A short cache path for the synthetic sets the tests generate (Unix socket paths are short too).
_CACHE = tempfile.mkdtemp(prefix="mmnc", dir="/tmp")
os.environ["MMN_CACHE"] = _CACHE


@pytest.fixture(scope="session")
def reference() -> dict:
    """The released model's state dict, inputs and logits (tests/fixtures/mmn_ma52_reference.pt)."""
    return load_reference()


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_thread():
    """Small forwards: on a shared 2-core machine a second OpenMP thread mostly waits for a busy core."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)
