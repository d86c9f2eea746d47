"""Decisions about session bundles, apart from any file I/O.

Everything here is a pure function of names, numbers and parsed JSON: which
zip entry names are acceptable, which entry modes, which sizes and ratios,
whether a manifest is well formed and of a format this version reads, and
whether a file is worth deflating. :mod:`onthefly.store.bundle.export` and
:mod:`onthefly.store.bundle.import_` call them and do the I/O.
"""

from __future__ import annotations

import re
import stat
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from onthefly.store.layout import CATALOG, MANIFEST, RANKS_DIR

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FILE_KINDS",
    "Limits",
    "DEFAULT_LIMITS",
    "name_problem",
    "mode_problem",
    "size_problems",
    "format_verdict",
    "manifest_problems",
    "kind_of",
    "split_rank",
    "choose_compression",
    "sample_offsets",
    "duplicate_runs",
]

FORMAT = "onthefly.bundle"
"""The ``format`` member of every manifest."""

FORMAT_VERSION = 1
"""The bundle layout this version writes, and the newest it reads."""


FILE_KINDS = {"catalog": ".sqlite", "samples": ".parquet", "steps": ".parquet", "checkpoints": ".safetensors"}
"""The kinds of file a bundle holds, and the suffix each must have."""

SAMPLE_PIECES = 16
SAMPLE_PIECE_BYTES = 4 * 1024
"""A file is judged worth deflating on this many pieces of this size, spread evenly over it."""

DEFLATE_SMALL = 0.9
"""A small file is deflated when a sample of it shrinks below this fraction..."""

DEFLATE_LARGE = 0.5
"""...a larger one only below this one (deflating is much slower than copying)."""

SMALL_FILE = 1 << 20
"""Files up to this size count as small for :func:`choose_compression`."""

_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._=-]{0,254}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DRIVE = re.compile(r"^[A-Za-z]:")
_RANK = re.compile(r"[1-9][0-9]{0,5}")
_MAX_NAME = 1024


@dataclass(frozen=True)
class Limits:
    """What an import accepts before it writes a byte.

    Attributes:
        max_entries: the most zip entries.
        max_total_bytes: the most bytes all files may hold once extracted.
        max_ratio: the largest uncompressed/compressed ratio of one entry...
        ratio_floor: ...counted only for entries larger than this many bytes
            (small files, e.g. a nearly empty catalog, compress very well).
        max_manifest_bytes: the largest manifest read.
    """

    max_entries: int = 100_000
    max_total_bytes: int = 1 << 40
    max_ratio: float = 200.0
    ratio_floor: int = 1 << 20
    max_manifest_bytes: int = 32 << 20


DEFAULT_LIMITS = Limits()


def name_problem(name: str) -> str | None:
    """Why a zip entry name is refused, or None when it is an acceptable file name.

    Accepted names are relative POSIX paths of the bundle layout:
    ``manifest.json``, ``catalog.sqlite``, ``samples/...``, ``steps/...`` and
    ``checkpoints/...``, and for the other ranks of a multi-process session
    ``ranks/<r>/catalog.sqlite``, ``ranks/<r>/samples/...`` and
    ``ranks/<r>/steps/...``. Components are plain names (letters, digits,
    ``._=-``, not starting with a dot) and the suffix fits the folder.

    Args:
        name: the entry name as stored in the zip.

    Returns:
        A short reason (absolute path, ``..``, backslash, drive letter...),
        or None.

    Example:
        >>> name_problem("../../etc/passwd")
        "leaves the bundle folder ('..')"
        >>> name_problem("samples/r1/train/e000000-s000001.parquet") is None
        True
    """
    if not name:
        return "is empty"
    if len(name) > _MAX_NAME:
        return f"is longer than {_MAX_NAME} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "holds control characters"
    if "\\" in name:
        return "holds a backslash (a Windows path)"
    if name.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(name):
        return "starts with a drive letter"
    parts = name.split("/")
    if ".." in parts:
        return "leaves the bundle folder ('..')"
    if name.endswith("/"):
        return "is a folder entry"
    if any(part in ("", ".") for part in parts):
        return "has an empty or '.' component"
    if name == MANIFEST:
        return None
    rank, rest = split_rank(name)
    if parts[0] == RANKS_DIR and rank is None:
        return f"is under {RANKS_DIR}/ but not in a rank folder ({RANKS_DIR}/<r>/ with r from 1)"
    if rest == CATALOG:
        return None
    kind = rest.split("/", 1)[0]
    if kind not in FILE_KINDS or kind == "catalog" or "/" not in rest or (rank is not None and kind == "checkpoints"):
        return (
            "is outside the bundle layout (manifest.json, catalog.sqlite, samples/, steps/, checkpoints/, ranks/<r>/)"
        )
    if not all(_COMPONENT.fullmatch(part) for part in rest.split("/")[1:]):
        return "has a component that is not a plain file name"
    if not name.endswith(FILE_KINDS[kind]):
        return f"does not end with {FILE_KINDS[kind]} as files of {kind}/ do"
    return None


def split_rank(path: str) -> tuple[int | None, str]:
    """``(rank, path inside the rank folder)`` for ``ranks/<r>/...``, else ``(None, path)``.

    Example:
        >>> split_rank("ranks/3/samples/r/train/a.parquet"), split_rank("catalog.sqlite")
        ((3, 'samples/r/train/a.parquet'), (None, 'catalog.sqlite'))
    """
    parts = path.split("/", 2)
    if len(parts) == 3 and parts[0] == RANKS_DIR and _RANK.fullmatch(parts[1]):
        return int(parts[1]), parts[2]
    return None, path


def kind_of(path: str) -> str:
    """The file kind of a bundle path: ``catalog``, ``samples``, ``steps`` or ``checkpoints``.

    Example:
        >>> kind_of("checkpoints/r1/ck-1.safetensors"), kind_of("ranks/2/catalog.sqlite")
        ('checkpoints', 'catalog')
    """
    _, rest = split_rank(path)
    return "catalog" if rest == CATALOG else rest.split("/", 1)[0]


def mode_problem(external_attr: int) -> str | None:
    """Why a zip entry's Unix mode is refused (a link, a device...), or None.

    The high 16 bits of ``external_attr`` hold the Unix mode when the zip was
    made on a Unix system; a file type of 0 (not recorded) or a regular file
    is accepted, anything else (symbolic link, folder, device, FIFO, socket)
    is refused.

    Example:
        >>> mode_problem((stat.S_IFLNK | 0o777) << 16)
        'is a symbolic link'
        >>> mode_problem((stat.S_IFREG | 0o644) << 16) is None
        True
    """
    mode = (external_attr >> 16) & 0xFFFF
    kind = stat.S_IFMT(mode)
    if kind in (0, stat.S_IFREG):
        if mode & (stat.S_ISUID | stat.S_ISGID):
            return "asks for set-user-id or set-group-id permissions"
        return None
    names = {
        stat.S_IFLNK: "a symbolic link",
        stat.S_IFDIR: "a folder",
        stat.S_IFCHR: "a character device",
        stat.S_IFBLK: "a block device",
        stat.S_IFIFO: "a FIFO",
        stat.S_IFSOCK: "a socket",
    }
    return f"is {names.get(kind, f'a special file (mode {mode:o})')}"


def size_problems(entries: Sequence[tuple[str, int, int, bool]], *, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Size and ratio problems of a bundle's entries (zip-bomb checks).

    Args:
        entries: ``(name, file_size, compress_size, compressed)`` per entry,
            as the zip's central directory declares them.
        limits: the caps.

    Returns:
        One sentence per problem (empty when the sizes are acceptable).

    Example:
        >>> size_problems([("steps/r/a.parquet", 1 << 30, 1 << 20, True)])
        ['steps/r/a.parquet expands 1024 times (1073741824 bytes from 1048576): over the 200x cap']
    """
    problems = []
    if len(entries) > limits.max_entries:
        problems.append(f"it holds {len(entries)} entries, over the cap of {limits.max_entries}")
    total = 0
    for name, size, packed, compressed in entries:
        total += size
        if compressed and size > limits.ratio_floor:
            ratio = size / max(packed, 1)
            if ratio > limits.max_ratio:
                problems.append(
                    f"{name} expands {ratio:.0f} times ({size} bytes from {packed}): "
                    f"over the {limits.max_ratio:.0f}x cap"
                )
        elif not compressed and size != packed:
            problems.append(f"{name} is stored uncompressed but declares {size} bytes in {packed}")
    if total > limits.max_total_bytes:
        problems.append(f"its files hold {total} bytes, over the cap of {limits.max_total_bytes}")
    return problems


def format_verdict(manifest: Mapping[str, Any]) -> str:
    """Whether this version reads a manifest's format.

    Returns:
        ``"current"``, ``"older"`` (a known older version: read it),
        ``"newer"`` (written by a newer OnTheFly) or ``"foreign"`` (not a
        bundle manifest, or an unreadable version).

    Example:
        >>> format_verdict({"format": "onthefly.bundle", "format_version": 2})
        'newer'
    """
    if manifest.get("format") != FORMAT:
        return "foreign"
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return "foreign"
    if version > FORMAT_VERSION:
        return "newer"
    return "current" if version == FORMAT_VERSION else "older"


def manifest_problems(manifest: Any) -> list[str]:
    """The structural problems of a version-1 manifest (empty when it is well formed).

    Checks the members :func:`onthefly.store.bundle.export.build_manifest` writes:
    a session with an id and project, runs with ids, and files with a path
    the layout accepts, a size and a sha256, each path once, the catalog
    among them.

    Example:
        >>> manifest_problems({"format": "onthefly.bundle"})[:1]
        ["no 'session' object"]
    """
    if not isinstance(manifest, dict):
        return ["the manifest is not a JSON object"]
    problems = []
    session = manifest.get("session")
    if not isinstance(session, dict) or not isinstance(session.get("id"), str):
        problems.append("no 'session' object")
    elif not isinstance(session.get("project"), str):
        problems.append("the session has no project name")
    runs = manifest.get("runs")
    if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in runs):
        problems.append("'runs' is not a list of runs with ids")
    files = manifest.get("files")
    if not isinstance(files, list):
        return problems + ["'files' is not a list"]
    seen: set[str] = set()
    for entry in files:
        problem = _file_entry_problem(entry)
        if problem:
            problems.append(problem)
            continue
        if entry["path"] in seen:
            problems.append(f"{entry['path']} is listed twice")
        seen.add(entry["path"])
    if CATALOG not in seen:
        problems.append(f"{CATALOG} is not listed")
    return problems


def _file_entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        return f"a file entry has no path: {str(entry)[:80]}"
    path = entry["path"]
    if path == MANIFEST:
        return "the manifest lists itself"
    problem = name_problem(path)
    if problem:
        return f"file {path[:200]!r} {problem}"
    size = entry.get("bytes")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return f"file {path} has no size in bytes"
    if not isinstance(entry.get("sha256"), str) or not _HEX64.fullmatch(entry["sha256"]):
        return f"file {path} has no sha256 (64 lowercase hex digits)"
    return None


def sample_offsets(size: int) -> list[tuple[int, int]]:
    """``(offset, length)`` of the pieces read to judge a file of ``size`` bytes.

    Example:
        >>> sample_offsets(100), len(sample_offsets(10 << 20))
        ([(0, 100)], 16)
    """
    if size <= SAMPLE_PIECES * SAMPLE_PIECE_BYTES:
        return [(0, size)]
    span = size - SAMPLE_PIECE_BYTES
    return [(i * span // (SAMPLE_PIECES - 1), SAMPLE_PIECE_BYTES) for i in range(SAMPLE_PIECES)]


def choose_compression(sample: bytes, *, size: int) -> bool:
    """Whether deflating a file pays, judged on a sample of its bytes.

    Deflating runs an order of magnitude slower than copying, so a large
    file is deflated only when it would shrink to less than half
    (:data:`DEFLATE_LARGE`): Parquet shards (zstd pages) and safetensors of
    floats are stored, which keeps export at copy speed. A small file
    (:data:`SMALL_FILE` bytes or less) costs no noticeable time and is
    deflated when it shrinks by a tenth (:data:`DEFLATE_SMALL`): the catalog,
    small shards, the manifest.

    Args:
        sample: pieces of the file spread over it (see :func:`sample_offsets`).
        size: the file's size in bytes.

    Returns:
        True to deflate, False to store.

    Example:
        >>> import os
        >>> choose_compression(b"\\0" * 4096, size=4096), choose_compression(os.urandom(4096), size=4096)
        (True, False)
    """
    if not sample:
        return False
    ratio = len(zlib.compress(sample, 1)) / len(sample)
    return ratio < (DEFLATE_SMALL if size <= SMALL_FILE else DEFLATE_LARGE)


def duplicate_runs(incoming: Sequence[str], owned: Mapping[str, str]) -> dict[str, str]:
    """Runs of an incoming bundle whose data another session of the store already holds.

    A run's shards and checkpoints live in one session of a store. When a
    bundle brings data of a run that another session holds data of (a
    session exported, imported, resumed and exported again), the incoming
    copy is left out and the run stays in the new session as a record.

    Args:
        incoming: ids of the bundle's runs that come with shards or checkpoints.
        owned: run id -> the session holding that run's data, for the store's
            other sessions.

    Returns:
        run id -> the session that keeps its data, for the runs to leave out.

    Example:
        >>> duplicate_runs(["a", "b"], {"a": "20250101-000000-aaaaaa"})
        {'a': '20250101-000000-aaaaaa'}
    """
    return {run: owned[run] for run in incoming if run in owned}
