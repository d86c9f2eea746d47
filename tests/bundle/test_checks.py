"""The pure decisions about bundles: names, modes, sizes, manifests, compression, duplicates."""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onthefly.store.bundle.checks import (
    FORMAT,
    SMALL_FILE,
    Limits,
    choose_compression,
    duplicate_runs,
    format_verdict,
    kind_of,
    manifest_problems,
    mode_problem,
    name_problem,
    sample_offsets,
    size_problems,
)

SHA = "ab" * 32


@pytest.mark.parametrize(
    "name",
    [
        "manifest.json",
        "catalog.sqlite",
        "samples/0a1b2c3d4e5f/train/e000001-s000002.parquet",
        "steps/0a1b2c3d4e5f/steps-000003.parquet",
        "checkpoints/0a1b2c3d4e5f/ck-0123456789ab.safetensors",
    ],
)
def test_names_of_the_layout_are_accepted(name):
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "is empty"),
        ("../x.parquet", "leaves the bundle folder"),
        ("samples/a/../../x.parquet", "leaves the bundle folder"),
        ("/etc/passwd", "absolute path"),
        ("c:/x/y.parquet", "drive letter"),
        ("samples\\a.parquet", "backslash"),
        ("samples/a\x00.parquet", "control characters"),
        ("samples/", "folder entry"),
        ("samples//a.parquet", "empty or '.' component"),
        ("samples/./a.parquet", "empty or '.' component"),
        ("samples/.a.parquet", "not a plain file name"),
        ("samples/a.safetensors", "does not end with .parquet"),
        ("checkpoints/r/ck.parquet", "does not end with .safetensors"),
        ("catalog.sqlite-wal", "outside the bundle layout"),
        ("LOCK", "outside the bundle layout"),
        ("samples", "outside the bundle layout"),
        ("x" * 2000, "longer than"),
    ],
)
def test_names_that_escape_or_stray_are_refused_with_the_reason(name, reason):
    assert reason in name_problem(name)


@given(st.text(min_size=1, max_size=60))
def test_no_accepted_name_can_leave_the_folder(name):
    if name_problem(name) is None:
        assert not name.startswith("/") and ".." not in name.split("/") and "\\" not in name
        assert os.path.normpath(name) == name and not os.path.isabs(name)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        (stat.S_IFLNK | 0o777, "symbolic link"),
        (stat.S_IFDIR | 0o755, "folder"),
        (stat.S_IFCHR | 0o600, "character device"),
        (stat.S_IFIFO | 0o600, "FIFO"),
        (stat.S_IFREG | stat.S_ISUID | 0o755, "set-user-id"),
    ],
)
def test_special_entry_modes_are_refused(mode, reason):
    assert reason in mode_problem(mode << 16)


def test_regular_and_unrecorded_modes_are_accepted():
    assert mode_problem((stat.S_IFREG | 0o644) << 16) is None
    assert mode_problem(0) is None  # made on a system that records no Unix mode


def test_size_problems_catch_bombs_lies_counts_and_totals():
    limits = Limits(max_entries=3, max_total_bytes=10 << 20, max_ratio=100, ratio_floor=1 << 20)
    assert size_problems([("a", 2 << 20, 1 << 20, True)], limits=limits) == []
    assert size_problems([("small", 1000, 1, True)], limits=limits) == []  # under the floor
    bomb = size_problems([("b", 8 << 20, 1 << 10, True)], limits=limits)
    assert bomb == ["b expands 8192 times (8388608 bytes from 1024): over the 100x cap"]
    lie = size_problems([("c", 10, 20, False)], limits=limits)
    assert lie == ["c is stored uncompressed but declares 10 bytes in 20"]
    many = size_problems([("x", 1, 1, False)] * 4, limits=limits)
    assert many == ["it holds 4 entries, over the cap of 3"]
    big = size_problems([("y", 6 << 20, 6 << 20, False), ("z", 6 << 20, 6 << 20, False)], limits=limits)
    assert big == [f"its files hold {12 << 20} bytes, over the cap of {10 << 20}"]


@pytest.mark.parametrize(
    ("manifest", "verdict"),
    [
        ({"format": FORMAT, "format_version": 1}, "current"),
        ({"format": FORMAT, "format_version": 2}, "newer"),
        ({"format": FORMAT, "format_version": "1"}, "foreign"),
        ({"format": FORMAT, "format_version": True}, "foreign"),
        ({"format": FORMAT, "format_version": 0}, "foreign"),
        ({"format": "other", "format_version": 1}, "foreign"),
        ({}, "foreign"),
    ],
)
def test_format_verdicts(manifest, verdict):
    assert format_verdict(manifest) == verdict


def good_manifest() -> dict:
    return {
        "session": {"id": "20250101-000000-abcdef", "project": "p"},
        "runs": [{"id": "r1"}],
        "files": [{"path": "catalog.sqlite", "bytes": 10, "sha256": SHA}],
    }


def test_a_well_formed_manifest_has_no_problems():
    assert manifest_problems(good_manifest()) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m: m.pop("session"), "no 'session' object"),
        (lambda m: m["session"].pop("project"), "no project name"),
        (lambda m: m.update(runs=[{"name": "x"}]), "not a list of runs with ids"),
        (lambda m: m.update(files={}), "'files' is not a list"),
        (lambda m: m["files"].append(dict(m["files"][0])), "listed twice"),
        (lambda m: m["files"][0].update(sha256="XYZ"), "has no sha256"),
        (lambda m: m["files"][0].update(bytes=-1), "has no size"),
        (lambda m: m["files"][0].update(path="../catalog.sqlite"), "leaves the bundle folder"),
        (lambda m: m["files"].append({"path": "manifest.json", "bytes": 1, "sha256": SHA}), "lists itself"),
        (lambda m: m["files"][0].update(path="steps/r/a.parquet"), "catalog.sqlite is not listed"),
    ],
)
def test_manifest_problems_are_named(change, problem):
    manifest = good_manifest()
    change(manifest)
    assert any(problem in p for p in manifest_problems(manifest)), manifest_problems(manifest)


def test_large_files_are_deflated_only_when_they_halve():
    zeros, noise = bytes(64 << 10), os.urandom(64 << 10)
    half_noise = os.urandom(32 << 10) + bytes(32 << 10)  # shrinks to about 0.5
    three_quarters = os.urandom(48 << 10) + bytes(16 << 10)
    assert choose_compression(zeros, size=SMALL_FILE * 10)
    assert not choose_compression(noise, size=SMALL_FILE * 10)
    assert not choose_compression(three_quarters, size=SMALL_FILE * 10)
    assert choose_compression(three_quarters, size=SMALL_FILE)  # small: a quarter off pays
    assert not choose_compression(b"", size=0)
    assert not choose_compression(half_noise + os.urandom(4 << 10), size=SMALL_FILE * 10)


def test_samples_are_spread_over_the_file():
    assert sample_offsets(0) == [(0, 0)]
    pieces = sample_offsets(10 << 20)
    assert pieces[0][0] == 0 and pieces[-1][0] + pieces[-1][1] == 10 << 20
    assert all(b[0] > a[0] for a, b in zip(pieces, pieces[1:]))


def test_kinds_and_duplicate_runs():
    assert kind_of("catalog.sqlite") == "catalog" and kind_of("steps/r/a.parquet") == "steps"
    owned = {"a": "s1", "c": "s2"}
    assert duplicate_runs(["a", "b", "c"], owned) == {"a": "s1", "c": "s2"}
    assert duplicate_runs(["b"], owned) == {}
