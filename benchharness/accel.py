"""How training runs on the hardware at hand: mixed precision, memory layout, compilation,
where the image tensors live, and the peak-memory figure recorded in every result.

Networks are kept channels_last on every device: oneDNN's convolutions on the CPU run about
twice as fast in that layout as in NCHW (alexnet-small at batch 64, 2-core AVX2 CPU: 1,000 vs
510 training images/s). On CUDA the defaults are also bf16 autocast, images kept on the GPU
(cropped there with roi_align, so the loop never waits for host copies) and non-blocking
copies; on the CPU, fp32. ``amp = "bf16"`` forces autocast on the CPU too (used by the tests
for equivalence).
"""

from __future__ import annotations

import contextlib
import resource
import sys

import torch

AMP_MODES = ("auto", "bf16", "off")


def precision(device: torch.device, amp: str = "auto") -> str:
    """The arithmetic ``amp`` gives on ``device``: ``bf16`` (autocast) or ``fp32``."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    return "bf16" if amp == "bf16" or (amp == "auto" and device.type == "cuda") else "fp32"


def autocast(device: torch.device, amp: str = "auto"):
    """The autocast context for ``device``: bf16 on CUDA under ``auto``, nothing on the CPU."""
    if precision(device, amp) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: torch.nn.Module, device: torch.device, compile_model: bool = False):
    """Move ``model`` to ``device`` in the channels_last layout and optionally ``torch.compile`` it.

    Convolutions given channels_last weights produce channels_last outputs whatever the layout
    of their input, so callers need not convert their batches."""
    model = model.to(device, memory_format=torch.channels_last)
    return torch.compile(model) if compile_model else model


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy to ``device``; pinned and non-blocking when going from host to GPU."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def images_home(images: torch.Tensor, device: torch.device, max_gpu_bytes: float = 8e9) -> torch.Tensor:
    """Where a split's uint8 images live: on the GPU when they fit the budget, else the host."""
    if device.type == "cuda" and images.numel() <= max_gpu_bytes:
        return to_device(images, device)
    return images


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement (CUDA only; host RSS peaks cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA, else this process's peak resident memory, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
