"""The session layout's names are the on-disk format: bundles written before must still import."""

from __future__ import annotations

from pathlib import Path

from onthefly.store import layout


def test_the_names_are_the_on_disk_format_of_every_earlier_session():
    assert (layout.SESSIONS_DIR, layout.STAGING_DIR) == ("sessions", ".staging")
    assert (layout.MARKER, layout.LOCK, layout.PINNED) == ("SESSION", "LOCK", "PINNED")
    assert (layout.CATALOG, layout.MANIFEST) == ("catalog.sqlite", "manifest.json")
    assert (layout.SAMPLES_DIR, layout.STEPS_DIR, layout.CHECKPOINTS_DIR, layout.RANKS_DIR) == (
        "samples",
        "steps",
        "checkpoints",
        "ranks",
    )
    assert layout.migrate_lock_path("s/catalog.sqlite") == "s/catalog.sqlite.migrate.lock"
    assert layout.checkpoint_file("r1", "ck-0") == "checkpoints/r1/ck-0.safetensors"
    assert layout.samples_folder("r1", "val").as_posix() == "samples/r1/val"
    assert layout.steps_folder("r1").as_posix() == "steps/r1"
    assert layout.rank_prefix(2) == "ranks/2/"


def test_rank_catalogs_lists_the_rank_folders_that_hold_a_catalog_in_rank_order(tmp_path: Path):
    for rank in (10, 2):
        layout.rank_dir(tmp_path, rank).mkdir(parents=True)
        layout.catalog_path(layout.rank_dir(tmp_path, rank)).write_bytes(b"")
    (tmp_path / "ranks" / "3").mkdir()  # no catalog: not a rank folder yet
    assert layout.rank_catalogs(tmp_path) == [
        ("ranks/2/", tmp_path / "ranks" / "2" / "catalog.sqlite"),
        ("ranks/10/", tmp_path / "ranks" / "10" / "catalog.sqlite"),
    ]
    assert layout.rank_catalogs(tmp_path / "none") == []
