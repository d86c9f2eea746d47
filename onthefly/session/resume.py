"""Finding and applying the checkpoint a fit resumes from.

``resume_from`` may be a checkpoint id (``ck-…``), ``"<session>/<run>"``
(that run's latest checkpoint; the run by id or name), a path to a
``.safetensors`` checkpoint file, or a session bundle: ``"FILE.zip"`` (the
latest checkpoint of the bundle's last run that has one) or
``"FILE.zip#<run>"`` (that run, by id or name). A bundle is imported into the
store first (pinned, so later clean-ups keep it; importing it again finds it
there). The checkpoint is read completely before the new session opens, so the
clean-up of earlier sessions cannot take it away.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, OnTheFlyError
from ..store.catalog.catalog import Catalog
from ..store.checkpoints.checkpoints import CheckpointData, load_checkpoint
from ..store.layout import catalog_path
from ..store.lifecycle import StoreRoot

__all__ = ["ResumePoint", "apply_checkpoint", "bundle_reference", "ensure_run", "locate_checkpoint"]


@dataclass(frozen=True)
class ResumePoint:
    data: CheckpointData
    checkpoint_id: str | None
    session_id: str | None
    run: dict[str, Any] | None  # the run the checkpoint belongs to: id, name, kind, status


def locate_checkpoint(resume_from: str | os.PathLike[str], *, store: StoreRoot) -> ResumePoint:
    """Read the checkpoint ``resume_from`` names.

    Raises:
        ConfigError: when the reference matches nothing, with what exists.
        BundleError: a bundle that cannot be imported (malformed, hostile, newer format).
    """
    ref = os.fspath(resume_from)
    bundle = bundle_reference(ref)
    if bundle is not None:
        return _from_bundle(*bundle, store)
    path = Path(ref)
    if ref.endswith(".safetensors") or (path.is_file() and not ref.startswith("ck-")):
        if not path.is_file():
            raise ConfigError(f"resume_from={ref!r}: no such checkpoint file; check the path")
        data = load_checkpoint(path)
        return ResumePoint(data, data.extra.get("checkpoint_id"), data.extra.get("session_id"), data.extra.get("run"))
    if ref.startswith("ck-"):
        return _by_checkpoint_id(ref, store)
    if "/" in ref:
        session_id, run_ref = ref.split("/", 1)
        return _by_run(session_id, run_ref, store)
    raise ConfigError(
        f"resume_from={ref!r} is not a checkpoint id ('ck-…'), a '<session>/<run>' reference or a .safetensors path; "
        "`onthefly ls` lists sessions and runs"
    )


def bundle_reference(ref: str) -> tuple[str, str | None] | None:
    """Split ``"FILE.zip"`` or ``"FILE.zip#<run>"`` into ``(file, run)``; None for other references.

    Example:
        >>> bundle_reference("runs/mnist.zip#baseline"), bundle_reference("ck-1a2b")
        (('runs/mnist.zip', 'baseline'), None)
    """
    if ref.lower().endswith(".zip"):
        return ref, None
    cut = ref.lower().rfind(".zip#")
    if cut < 0:
        return None
    return ref[: cut + 4], ref[cut + 5 :] or None


def _from_bundle(bundle: str, run_ref: str | None, store: StoreRoot) -> ResumePoint:
    from ..store.bundle.import_ import import_bundle

    entry = import_bundle(bundle, store=store)
    if run_ref is not None:
        return _by_run(entry.id, run_ref, store)
    with Catalog.open(catalog_path(entry.dir), readonly=True) as catalog:
        with_checkpoint = [run for run in catalog.runs() if catalog.latest_checkpoint(run.id) is not None]
        if not with_checkpoint:
            raise ConfigError(
                f"resume_from={bundle!r}: no run of the bundle's session {entry.id} has a checkpoint, "
                "so there is nothing to resume; export the session again after a checkpoint was saved"
            )
        run = with_checkpoint[-1]
        return _read(catalog, entry.dir, catalog.latest_checkpoint(run.id).id, entry.id)


def _read(catalog: Catalog, session_dir: Path, checkpoint_id: str, session_id: str) -> ResumePoint:
    info = catalog.checkpoint(checkpoint_id)
    data = load_checkpoint(session_dir / info.path, sha256=info.sha256)
    run = catalog.run(info.run_id)
    return ResumePoint(
        data,
        info.id,
        session_id,
        {"id": run.id, "name": run.name, "kind": run.kind, "status": run.status, "config": run.config},
    )


def _by_checkpoint_id(checkpoint_id: str, store: StoreRoot) -> ResumePoint:
    for entry in store.list_sessions():
        if entry.error:
            continue
        try:
            with Catalog.open(catalog_path(entry.dir), readonly=True) as catalog:
                ids = {c.id for c in catalog.checkpoints()}
                if checkpoint_id in ids:
                    return _read(catalog, entry.dir, checkpoint_id, entry.id)
        except OnTheFlyError:
            continue
    raise ConfigError(
        f"resume_from={checkpoint_id!r}: no session under {store.root} has this checkpoint "
        "(sessions are cleaned up when a new one starts unless exported or pinned); `onthefly ls` lists what exists"
    )


def _by_run(session_id: str, run_ref: str, store: StoreRoot) -> ResumePoint:
    session_dir = store.session_dir(session_id)
    with Catalog.open(catalog_path(session_dir), readonly=True) as catalog:
        runs = catalog.runs()
        matches = [r for r in runs if r.id == run_ref] or [r for r in runs if r.name == run_ref]
        if not matches:
            names = ", ".join(f"{r.name} ({r.id})" for r in runs) or "none"
            raise ConfigError(f"resume_from: session {session_id} has no run {run_ref!r}; its runs: {names}")
        run = matches[-1]
        latest = catalog.latest_checkpoint(run.id)
        if latest is None:
            raise ConfigError(f"resume_from: run {run.name} ({run.id}) of session {session_id} has no checkpoint")
        return _read(catalog, session_dir, latest.id, session_id)


def apply_checkpoint(data: CheckpointData, *, model: torch.nn.Module, optimizer, scheduler=None, scaler=None) -> None:
    """Load a checkpoint's states into the training objects.

    Raises:
        ConfigError: when the checkpoint does not match the model or optimizer,
            naming the keys that differ.
    """
    try:
        model.load_state_dict(data.model, strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"resume_from does not match this model: {str(exc).splitlines()[0]} … "
            "Resume with the same model definition the checkpoint was saved from"
        ) from exc
    if data.optimizer is not None:
        try:
            optimizer.load_state_dict(data.optimizer)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ConfigError(
                f"resume_from's optimizer state does not fit this optimizer: {exc}. "
                "Use the same optimizer class and parameter groups as the original run"
            ) from exc
    if scheduler is not None and data.scheduler is not None:
        scheduler.load_state_dict(data.scheduler)
    if scaler is not None and data.scaler is not None:
        scaler.load_state_dict(data.scaler)


def ensure_run(catalog: Catalog, run: dict[str, Any]) -> None:
    """Copy the resumed-from run's record (``ResumePoint.run``) into a session's catalog, so lineage resolves there."""
    if run["id"] not in {r.id for r in catalog.runs()}:
        catalog.add_run(
            run_id=run["id"],
            name=run.get("name") or "run",
            kind="imported",
            status=run.get("status") or "finished",
            config=run.get("config"),
        )
