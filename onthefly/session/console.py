"""What the trainer prints: a progress bar on a terminal, quiet lines otherwise.

Warnings are printed once per distinct message, never once per step.
"""

from __future__ import annotations

import sys

__all__ = ["Console"]

_PREFIX = "[onthefly]"


class Console:
    def __init__(self, *, enabled: bool | None = None, stream=None) -> None:
        self._stream = stream or sys.stdout
        self._bar_wanted = enabled if enabled is not None else bool(getattr(self._stream, "isatty", lambda: False)())
        self._bar = None
        self._warned: set[str] = set()
        self._max_epochs: int | None = None
        self._last_postfix_step = -1

    def start(self, max_epochs: int | None, batches_per_epoch: int | None, epoch: int) -> None:
        """Open the progress bar; ``batches_per_epoch`` is None for a stream without a length (no total)."""
        self._max_epochs = max_epochs
        if self._bar_wanted and self._bar is None:
            from tqdm.auto import tqdm

            total = max_epochs * batches_per_epoch if max_epochs and batches_per_epoch is not None else None
            initial = epoch * batches_per_epoch if batches_per_epoch is not None else 0
            self._bar = tqdm(
                total=total,
                initial=initial,
                unit="batch",
                file=self._stream,
                dynamic_ncols=True,
                leave=True,
                desc="train",
            )

    def step(self, step: int, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if step - self._last_postfix_step >= 10:
                self._bar.set_postfix(step=step, loss=f"{loss:.4f}", refresh=False)
                self._last_postfix_step = step

    def epoch_end(self, epoch: int, step: int, loss: float, val_loss: float | None) -> None:
        total = f"/{self._max_epochs}" if self._max_epochs else ""
        line = f"epoch {epoch}{total} · step {step} · loss {loss:.4f}"
        if val_loss is not None:
            line += f" · val_loss {val_loss:.4f}"
        self.note(line)

    def note(self, message: str) -> None:
        text = f"{_PREFIX} {message}"
        if self._bar is not None:
            self._bar.write(text, file=self._stream)
        else:
            print(text, file=self._stream, flush=True)

    def warn(self, message: str, *, level: str = "warning") -> None:
        key = message.split(" at step ")[0]
        if key in self._warned:
            return
        self._warned.add(key)
        self.note(f"{level}: {message}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
