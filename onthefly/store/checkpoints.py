"""Checkpoints: the whole training state in one safetensors file.

A checkpoint holds a model's state dict and, when given, the optimizer,
scheduler and AMP scaler state, the RNG states and the sampler position. Every
tensor (and numpy array) is a safetensors tensor under a namespaced key
(``model.fc.weight``, ``optimizer.state.0.exp_avg``, ``rng.torch``...);
everything else (param groups, step counters, tuples, int keys, ``nan``...)
goes into the safetensors metadata as a JSON skeleton that refers to those
tensors (see :mod:`onthefly.store.tree`). The file is an ordinary safetensors
file, so ``safetensors.safe_open`` reads its tensors too.

Writes are atomic: the bytes go to a temporary file in the same folder, which
is fsynced, renamed over the final name and followed by an fsync of the
folder, so a crash leaves either the old state or the new file, never half a
file under the final name. The sha256 of the file is computed while it is
written and recorded in the catalog; loads verify it. Nothing is unpickled.

Tensors that are the same view of the same memory (tied embeddings) are
stored once and load back as one tensor object; other views of shared memory
are stored as separate contiguous copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import secrets
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from onthefly.errors import ChecksumError, ConfigError, CorruptFileError, MissingFileError, StoreError
from onthefly.store.records import CheckpointInfo
from onthefly.store.tree import flatten, unflatten

__all__ = [
    "HOLDS",
    "FORMAT_VERSION",
    "CheckpointData",
    "CheckpointStore",
    "save_checkpoint",
    "load_checkpoint",
]

HOLDS = ("model", "optimizer", "scheduler", "scaler", "rng", "sampler")
"""The parts a checkpoint can hold, in the order the catalog lists them."""

FORMAT_VERSION = 1
"""Version of the checkpoint layout this module writes and the newest it reads."""

PARTIAL_SUFFIX = ".partial"
"""Suffix of the temporary file a save writes before renaming it."""

_FORMAT = "onthefly.checkpoint"
_META_FORMAT = "onthefly.format"
_META_VERSION = "onthefly.format_version"
_META_SKELETON = "onthefly.skeleton"
_DEVICE_PARTS = ("model", "optimizer")  # the parts load_checkpoint(device=...) moves
_MAX_HEADER = 100_000_000  # safetensors readers refuse larger headers
_READ_CHUNK = 16 << 20  # read size while hashing on the side
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "C64": torch.complex64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}


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
    if not isinstance(model, Mapping):
        raise ConfigError(
            f"model is a {type(model).__name__}, not a state dict: pass model=module.state_dict()"
        )
    given = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler,
             "rng": rng, "sampler": sampler, "extra": extra}
    parts = {name: value for name, value in given.items() if value is not None}
    skeleton, tensors = flatten(parts)
    metadata = {
        _META_FORMAT: _FORMAT,
        _META_VERSION: str(FORMAT_VERSION),
        _META_SKELETON: json.dumps(skeleton, separators=(",", ":"), allow_nan=False),
    }
    header, buffers = _layout(tensors, metadata)
    return _write_atomic(Path(path), [header, *buffers])


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
    try:
        file = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise MissingFileError(
            f"checkpoint file {path} does not exist: it was moved or deleted; "
            "restore it from a backup or load another checkpoint"
        ) from None
    except OSError as exc:
        raise StoreError(f"cannot open checkpoint {path}: {exc.strerror}; check its permissions") from exc
    with file:
        try:
            skeleton, tensors = _read(file, path, sha256)
        except OSError as exc:
            raise CorruptFileError(
                f"reading checkpoint {path} failed: {exc.strerror}; check the disk and load another checkpoint"
            ) from exc
    parts = _rebuild(skeleton, tensors, torch.device(device), source=str(path))
    if "model" not in parts:
        raise CorruptFileError(f"checkpoint {path} holds no model state; the file is damaged, load another one")
    return CheckpointData(**parts)


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
        _check_save_args(run_id=run_id, step=step, epoch=epoch, reason=reason)
        checkpoint_id = "ck-" + secrets.token_hex(6)
        relative = f"checkpoints/{run_id}/{checkpoint_id}.safetensors"
        path = self.session_dir / relative
        size, sha = save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler,
                                    scaler=scaler, rng=rng, sampler=sampler, extra=extra)
        holds = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler,
                 "rng": rng, "sampler": sampler}
        info = CheckpointInfo(
            id=checkpoint_id,
            run_id=run_id,
            step=int(step),
            epoch=int(epoch),
            reason=reason,
            path=relative,
            bytes=size,
            sha256=sha,
            holds=tuple(name for name in HOLDS if holds[name] is not None),
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
        if relative.is_absolute() or ".." in relative.parts or relative.parts[:1] != ("checkpoints",):
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
        root = self.session_dir / "checkpoints"
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


def _layout(tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> tuple[bytes, list[memoryview]]:
    """The safetensors header and the tensor bytes, in file order.

    Tensors are ordered by element size, largest first, so every tensor
    starts at an offset aligned to its element size.
    """
    entries = []
    for key, tensor in tensors.items():
        code = _CODES.get(tensor.dtype)
        if code is None:
            raise ConfigError(
                f"{key} has dtype {tensor.dtype}, which safetensors cannot store: convert it "
                f"(supported: {', '.join(str(d).removeprefix('torch.') for d in _CODES)})"
            )
        entries.append((key, code, tensor.to("cpu").contiguous()))
    entries.sort(key=lambda entry: -entry[2].element_size())
    header: dict[str, Any] = {"__metadata__": metadata}
    buffers = []
    offset = 0
    for key, code, tensor in entries:
        size = tensor.numel() * tensor.element_size()
        header[key] = {"dtype": code, "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
        if size:
            buffers.append(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # tensor data starts 8-byte aligned
    return struct.pack("<Q", len(encoded)) + encoded, buffers


def _write_atomic(path: Path, chunks: list[Any]) -> tuple[int, str]:
    """Write chunks to a temporary file, fsync, rename over ``path``, fsync the folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder of checkpoint {path}: {exc.strerror}; check permissions") from exc
    partial = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
    hasher = _Hasher()
    size = 0
    try:
        with open(partial, "xb", buffering=0) as file:
            for chunk in chunks:
                hasher.feed(chunk)  # hashed on the side while the same bytes are written
                size += _write_all(file, chunk)
            os.fsync(file.fileno())
        digest = hasher.hexdigest()
        os.replace(partial, path)
    except BaseException as exc:
        hasher.close()
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StoreError(
                f"writing checkpoint {path} failed: {exc.strerror}; free disk space or check permissions, "
                "the previous checkpoints are intact"
            ) from exc
        raise
    _fsync_folder(path.parent)
    return size, digest


def _write_all(file: Any, chunk: Any) -> int:
    view = memoryview(chunk).cast("B")
    done = 0
    while done < len(view):
        done += file.write(view[done:])
    return done


def _fsync_folder(folder: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # Windows: a rename is durable without it
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(file: Any, path: Path, sha256: str | None) -> tuple[Any, dict[str, torch.Tensor]]:
    """Parse, read and verify an open checkpoint file: ``(skeleton, tensors)``."""
    size = os.fstat(file.fileno()).st_size
    if size < 8:
        raise CorruptFileError(
            f"checkpoint {path} is {size} bytes, too short for a safetensors file; "
            "it was cut short, load another checkpoint"
        )
    prefix = _read_exact(file, 8, path)
    (header_size,) = struct.unpack("<Q", prefix)
    if header_size > min(size - 8, _MAX_HEADER):
        raise CorruptFileError(
            f"checkpoint {path} announces a {header_size}-byte header but holds {size} bytes: "
            "it was cut short or is not a safetensors file; load another checkpoint"
        )
    header = _read_exact(file, header_size, path)
    skeleton, entries = _parse_header(header, data_size=size - 8 - header_size, source=str(path))
    hasher = _Hasher() if sha256 is not None else None
    tensors = {}
    try:
        if hasher:
            hasher.feed(prefix)
            hasher.feed(header)
        for key, dtype, shape in entries:
            tensor = torch.empty(shape, dtype=dtype)
            if tensor.numel():
                _read_into(file, memoryview(tensor.reshape(-1).view(torch.uint8).numpy()), path, hasher)
            tensors[key] = tensor
        digest = hasher.hexdigest() if hasher else None
    finally:
        if hasher:
            hasher.close()
    if sha256 is not None and digest != sha256.lower():
        raise ChecksumError(
            f"checkpoint {path} does not match the sha256 recorded when it was saved "
            f"(expected {sha256}, found {digest}): the file changed on disk; load another checkpoint"
        )
    return skeleton, tensors


def _parse_header(
    header: bytes, *, data_size: int, source: str
) -> tuple[Any, list[tuple[str, torch.dtype, list[int]]]]:
    """Check the safetensors header of an OnTheFly checkpoint.

    Returns:
        ``(skeleton, entries)`` with ``entries`` as ``(key, dtype, shape)``
        in file order.
    """
    try:
        parsed = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _corrupt(source, "has an unreadable header (not safetensors, or damaged)") from None
    if not isinstance(parsed, dict):
        raise _corrupt(source, "has a header that is not a JSON object")
    skeleton = _check_metadata(parsed.pop("__metadata__", None), source)
    return skeleton, _check_spans(parsed, data_size, source)


def _corrupt(source: str, what: str) -> CorruptFileError:
    return CorruptFileError(f"checkpoint {source} {what}; load another checkpoint")


def _check_metadata(metadata: Any, source: str) -> Any:
    """The skeleton, once the metadata says this is a checkpoint of a format we read."""
    if not isinstance(metadata, dict) or metadata.get(_META_FORMAT) != _FORMAT:
        raise CorruptFileError(
            f"{source} is a safetensors file but not an OnTheFly checkpoint (no {_META_FORMAT} metadata); "
            "read it with safetensors.torch.load_file instead"
        )
    version = str(metadata.get(_META_VERSION, ""))
    if not (version.isascii() and version.isdigit()) or int(version) < 1:
        raise _corrupt(source, f"has an unreadable format version {version!r}")
    if int(version) > FORMAT_VERSION:
        raise CorruptFileError(
            f"checkpoint {source} has format version {version}, newer than this OnTheFly reads "
            f"(up to {FORMAT_VERSION}): upgrade with `pip install -U onthefly-ai`"
        )
    try:
        return json.loads(str(metadata.get(_META_SKELETON, "")))
    except json.JSONDecodeError:
        raise _corrupt(source, "has an unreadable state skeleton") from None


def _check_spans(entries: dict[str, Any], data_size: int, source: str) -> list[tuple[str, torch.dtype, list[int]]]:
    """Tensor entries in file order, once they tile the data exactly."""
    spans = []
    for key, entry in entries.items():
        try:
            dtype = _DTYPES[entry["dtype"]]
            shape = [int(d) for d in entry["shape"]]
            start, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise _corrupt(source, f"has a malformed header entry for {key!r}") from None
        numel = 1
        for dim in shape:
            numel *= dim
        if min(shape, default=0) < 0 or end - start != numel * dtype.itemsize:
            raise _corrupt(source, f"has a header entry for {key!r} whose size does not match its shape")
        spans.append((start, end, key, dtype, shape))
    spans.sort(key=lambda span: (span[0], span[1]))
    expected = 0
    for start, end, key, _, _ in spans:
        if start != expected:
            raise _corrupt(source, f"has a gap or overlap before tensor {key!r}")
        expected = end
    if data_size < expected:
        raise CorruptFileError(
            f"checkpoint {source} is truncated: its header describes {expected} bytes of tensor data "
            f"but only {data_size} follow; the save or a copy was cut short, load another checkpoint"
        )
    if data_size > expected:
        raise _corrupt(source, f"has {data_size - expected} unexpected bytes after its last tensor")
    return [(key, dtype, shape) for _, _, key, dtype, shape in spans]


def _read_exact(file: Any, count: int, path: Path) -> bytes:
    buffer = bytearray(count)
    _read_into(file, memoryview(buffer), path, None)
    return bytes(buffer)


def _read_into(file: Any, view: memoryview, path: Path, hasher: _Hasher | None) -> None:
    done = 0
    while done < len(view):
        chunk = view[done : done + _READ_CHUNK]
        got = 0
        while got < len(chunk):
            n = file.readinto(chunk[got:])
            if not n:
                raise CorruptFileError(
                    f"checkpoint {path} ended early while reading (it shrank or was cut short); "
                    "load another checkpoint"
                )
            got += n
        if hasher:
            hasher.feed(chunk)
        done += got


class _Hasher:
    """sha256 of buffers fed in order, computed on a helper thread.

    hashlib releases the GIL on large buffers, so hashing overlaps the file
    I/O of the calling thread. Buffers must not change until the digest is
    taken.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._sha = hashlib.sha256()
        self._thread = threading.Thread(target=self._run, name="onthefly-sha256", daemon=True)
        self._thread.start()

    def feed(self, buffer: Any) -> None:
        self._queue.put(buffer)

    def hexdigest(self) -> str:
        self.close()
        return self._sha.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (buffer := self._queue.get()) is not None:
            self._sha.update(buffer)


def _rebuild(
    skeleton: Any, tensors: dict[str, torch.Tensor], device: torch.device, *, source: str
) -> dict[str, Any]:
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
