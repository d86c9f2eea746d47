"""Step metrics: gradient norm, throughput, timings, memory.

Everything here is cheap enough to run every step: the gradient norm is one
fused reduction on the device, memory is read from the OS every few steps.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable

import torch

__all__ = ["total_grad_norm", "StepMeter", "gpu_probe"]


def total_grad_norm(parameters: Iterable[torch.Tensor]) -> torch.Tensor | None:
    """The L2 norm of all gradients as a 0-dim tensor on their device (no sync).

    Uses the foreach kernels: one launch per device and dtype, no per-parameter
    ``.item()``. Returns None when no parameter has a gradient.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    first = grads[0]
    if all(g.device == first.device and g.dtype == first.dtype and not g.is_sparse for g in grads):
        # The common case, without get_total_norm's per-call grouping (a third of the cost on small models).
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if get_total_norm is not None:
        return get_total_norm(grads, norm_type=2.0)
    norms = torch._foreach_norm(grads, 2.0)
    return torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]), 2.0)


class _Memory:
    """Process RSS in MB, read at most every ``every`` calls."""

    def __init__(self, every: int = 10) -> None:
        self.every = every
        self._n = 0
        self._last: float | None = None
        try:
            import psutil

            self._proc = psutil.Process(os.getpid())
        except Exception:  # psutil missing or unsupported: no RSS column
            self._proc = None

    def rss_mb(self) -> float | None:
        if self._proc is None:
            return None
        if self._n % self.every == 0:
            try:
                self._last = self._proc.memory_info().rss / 2**20
            except Exception:
                self._proc = None
        self._n += 1
        return self._last


_gpu_note_given = False


def gpu_probe(device: torch.device):
    """A callable returning (gpu_mem_mb, gpu_util) through NVML, or None without a GPU or pynvml.

    On a CUDA device without ``pynvml`` (``pip install "onthefly-ai[metrics]"``
    installs nvidia-ml-py, which provides it), or when NVML does not start, the
    GPU columns stay empty and one line says so, once per process.
    """
    if device.type != "cuda":
        return None
    try:
        import pynvml
    except ImportError:
        _gpu_note(
            "GPU metrics (gpu_mem_mb, gpu_util) are off: nvidia-ml-py is not installed; "
            'pip install "onthefly-ai[metrics]" to record them'
        )
        return None
    try:
        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception as exc:
        _gpu_note(f"GPU metrics (gpu_mem_mb, gpu_util) are off: NVML did not start ({type(exc).__name__}: {exc})")
        return None

    def probe() -> tuple[float, float]:
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        util = pynvml.nvmlDeviceGetUtilizationRates(handle)
        return mem.used / 2**20, float(util.gpu)

    return probe


def _gpu_note(message: str) -> None:
    global _gpu_note_given
    if not _gpu_note_given:
        _gpu_note_given = True
        print(f"[onthefly] {message}", file=sys.stderr, flush=True)


class StepMeter:
    """Times the data wait and the compute of each step and builds its metrics row."""

    def __init__(self, device: torch.device, *, gpu_every: int = 20) -> None:
        self._memory = _Memory()
        self._gpu = gpu_probe(device)
        self._gpu_every = gpu_every
        self._gpu_last: tuple[float, float] | None = None
        self._n = 0
        self._t_data = 0.0
        self._t_compute = 0.0
        self._samples = 0
        self._mark = time.perf_counter()

    def data_start(self) -> None:
        self._mark = time.perf_counter()

    def data_end(self) -> None:
        now = time.perf_counter()
        self._t_data += now - self._mark
        self._mark = now

    def compute_end(self, samples: int) -> None:
        now = time.perf_counter()
        self._t_compute += now - self._mark
        self._mark = now
        self._samples += samples

    def row(self, *, step: int, epoch: int, loss: float, lr: float | None, grad_norm: float | None) -> dict:
        """The metrics of the optimizer step just finished; resets the timers."""
        elapsed = self._t_data + self._t_compute
        row = {
            "step": step,
            "epoch": epoch,
            "time": time.time(),
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "samples_per_s": (self._samples / elapsed) if elapsed > 0 else None,
            "data_ms": self._t_data * 1e3,
            "compute_ms": self._t_compute * 1e3,
            "rss_mb": self._memory.rss_mb(),
        }
        if self._gpu is not None:
            if self._n % self._gpu_every == 0:
                try:
                    self._gpu_last = self._gpu()
                except Exception:
                    self._gpu = None
            if self._gpu_last is not None:
                row["gpu_mem_mb"], row["gpu_util"] = self._gpu_last
        self._n += 1
        self._t_data = self._t_compute = 0.0
        self._samples = 0
        return row
