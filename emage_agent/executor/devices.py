"""Device, dtype and residency decisions, and the one place modules cross the host/device bus.

``resolve_device`` is importable without loading any model, so the CLI can fail fast on a machine
without a GPU; the residency policy itself is the memory planner's (``planner.plan_memory``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from emage_agent.core.errors import UserError
from emage_agent.core.settings import Settings

if TYPE_CHECKING:
    import torch

    from emage_agent.executor.types import ExecutorCounters

Policy = Literal["resident", "swap", "offload"]
GiB = 1024**3
# Room for activations, the VAE decode and the allocator's slack at 1024x1024 in bfloat16
# (``activations.activation_bytes`` has it as a function of the image size).
DEFAULT_HEADROOM = 4 * GiB + GiB // 2


def resolve_device(settings: Settings) -> str:
    """``cuda`` or ``cpu``; ``auto`` never silently falls back to hours of CPU work."""
    import torch

    if settings.device == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        if settings.device == "cuda":
            raise UserError("EMAGE_DEVICE is cuda but no CUDA GPU is visible to torch", field="EMAGE_DEVICE")
        raise UserError(
            "no CUDA GPU found; set EMAGE_DEVICE=cpu to run on the CPU (hours for the 12B models)",
            field="EMAGE_DEVICE",
        )
    return "cuda"


def resolve_dtype(settings: Settings, device: str) -> torch.dtype:
    """bfloat16 on CUDA (what FLUX.1 was trained in), float32 on the CPU, unless set."""
    import torch

    if settings.dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, settings.dtype)


def free_device_bytes(device: str) -> int:
    import torch

    if device != "cuda":
        return 0
    free, total = torch.cuda.mem_get_info()
    # A process capped with set_per_process_memory_fraction can use no more than its share.
    fraction = torch.cuda.get_per_process_memory_fraction()
    cap = int(fraction * total) - torch.cuda.memory_reserved()
    return int(min(free, cap))


def module_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers: what a move across the bus carries."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(tensor_bytes(t) for t in tensors)


def tensor_bytes(tensor: Any) -> int:
    """Bytes a tensor really holds: a quantized tensor subclass is summed over its inner tensors.

    torchao's quantized weights report the original dtype's ``element_size``; their storage is
    the int8/fp8 data and the scales that ``__tensor_flatten__`` names.
    """
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None:
        names, _ctx = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    nbytes = tensor.numel() * tensor.element_size()
    state = getattr(tensor, "quant_state", None)  # bitsandbytes 4-bit: packed uint8 data plus absmax
    absmax = getattr(state, "absmax", None)
    if absmax is not None:
        nbytes += absmax.numel() * absmax.element_size()
    return nbytes


def module_device(module: Any) -> str:
    for tensor in module.parameters():
        return tensor.device.type
    return "cpu"


def move(module: Any, device: str, counters: ExecutorCounters) -> None:
    """Move ``module`` to ``device`` (``cpu`` or ``cuda``), counting the bytes that cross."""
    current = module_device(module)
    if current == device:
        return
    nbytes = module_bytes(module)
    module.to(device)
    if device == "cpu":
        counters.bytes_to_host += nbytes
    else:
        counters.bytes_to_device += nbytes
