"""Checkpoints: the whole training state in one safetensors file.

A checkpoint holds a model's state dict and, when given, the optimizer,
scheduler and AMP scaler state, the RNG states and the sampler position. Every
tensor (and numpy array) is a safetensors tensor under a namespaced key
(``model.fc.weight``, ``optimizer.state.0.exp_avg``, ``rng.torch``...);
everything else (param groups, step counters, tuples, int keys, ``nan``...)
goes into the safetensors metadata as a JSON skeleton that refers to those
tensors (see :mod:`onthefly.store.checkpoints.tree`). The file is an ordinary safetensors
file, so ``safetensors.safe_open`` reads its tensors too.

Writes are atomic: the bytes go to a temporary file in the same folder, which
is fsynced, renamed over the final name and followed by an fsync of the
folder, so a crash leaves either the old state or the new file, never half a
file under the final name. The sha256 of the file is computed while it is
written and recorded in the catalog; loads verify it. Nothing is unpickled.
The file itself (layout, atomic write, header checks, hashing) is
:mod:`onthefly.store.checkpoints.safetensors_file`.

Tensors that are the same view of the same memory (tied embeddings) are
stored once and load back as one tensor object; other views of shared memory
are stored as separate contiguous copies.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from onthefly.errors import ConfigError, CorruptFileError, StoreError
from onthefly.store.background import lower_this_thread
from onthefly.store.checkpoints.safetensors_file import (
    PARTIAL_SUFFIX,
    checkpoint_chunks,
    read_checkpoint_file,
    write_chunks,
)
from onthefly.store.checkpoints.tree import flatten, unflatten
from onthefly.store.layout import CHECKPOINTS_DIR, checkpoint_file, checkpoints_folder
from onthefly.store.records import CheckpointInfo

__all__ = ["HOLDS", "CheckpointData", "CheckpointStore", "save_checkpoint", "load_checkpoint"]

HOLDS = ("model", "optimizer", "scheduler", "scaler", "rng", "sampler")
"""The parts a checkpoint can hold, in the order the catalog lists them."""

_DEVICE_PARTS = ("model", "optimizer")  # the parts load_checkpoint(device=...) moves
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class CheckpointData:
    """What a checkpoint holds, as loaded.

    Attributes:
        model: the model's state dict (name -> tensor).
        optimizer: an optimizer state dict, a list of them, or ``None``.
        scheduler: a scheduler state dict, a list of them, or ``None``.
        scaler: an AMP grad scaler state dict, or ``None``.
        rng: RNG states (nested dict of ints, tuples, numpy arrays, tensors).
        sampler: the sampler position (epoch, batch index, seed...).
        extra: anything else saved with it (step, epoch, run info, config).
    """

    model: dict[str, torch.Tensor]
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    rng: Any = None
    sampler: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def holds(self) -> tuple[str, ...]:
        """The parts present, in :data:`HOLDS` order (``model`` always)."""
        return tuple(name for name in HOLDS if getattr(self, name) is not None)


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: Mapping[str, torch.Tensor],
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    rng: Any = None,
    sampler: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[int, str]:
    """Write training state to one safetensors file, atomically.

    Tensors on other devices are copied to the CPU and non-contiguous ones
    are written contiguous; nothing given is modified.

    Args:
        path: the file to write (its folder is created); an existing file is
            replaced atomically.
        model: the model's state dict.
        optimizer: ``optimizer.state_dict()``, or a list of them.
        scheduler: ``scheduler.state_dict()``, or a list of them.
        scaler: ``scaler.state_dict()`` of an AMP grad scaler.
        rng: RNG states, e.g. ``{"torch": torch.get_rng_state(),
            "numpy": np.random.get_state(), "python": random.getstate()}``.
        sampler: the sampler position as a small dict.
        extra: other JSON-like values to keep (step, epoch, config...).

    Returns:
        ``(bytes, sha256)``: the file size and the hex sha256 of its bytes.

    Raises:
        ConfigError: ``model`` is not a mapping, or a value cannot be stored
            (the message names its path and what to convert it to).
        StoreError: the file could not be written (disk full, permissions).

    Example:
        >>> size, sha = save_checkpoint(tmp / "ck.safetensors", model=net.state_dict(),
        ...                             optimizer=opt.state_dict(), extra={"step": 100})
    """
    chunks, _ = _state_chunks(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        rng=rng,
        sampler=sampler,
        extra=extra,
        copy=False,
    )
    return write_chunks(Path(path), chunks)


def _state_chunks(*, model: Any, copy: bool, **given: Any) -> tuple[list, tuple[str, ...]]:
    """The file's bytes for the parts given (None parts left out) and which of :data:`HOLDS` they hold."""
    if not isinstance(model, Mapping):
        raise ConfigError(f"model is a {type(model).__name__}, not a state dict: pass model=module.state_dict()")
    parts = {name: value for name, value in {"model": model, **given}.items() if value is not None}
    skeleton, tensors = flatten(parts)
    return checkpoint_chunks(skeleton=skeleton, tensors=tensors, copy=copy), tuple(n for n in HOLDS if n in parts)


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    device: str | torch.device = "cpu",
) -> CheckpointData:
    """Read a checkpoint :func:`save_checkpoint` wrote, without unpickling.

    Args:
        path: the checkpoint file.
        sha256: the hex sha256 the file must have (the catalog's record);
            ``None`` skips the check.
        device: where the model and optimizer tensors go. RNG, scheduler,
            scaler and sampler state stay on the CPU, where their
            ``load_state_dict``/``set_state`` functions expect them.

    Returns:
        A :class:`CheckpointData` equal in structure and types to what was
        saved (tuples stay tuples, int keys stay ints, numpy stays numpy);
        tied tensors come back as one tensor object.

    Raises:
        MissingFileError: the file does not exist.
        CorruptFileError: the file is truncated, not an OnTheFly checkpoint,
            or written by a newer OnTheFly.
        ChecksumError: the bytes do not match ``sha256``.

    Example:
        >>> ck = load_checkpoint(tmp / "ck.safetensors", sha256=sha)
        >>> net.load_state_dict(ck.model); opt.load_state_dict(ck.optimizer)
    """
    path = Path(path)
    skeleton, tensors = read_checkpoint_file(path, sha256=sha256)
    parts = _rebuild(skeleton, tensors, torch.device(device), source=str(path))
    if "model" not in parts:
        raise CorruptFileError(f"checkpoint {path} holds no model state; the file is damaged, load another one")
    return CheckpointData(**parts)


@dataclass(frozen=True)
class _Pending:
    """A checkpoint laid out and ready to be written."""

    checkpoint_id: str
    run_id: str
    step: int
    epoch: int
    reason: str
    relative: str
    chunks: list
    holds: tuple[str, ...]


class CheckpointStore:
    """The checkpoints of one session: files under ``checkpoints/``, rows in the catalog.

    Files live at ``checkpoints/<run_id>/<checkpoint_id>.safetensors`` in the
    session folder; the catalog keeps that relative path, the size, the sha256
    and what the checkpoint holds. Only the process that owns the session
    writes through this class.

    Args:
        session_dir: the session folder.
        catalog: the session's open catalog.

    Example:
        >>> store = CheckpointStore(session_dir, catalog)
        >>> info = store.save(run_id=run.id, step=100, epoch=1, reason="epoch", model=net.state_dict())
        >>> net.load_state_dict(store.load(info.id).model)
    """

    def __init__(self, session_dir: str | os.PathLike[str], catalog: Any) -> None:
        self.session_dir = Path(session_dir)
        self._catalog = catalog
        self._guard = threading.Lock()
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._in_flight: set[concurrent.futures.Future] = set()

    def save(
        self,
        *,
        run_id: str,
        step: int,
        epoch: int,
        reason: str,
        model: Mapping[str, torch.Tensor],
        optimizer: Any = None,
        scheduler: Any = None,
        scaler: Any = None,
        rng: Any = None,
        sampler: Any = None,
        extra: Mapping[str, Any] | None = None,
    ) -> CheckpointInfo:
        """Write a checkpoint of ``run_id`` and list it in the catalog.

        Saves started earlier with :meth:`save_in_background` are finished
        first, so checkpoints are listed in the order they were taken.

        Args:
            run_id: the run it belongs to (a catalog run id).
            step: the optimizer step it was taken at.
            epoch: the epoch it was taken in.
            reason: why it was taken (``manual``, ``epoch``, ``final``, ``pause``...).
            model, optimizer, scheduler, scaler, rng, sampler, extra: as for
                :func:`save_checkpoint`.

        Returns:
            The catalog record of the new checkpoint.

        Raises:
            ConfigError: ``run_id`` or ``reason`` is unusable, or a value
                cannot be stored.
            StoreError: the file could not be written; no catalog row is
                added and no file is left behind.
        """
        pending = self._prepare(
            run_id=run_id,
            step=step,
            epoch=epoch,
            reason=reason,
            copy=False,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            rng=rng,
            sampler=sampler,
            extra=extra,
        )
        self.wait()  # listed after the background saves called before it
        return self._commit(pending)

    def save_in_background(
        self,
        *,
        run_id: str,
        step: int,
        epoch: int,
        reason: str,
        model: Mapping[str, torch.Tensor],
        optimizer: Any = None,
        scheduler: Any = None,
        scaler: Any = None,
        rng: Any = None,
        sampler: Any = None,
        extra: Mapping[str, Any] | None = None,
    ) -> concurrent.futures.Future:
        """Copy the state now and write it on this store's checkpoint thread.

        Training goes on while the file is written and fsynced: only the copy
        of the tensors (and, on an accelerator, their transfer to the CPU)
        happens on the calling thread. The catalog lists the checkpoint once
        its file is complete, exactly as after :meth:`save`; :meth:`wait`
        waits for every save in flight, and readers of this session's
        checkpoints in the same process call it first.

        Args:
            run_id, step, epoch, reason, model, optimizer, scheduler, scaler,
                rng, sampler, extra: as for :meth:`save`.

        Returns:
            A future of the :class:`CheckpointInfo` (or of the error that
            stopped the write; nothing is listed then).

        Raises:
            ConfigError: as for :meth:`save`, at once (nothing is queued).
        """
        pending = self._prepare(
            run_id=run_id,
            step=step,
            epoch=epoch,
            reason=reason,
            copy=True,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            rng=rng,
            sampler=sampler,
            extra=extra,
        )
        with self._guard:
            if self._thread is None:
                self._thread = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="onthefly-checkpoint", initializer=lower_this_thread
                )
            future = self._thread.submit(self._commit, pending)
            self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)
        return future

    def wait(self, timeout: float | None = None) -> None:
        """Wait until every :meth:`save_in_background` of this store has finished (listed or failed).

        Raises:
            StoreError: they did not finish within ``timeout`` seconds.
        """
        with self._guard:
            in_flight = list(self._in_flight)
        _, late = concurrent.futures.wait(in_flight, timeout=timeout)
        if late:
            raise StoreError(
                f"{len(late)} checkpoint(s) of {self.session_dir} were still being written after {timeout} s: "
                "the disk is slow; wait again with a longer timeout"
            )

    def close(self) -> None:
        """Finish the saves in flight and stop the checkpoint thread; idempotent."""
        with self._guard:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=True)

    def _prepare(self, *, run_id: str, step: int, epoch: int, reason: str, copy: bool, **state: Any) -> _Pending:
        _check_save_args(run_id=run_id, step=step, epoch=epoch, reason=reason)
        chunks, holds = _state_chunks(copy=copy, **state)
        checkpoint_id = "ck-" + secrets.token_hex(6)
        return _Pending(
            checkpoint_id=checkpoint_id,
            run_id=run_id,
            step=int(step),
            epoch=int(epoch),
            reason=reason,
            relative=checkpoint_file(run_id, checkpoint_id),
            chunks=chunks,
            holds=holds,
        )

    def _commit(self, pending: _Pending) -> CheckpointInfo:
        """Write the file, then list it (a file that cannot be listed is removed)."""
        path = self.session_dir / pending.relative
        size, sha = write_chunks(path, pending.chunks)
        info = CheckpointInfo(
            id=pending.checkpoint_id,
            run_id=pending.run_id,
            step=pending.step,
            epoch=pending.epoch,
            reason=pending.reason,
            path=pending.relative,
            bytes=size,
            sha256=sha,
            holds=pending.holds,
            created_at=time.time(),
        )
        try:
            self._catalog.add_checkpoint(info)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return info

    def load(self, checkpoint_id: str, *, device: str | torch.device = "cpu") -> CheckpointData:
        """Read a listed checkpoint, verifying its sha256 against the catalog.

        Args:
            checkpoint_id: the catalog id (``ck-...``).
            device: where the model and optimizer tensors go.

        Returns:
            The checkpoint's state.

        Raises:
            MissingFileError, ChecksumError, CorruptFileError: as for
                :func:`load_checkpoint`; the message names the file.
        """
        info = self._catalog.checkpoint(checkpoint_id)
        return load_checkpoint(self.path_of(info), sha256=info.sha256, device=device)

    def path_of(self, info: CheckpointInfo) -> Path:
        """The absolute path of a listed checkpoint's file.

        Args:
            info: the catalog record.

        Returns:
            ``session_dir / info.path``.

        Raises:
            CorruptFileError: the recorded path leaves the ``checkpoints/``
                folder (absolute, or with ``..``).
        """
        relative = PurePosixPath(info.path)
        if relative.is_absolute() or ".." in relative.parts or relative.parts[:1] != (CHECKPOINTS_DIR,):
            raise CorruptFileError(
                f"checkpoint {info.id} is listed at {info.path!r}, outside the session's checkpoints/ folder; "
                "the catalog was edited or imported from an untrusted bundle, do not load it"
            )
        return self.session_dir / relative

    def discard_partial(self) -> list[Path]:
        """Delete the temporary files of saves a crash interrupted.

        Call it only from the process that owns the session (no save can be
        running). Completed checkpoints are never touched.

        Returns:
            The files deleted.
        """
        root = checkpoints_folder(self.session_dir)
        removed = []
        for candidate in sorted(root.glob(f"*/.*{PARTIAL_SUFFIX}")):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
        return removed


def _check_save_args(*, run_id: Any, step: Any, epoch: Any, reason: Any) -> None:
    if not isinstance(run_id, str) or not _SAFE_NAME.fullmatch(run_id):
        raise ConfigError(
            f"run_id={run_id!r} cannot name a checkpoint folder: pass the id of a catalog run "
            "(letters, digits, '.', '_' and '-')"
        )
    for name, value in (("step", step), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name}={value!r} is not a non-negative integer: pass the {name} counter")
    if not isinstance(reason, str) or not 0 < len(reason) <= 32:
        raise ConfigError(f"reason={reason!r} is not a short label: pass e.g. 'manual', 'epoch' or 'final'")


def _rebuild(skeleton: Any, tensors: dict[str, torch.Tensor], device: torch.device, *, source: str) -> dict[str, Any]:
    """Unflatten the skeleton, moving model and optimizer tensors to ``device``."""
    if not isinstance(skeleton, dict):
        raise CorruptFileError(f"checkpoint {source}: the state skeleton is not a JSON object; load another one")
    unknown = set(skeleton) - {*HOLDS, "extra"}
    if unknown:
        raise CorruptFileError(
            f"checkpoint {source} holds unknown parts {sorted(unknown)}: written by a newer OnTheFly? "
            "upgrade with `pip install -U onthefly-ai`"
        )
    if device.type == "cpu":
        return unflatten(skeleton, tensors, source=source)
    moved = _Moved(tensors, device)
    on_device = {k: v for k, v in skeleton.items() if k in _DEVICE_PARTS}
    on_cpu = {k: v for k, v in skeleton.items() if k not in _DEVICE_PARTS}
    return {**unflatten(on_device, moved, source=source), **unflatten(on_cpu, tensors, source=source)}


class _Moved(Mapping[str, torch.Tensor]):
    """A read-only view of ``tensors`` that moves each to ``device`` once."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], device: torch.device) -> None:
        self._tensors = tensors
        self._device = device
        self._cache: dict[str, torch.Tensor] = {}

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._cache:
            self._cache[key] = self._tensors[key].to(self._device)
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)
