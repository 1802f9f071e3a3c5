"""Shared fixtures: a tiny synthetic world and a fast suite file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from benchharness.data.synthetic.world import generate_world

FAST_SUITE = """
name = "fast"
backbone = "alexnet-small"
seeds = 2

[methods]
use = ["random"]

[methods.supervised]
epochs = 1

[tasks]
use = ["voc07-cls"]

[tasks.voc07-cls]
protocols = ["fc8", "all"]
epochs = 1
batch_size = 16
test_crops = 1
"""


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs two workers), each worker gets its share of the cores:
    torch's default of one thread per core in every worker would oversubscribe the machine."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A tiny synthetic world (tens of images per split), generated once per test session."""
    return generate_world(tmp_path_factory.mktemp("world") / "tiny", seed=3, size="tiny")


@pytest.fixture
def fast_suite(tmp_path) -> Path:
    """A suite file with one-epoch schedules, for runner and CLI tests."""
    path = tmp_path / "fast.toml"
    path.write_text(FAST_SUITE)
    return path


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (a job's numbers depend on its thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
