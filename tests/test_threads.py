"""Threads on a shared machine: as many as the cores other processes leave free (looked at again while
training), waiting briefly, and --threads N or $OMP_NUM_THREADS as given (bench/threads.py measures it)."""
import os

import pytest
import torch

from conftest import one_line_error
from featinv_cli import threads
from featinv_cli.formats.model import load_model


@pytest.fixture
def machine(monkeypatch):
    """A two-core machine whose load the test sets: ``load(others)`` makes the next look find other
    processes using that many cores since the last one (this process one core)."""
    clock = {"busy": 0.0, "own": 0.0, "wall": 0.0}

    def load(others: float, seconds: float = threads.RECHECK_S) -> None:
        clock["busy"] += (others + 1.0) * seconds
        clock["own"] += 1.0 * seconds
        clock["wall"] += seconds
        monkeypatch.setattr(threads.time, "monotonic", lambda: clock["wall"])

    monkeypatch.setattr(threads, "_cores", lambda: [0, 1])
    monkeypatch.setattr(threads, "_look", lambda: (clock["busy"], clock["own"], clock["wall"]))
    monkeypatch.setattr(threads, "_started", (0.0, 0.0, 0.0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    load(0.0, 0.0)
    return load


def test_threads_follow_the_cores_other_processes_leave_free(machine):
    machine(1.0, 1.0)  # a process spinning on one of the two cores while torch was imported
    cpu = threads.Threads()
    assert torch.get_num_threads() == 1
    machine(0.05, 1.0)  # it stopped, but not RECHECK_S ago: no new look yet
    assert cpu.adjust() == 1
    machine(0.05)
    assert cpu.adjust() == 2  # both cores free again
    machine(0.7)  # most of a core taken: one thread too many costs more than one too few
    assert cpu.adjust() == 1
    machine(3.0)  # more work than cores: still one thread
    assert cpu.adjust() == 1


def test_threads_given_are_kept(machine, monkeypatch):
    machine(1.0, 1.0)
    cpu = threads.Threads(2)
    machine(1.0)
    assert cpu.adjust() == 2  # --threads 2 on a busy machine: as asked
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    machine(0.0)
    assert threads.Threads().adjust() == 1


def test_wait_policy_is_set_before_torch_loads_unless_the_user_set_one(monkeypatch, cli, tmp_path):
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    cli("info", tmp_path / "missing.safetensors")  # any command: main sets it before the command runs
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and os.environ["GOMP_SPINCOUNT"] == "10000"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.before_torch()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and "GOMP_SPINCOUNT" not in os.environ


def test_threads_option(cli, image_dir, tmp_path):
    model = tmp_path / "m.safetensors"
    r = cli("train", "hog", "-d", image_dir, "-o", model, "--steps", "1", "--batch", "2", "--crop", "64",
            "--width", "0.125", "--threads", "1", "-q")
    assert r.code == 0, r.err
    assert load_model(model).train["threads"] == 1
    r = cli("extract", "hog", image_dir, "-o", tmp_path / "f.safetensors", "--threads", "0")
    assert r.code == 2 and "--threads 0: give 1 or more" in one_line_error(r)
