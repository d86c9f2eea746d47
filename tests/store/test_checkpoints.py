"""Checkpoints: one safetensors file, atomic, verified, never unpickled."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from onthefly.errors import ChecksumError, ConfigError, CorruptFileError, MissingFileError
from onthefly.store.checkpoints.checkpoints import CheckpointData, CheckpointStore, load_checkpoint, save_checkpoint
from onthefly.store.checkpoints.safetensors_file import PARTIAL_SUFFIX
from onthefly.store.checkpoints.tree import flatten, unflatten

pytestmark = pytest.mark.timeout(60)

CHILD = Path(__file__).with_name("checkpoint_child.py")


def _assert_same(a, b, where="state"):
    """Equal values of the same types all the way down (tensors bitwise).

    Dict subclasses (a state dict's OrderedDict) come back as plain dicts in the same order.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        a = dict(a)
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert a.tobytes() == b.tobytes(), where  # bitwise, nan included
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}.{i}")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 8)
        self.norm = torch.nn.BatchNorm1d(8)
        self.fc2 = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


def _step(model, optimizer, scheduler):
    x = torch.randn(5, 6)
    y = torch.randint(0, 3, (5,))
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    scheduler.step()


def _trained(kind: str):
    """A tiny model, optimizer and scheduler after three steps."""
    model = _Net()
    if kind == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=20)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    for _ in range(3):
        _step(model, optimizer, scheduler)
    return model, optimizer, scheduler


def _rng_state():
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_roundtrip_is_bit_exact_and_training_continues_identically(tmp_path, kind):
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model, optimizer, scheduler = _trained(kind)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    saved = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": _rng_state(),
        "sampler": {"epoch": 2, "position": 17, "seed": 1234, "order": [3, 1, 2]},
        "extra": {
            "step": 3,
            "best": float("inf"),
            "worst": float("-inf"),
            "missing": float("nan"),
            "per_class": {0: 0.5, 1: 0.25},
            "shape": (2, 3),
            "ok": True,
            "note": None,
        },
    }
    path = tmp_path / "ck.safetensors"
    size, sha = save_checkpoint(path, **copy.deepcopy(saved))
    assert size == path.stat().st_size

    loaded = load_checkpoint(path, sha256=sha)

    assert isinstance(loaded, CheckpointData)
    for part in saved:
        _assert_same(saved[part], getattr(loaded, part), part)
    assert loaded.holds == ("model", "optimizer", "scheduler", "scaler", "rng", "sampler")
    assert isinstance(loaded.rng["numpy"][1], np.ndarray)
    if kind == "adam":
        assert set(loaded.optimizer["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    else:
        assert set(loaded.optimizer["state"][0]) == {"momentum_buffer"}

    # Continue the original, then a fresh copy restored from the file: bitwise the same.
    _step(model, optimizer, scheduler)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    restored_model, restored_opt, restored_sched = _trained(kind)  # different state, overwritten below
    restored_model.load_state_dict(loaded.model)
    restored_opt.load_state_dict(loaded.optimizer)
    restored_sched.load_state_dict(loaded.scheduler)
    torch.amp.GradScaler("cpu").load_state_dict(loaded.scaler)
    _set_rng(loaded.rng)
    _step(restored_model, restored_opt, restored_sched)
    for key, value in restored_model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert restored_sched.get_last_lr() == scheduler.get_last_lr()


def test_file_is_plain_safetensors_with_namespaced_keys(tmp_path):
    model, optimizer, _ = _trained("adam")
    path = tmp_path / "ck.safetensors"
    save_checkpoint(
        path, model=model.state_dict(), optimizer=optimizer.state_dict(), rng={"torch": torch.get_rng_state()}
    )
    with safe_open(path, framework="pt") as f:
        keys = set(f.keys())
        assert torch.equal(f.get_tensor("model.fc1.weight"), model.fc1.weight.detach())
        assert torch.equal(f.get_tensor("optimizer.state.0.exp_avg"), optimizer.state_dict()["state"][0]["exp_avg"])
        assert f.metadata()["onthefly.format_version"] == "1"
    assert {"model.fc1.weight", "optimizer.state.0.exp_avg", "optimizer.state.0.step", "rng.torch"} <= keys


def test_tied_tensors_are_stored_once_and_load_back_tied(tmp_path):
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)
            self.head = torch.nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight

    model = Tied()
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, model=model.state_dict())
    with safe_open(path, framework="pt") as f:
        assert sorted(f.keys()) == ["model.embed.weight"]

    loaded = load_checkpoint(path)

    assert list(loaded.model) == ["embed.weight", "head.weight"]
    assert loaded.model["head.weight"] is loaded.model["embed.weight"]
    fresh = Tied()
    fresh.load_state_dict(loaded.model)
    assert torch.equal(fresh.head.weight, model.embed.weight)
    assert fresh.head.weight is fresh.embed.weight


def test_views_of_shared_memory_and_non_contiguous_tensors_are_stored_contiguous(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = {"base": base, "transposed": base.t(), "row": base[1], "empty": torch.empty(0, 3)}
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, model=state)

    loaded = load_checkpoint(path).model

    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
        assert loaded[key].is_contiguous()
    loaded["row"].add_(100)
    assert torch.equal(loaded["base"], base)  # separate copies, not aliased


def test_dtypes_numpy_values_and_awkward_keys_round_trip(tmp_path):
    model = {
        f"t_{str(d).removeprefix('torch.')}": torch.ones(2, 3).to(d)
        for d in (
            torch.float64,
            torch.float16,
            torch.bfloat16,
            torch.int8,
            torch.uint8,
            torch.int16,
            torch.int32,
            torch.int64,
            torch.bool,
            torch.uint32,
        )
    }
    model["scalar"] = torch.tensor(3.5)
    extra = {
        "$dollar": 1,
        (1, "a"): "tuple key",
        None: [np.int64(7), np.float32(0.5), np.bool_(True)],
        "arrays": [np.arange(5, dtype=">i4"), np.zeros((2, 0)), np.array([1.5, np.nan])],
        "nested": ((1,), [(), {}], {"x": -0.0}),
        "big": 2**70,
    }
    path = tmp_path / "ck.safetensors"
    _, sha = save_checkpoint(path, model=model, extra=copy.deepcopy(extra))

    loaded = load_checkpoint(path, sha256=sha)

    _assert_same(model, loaded.model)
    assert loaded.extra["arrays"][0].dtype == np.dtype("int32")
    extra["arrays"][0] = extra["arrays"][0].astype("<i4")  # stored little-endian
    _assert_same(extra, loaded.extra)
    assert math.copysign(1.0, loaded.extra["nested"][2]["x"]) == -1.0


def test_values_that_cannot_be_stored_are_refused_with_their_path(tmp_path):
    with pytest.raises(ConfigError, match=r"optimizer\.param_groups\.0\.fn"):
        save_checkpoint(tmp_path / "a.safetensors", model={}, optimizer={"param_groups": [{"fn": print}]})
    with pytest.raises(ConfigError, match="to_dense"):
        save_checkpoint(tmp_path / "b.safetensors", model={"w": torch.eye(2).to_sparse()})
    with pytest.raises(ConfigError, match="complex128"):
        save_checkpoint(tmp_path / "c.safetensors", model={"w": torch.zeros(2, dtype=torch.complex128)})
    with pytest.raises(ConfigError, match="state dict"):
        save_checkpoint(tmp_path / "d.safetensors", model=torch.nn.Linear(2, 2))
    assert list(tmp_path.iterdir()) == []


def test_device_moves_model_and_optimizer_only(tmp_path):
    model, optimizer, _ = _trained("adam")
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, model=model.state_dict(), optimizer=optimizer.state_dict(), rng=_rng_state())

    loaded = load_checkpoint(path, device="meta")  # a device every build has

    assert loaded.model["fc1.weight"].device.type == "meta"
    assert loaded.optimizer["state"][0]["exp_avg"].device.type == "meta"
    assert loaded.rng["torch"].device.type == "cpu"
    assert loaded.optimizer["param_groups"][0]["betas"] == optimizer.state_dict()["param_groups"][0]["betas"]


def test_tree_skeleton_is_plain_json():
    skeleton, tensors = flatten({"opt": {"state": {0: {"m": torch.zeros(2)}}, "groups": [{"betas": (0.9, 0.99)}]}})
    text = json.dumps(skeleton, allow_nan=False)
    assert list(tensors) == ["opt.state.0.m"]
    back = unflatten(json.loads(text), tensors)
    assert back["opt"]["groups"][0]["betas"] == (0.9, 0.99)
    assert back["opt"]["state"][0]["m"] is tensors["opt.state.0.m"]


_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)
_keys = st.one_of(st.text(max_size=4), st.integers(), st.tuples(st.integers(), st.text(max_size=2)))
_trees = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(_keys, inner, max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(tree=_trees)
def test_any_json_like_tree_survives_the_skeleton(tree):
    skeleton, tensors = flatten({"extra": tree})
    back = unflatten(json.loads(json.dumps(skeleton, allow_nan=False)), tensors)["extra"]
    _assert_same(tree, back)


def test_loading_never_unpickles(tmp_path, monkeypatch):
    model, optimizer, scheduler = _trained("adam")
    path = tmp_path / "ck.safetensors"
    _, sha = save_checkpoint(
        path,
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        rng=_rng_state(),
    )

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint load tried to unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(AssertionError):  # the trap is armed
        pickle.loads(pickle.dumps(1))

    loaded = load_checkpoint(path, sha256=sha)

    assert torch.equal(loaded.model["fc1.weight"], model.fc1.weight.detach())


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "ck.safetensors"
    _, sha = save_checkpoint(path, model={"w": torch.arange(1000, dtype=torch.float32)}, sampler={"epoch": 1})
    return path, sha


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "gone.safetensors"
    with pytest.raises(MissingFileError, match="gone.safetensors"):
        load_checkpoint(path)


def test_truncated_file_is_named(saved):
    path, sha = saved
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(CorruptFileError, match=r"ck\.safetensors is truncated"):
        load_checkpoint(path, sha256=sha)
    path.write_bytes(data[:20])
    with pytest.raises(CorruptFileError, match=r"ck\.safetensors"):
        load_checkpoint(path)


def test_flipped_byte_is_a_checksum_error(saved):
    path, sha = saved
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"ck\.safetensors does not match"):
        load_checkpoint(path, sha256=sha)


def test_newer_format_version_asks_for_an_upgrade(saved):
    path, _ = saved
    data = path.read_bytes()
    marker = b'"onthefly.format_version":"1"'
    assert marker in data
    path.write_bytes(data.replace(marker, marker[:-2] + b'9"'))
    with pytest.raises(CorruptFileError, match=r"ck\.safetensors has format version 9.*upgrade"):
        load_checkpoint(path)


def test_plain_safetensors_file_is_not_taken_for_a_checkpoint(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(CorruptFileError, match="not an OnTheFly checkpoint"):
        load_checkpoint(path)


def test_header_length_beyond_the_file_is_corrupt(saved):
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", len(data)) + data[8:])
    with pytest.raises(CorruptFileError, match="cut short"):
        load_checkpoint(path)


# --- the session's checkpoint store ------------------------------------------------


@pytest.fixture
def session(tmp_path):
    from onthefly.store.catalog.catalog import Catalog

    session_dir = tmp_path / "sessions" / "s1"
    session_dir.mkdir(parents=True)
    catalog = Catalog.open(session_dir / "catalog.sqlite")
    catalog.init_session("s1", "checkpoints")
    run = catalog.add_run(name="base")
    yield session_dir, catalog, run.id
    catalog.close()


def test_store_saves_under_the_run_and_lists_the_file_in_the_catalog(session):
    session_dir, catalog, run_id = session
    store = CheckpointStore(session_dir, catalog)
    model, optimizer, _ = _trained("sgd")

    info = store.save(
        run_id=run_id,
        step=3,
        epoch=0,
        reason="epoch",
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        rng=_rng_state(),
        extra={"note": "first"},
    )

    assert info.id.startswith("ck-") and len(info.id) == 15
    assert info.path == f"checkpoints/{run_id}/{info.id}.safetensors"
    assert store.path_of(info) == session_dir / info.path
    assert info.bytes == store.path_of(info).stat().st_size
    assert info.holds == ("model", "optimizer", "rng")
    assert catalog.checkpoint(info.id) == info
    assert catalog.latest_checkpoint(run_id) == info
    loaded = store.load(info.id)
    _assert_same(model.state_dict(), loaded.model)
    assert loaded.extra == {"note": "first"}
    assert list((session_dir / "checkpoints" / run_id).iterdir()) == [store.path_of(info)]


def test_store_load_checks_the_catalog_sha256(session):
    session_dir, catalog, run_id = session
    store = CheckpointStore(session_dir, catalog)
    info = store.save(run_id=run_id, step=1, epoch=0, reason="manual", model={"w": torch.ones(64)})
    path = store.path_of(info)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x80
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=info.id):
        store.load(info.id)
    path.unlink()
    with pytest.raises(MissingFileError, match=info.id):
        store.load(info.id)


def test_store_refuses_bad_arguments_and_leaves_no_file_when_the_catalog_refuses(session):
    from onthefly.errors import StoreError

    session_dir, catalog, run_id = session
    store = CheckpointStore(session_dir, catalog)
    with pytest.raises(ConfigError, match="run_id"):
        store.save(run_id="../escape", step=0, epoch=0, reason="manual", model={})
    with pytest.raises(ConfigError, match="step"):
        store.save(run_id=run_id, step=-1, epoch=0, reason="manual", model={})
    with pytest.raises(StoreError, match="no run 'nosuchrun'"):
        store.save(run_id="nosuchrun", step=0, epoch=0, reason="manual", model={"w": torch.ones(2)})
    assert not any(p.is_file() for p in (session_dir / "checkpoints").rglob("*"))
    info = store.save(run_id=run_id, step=0, epoch=0, reason="manual", model={})
    escaped = dataclasses.replace(info, path="../../outside.safetensors")  # a tampered catalog row
    with pytest.raises(CorruptFileError, match="outside"):
        store.path_of(escaped)


def test_a_background_save_writes_the_state_as_it_was_when_called(session):
    session_dir, catalog, run_id = session
    store = CheckpointStore(session_dir, catalog)
    model, optimizer, _ = _trained("adam")
    expected_model = copy.deepcopy(model.state_dict())
    expected_optimizer = copy.deepcopy(optimizer.state_dict())
    gate = threading.Event()
    real_commit = store._commit
    store._commit = lambda pending: (gate.wait(10), real_commit(pending))[1]  # hold the write back

    future = store.save_in_background(
        run_id=run_id,
        step=4,
        epoch=1,
        reason="epoch",
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        rng=_rng_state(),
    )
    with torch.no_grad():  # training goes on, in place, while the file is not written yet
        for p in model.parameters():
            p.add_(1.0)
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                value.mul_(3.0)
    assert catalog.checkpoints(run_id) == []  # not listed before its file is complete
    gate.set()
    info = future.result(10)
    store.wait()

    assert catalog.latest_checkpoint(run_id) == info and info.reason == "epoch" and info.step == 4
    loaded = store.load(info.id)
    _assert_same(expected_model, loaded.model)
    _assert_same(expected_optimizer, loaded.optimizer)
    store.close()


def test_a_failed_background_save_is_reported_by_its_future_and_lists_nothing(session):
    from onthefly.errors import StoreError

    session_dir, catalog, run_id = session
    store = CheckpointStore(session_dir, catalog)
    future = store.save_in_background(run_id="nosuchrun", step=0, epoch=0, reason="epoch", model={"w": torch.ones(2)})
    with pytest.raises(StoreError, match="no run 'nosuchrun'"):
        future.result(10)
    store.wait()
    assert catalog.checkpoints() == []
    assert not any(p.is_file() for p in (session_dir / "checkpoints").rglob("*"))
    with pytest.raises(ConfigError, match="step"):  # bad arguments are refused at once, nothing is queued
        store.save_in_background(run_id=run_id, step=-1, epoch=0, reason="epoch", model={})
    store.close()


def test_closing_the_store_finishes_the_saves_in_flight(session):
    session_dir, catalog, run_id = session
    store = CheckpointStore(session_dir, catalog)
    futures = [
        store.save_in_background(
            run_id=run_id, step=i, epoch=i, reason="epoch", model={"w": torch.full((1000,), float(i))}
        )
        for i in range(3)
    ]
    store.close()
    assert all(f.done() for f in futures)
    assert [c.step for c in catalog.checkpoints(run_id)] == [0, 1, 2]
    assert float(store.load(catalog.latest_checkpoint(run_id).id).model["w"][0]) == 2.0


def _partials(session_dir: Path) -> list[Path]:
    return list((session_dir / "checkpoints").glob(f"*/.*{PARTIAL_SUFFIX}"))


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX job-control signals to catch a save midway")
def test_a_kill_during_a_save_leaves_the_previous_checkpoint_intact(tmp_path):
    from onthefly.store.catalog.catalog import Catalog

    session_dir = tmp_path / "s-kill"
    session_dir.mkdir()
    proc = subprocess.Popen([sys.executable, str(CHILD), str(session_dir)], stdout=subprocess.PIPE, text=True)
    try:
        run_id = proc.stdout.readline().split()[1]
        assert proc.stdout.readline().startswith("saved 0 ")
        # Freeze the child while a temporary file exists, i.e. in the middle of a save, then kill it.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if _partials(session_dir):
                proc.send_signal(signal.SIGSTOP)
                os.waitpid(proc.pid, os.WUNTRACED)  # returns once the child is really stopped
                if _partials(session_dir):
                    break
                proc.send_signal(signal.SIGCONT)
            time.sleep(0.001)
        else:
            pytest.fail("the child never was caught in the middle of a save")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    with Catalog.open(session_dir / "catalog.sqlite", readonly=True) as catalog:
        store = CheckpointStore(session_dir, catalog)
        listed = catalog.checkpoints(run_id)
        assert listed
        latest = catalog.latest_checkpoint(run_id)
        data = store.load(latest.id)  # verifies the sha256 the catalog recorded
        assert torch.equal(data.model["w"], torch.full((4 << 20,), float(latest.step)))
        assert data.sampler == {"position": latest.step}
        for info in listed:
            store.load(info.id)
        # Files under a final name are complete even when the kill came before they were listed.
        for path in (session_dir / "checkpoints" / run_id).glob("*.safetensors"):
            step = load_checkpoint(path).sampler["position"]
            assert step <= latest.step + 1
        partial = _partials(session_dir)
        assert len(partial) == 1
        assert store.discard_partial() == partial
        assert _partials(session_dir) == []
        store.load(latest.id)


@pytest.mark.skipif(sys.platform != "linux", reason="thread priorities are per thread only on Linux")
def test_the_checkpoint_thread_runs_nicer_than_the_loop(session):
    from onthefly.store.background import BACKGROUND_NICENESS

    session_dir, catalog, run_id = session
    store = CheckpointStore(session_dir, catalog)
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = {}
    real_commit = store._commit

    def commit(pending):
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return real_commit(pending)

    store._commit = commit
    store.save_in_background(run_id=run_id, step=0, epoch=0, reason="epoch", model={"w": torch.ones(4)}).result(10)
    store.close()
    assert seen["nice"] == min(19, mine + BACKGROUND_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
