"""Swaps without waste: a transformer's host copy is made once, in pinned memory, and kept.

Weights never change after loading, so swapping a transformer out of the GPU needs no copy at
all: each parameter points back at its host copy and the GPU memory is freed. Swapping in copies
from pinned memory, which the GPU reads by DMA at the link's full rate (pageable memory goes
through a staging buffer at a fraction of it).

The switch-time estimate in the memory plan comes from a measured pinned copy, rounded to the
class of link it reveals (``bandwidth_class``), not from a constant.
"""

from __future__ import annotations

import time
from typing import Any

GB = 10**9
# Sustained pinned host-to-device rates by link, GB/s; a measurement picks the nearest class.
LINK_CLASSES = {"PCIe 3.0 x16": 12, "PCIe 4.0 x16": 25, "PCIe 5.0 x16": 50, "NVLink-C2C": 400}
DEFAULT_LINK = "PCIe 4.0 x16"  # without a GPU to measure
PROBE_BYTES = 256 * 2**20


def bandwidth_class(bytes_per_s: float) -> tuple[str, int]:
    """The link class nearest (in ratio) to a measured rate, and its bytes per second."""
    import math

    name = min(LINK_CLASSES, key=lambda k: abs(math.log(bytes_per_s / (LINK_CLASSES[k] * GB))))
    return name, LINK_CLASSES[name] * GB


def measure_pinned_bandwidth(device: str = "cuda", nbytes: int = PROBE_BYTES) -> float:
    """Bytes per second of one pinned host-to-device copy (after a warm-up copy)."""
    import torch

    host = torch.empty(nbytes, dtype=torch.uint8).pin_memory()
    target = torch.empty(nbytes, dtype=torch.uint8, device=device)
    target.copy_(host, non_blocking=True)
    torch.cuda.synchronize()
    start = time.perf_counter()
    target.copy_(host, non_blocking=True)
    torch.cuda.synchronize()
    return nbytes / max(time.perf_counter() - start, 1e-9)


class HostCopies:
    """One host copy per parameter and buffer of the swapped modules, made once and kept.

    A module loaded on the host keeps its loaded tensors as the copy (pinned on the first swap
    in); one quantized on the GPU gets its copy on the first swap out. After that, swapping out
    copies nothing and swapping in reads pinned memory."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self._host: dict[tuple[int, str, str], Any] = {}
        self.copies_made = 0

    def _keep(self, key: tuple[int, str, str], tensor: Any) -> Any:
        if key not in self._host:
            copy = tensor.detach() if tensor.device.type == "cpu" else tensor.detach().to("cpu")
            self._host[key] = copy.pin_memory() if self.pin and _pinnable(copy) else copy
            self.copies_made += 1
        return self._host[key]

    def swap_out(self, module: Any) -> int:
        """Point ``module`` at its host copies and let the GPU copy go; returns the bytes copied to the
        host (0 once the copies exist)."""
        from emage_agent.executor.devices import tensor_bytes

        copied = 0
        for key, owner, tensor in _entries(module):
            if key not in self._host:
                copied += tensor_bytes(tensor)
            _assign(owner, key, tensor, self._keep(key, tensor))
        return copied

    def swap_in(self, module: Any, device: str) -> int:
        """Copy ``module``'s weights to ``device`` from the kept (pinned) host copies; returns the bytes."""
        from emage_agent.executor.devices import tensor_bytes

        moved = 0
        for key, owner, tensor in _entries(module):
            if tensor.device.type == device:
                continue
            host = self._keep(key, tensor)
            moved += tensor_bytes(host)
            _assign(owner, key, tensor, host.to(device, non_blocking=self.pin))
        return moved


def _entries(module: Any) -> list[tuple[tuple[int, str, str], Any, Any]]:
    """(key, owning module, tensor) for every parameter and buffer; keys survive the swaps."""
    found = []
    for owner in module.modules():
        for kind in ("_parameters", "_buffers"):
            for name, tensor in getattr(owner, kind).items():
                if tensor is not None:
                    found.append(((id(owner), kind, name), owner, tensor))
    return found


def _assign(owner: Any, key: tuple[int, str, str], current: Any, new: Any) -> None:
    """Plain tensors keep their object (``.data``: compiled code keeps its guards); quantized tensor
    subclasses, which cannot share an implementation, are replaced."""
    import torch

    _id, kind, name = key
    plain = type(current.data) is torch.Tensor and type(new) is torch.Tensor
    if plain and torch._has_compatible_shallow_copy_type(current, new):
        current.data = new
    elif kind == "_parameters":
        owner._parameters[name] = torch.nn.Parameter(new, requires_grad=False)
    else:
        owner._buffers[name] = new


def _pinnable(tensor: Any) -> bool:
    """Plain tensors pin; quantized tensor subclasses may not implement it (they stay pageable)."""
    import torch

    return type(tensor) is torch.Tensor and torch.cuda.is_available()
