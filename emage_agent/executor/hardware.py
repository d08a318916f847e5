"""A description of the accelerator for ``emage-agent doctor``; reads, never changes, the GPU."""

from __future__ import annotations

from typing import Any


def describe_hardware() -> dict[str, Any]:
    """Torch version, CUDA availability, and each GPU's name, free and total GiB and compute capability."""
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "gpus": []}
    if info["cuda"]:
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            info["gpus"].append(
                {
                    "name": torch.cuda.get_device_name(index),
                    "free_gib": free / 2**30,
                    "total_gib": total / 2**30,
                    "capability": list(torch.cuda.get_device_capability(index)),
                }
            )
    return info
