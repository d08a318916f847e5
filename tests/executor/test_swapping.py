"""Swaps without waste: host copies made once, swapping out copies nothing back; the link's class."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from emage_agent.executor.planner import GB, GiB, plan_memory
from emage_agent.executor.swapping import HostCopies, bandwidth_class


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.LayerNorm(16))
    model.register_buffer("scale", torch.ones(3))
    return model


def test_swapping_out_reuses_the_host_copy_and_copies_nothing() -> None:
    model, x = _model(), torch.randn(2, 32)
    reference = model(x)
    copies = HostCopies(pin=False)
    moved = copies.swap_in(model, "meta")  # "meta" stands in for the GPU: a device the host is not
    assert moved == sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert model[0].weight.device.type == "meta" and copies.copies_made == 5  # 2 weights, 2 biases, 1 buffer
    assert copies.swap_out(model) == 0  # the loaded tensors are the host copy: nothing copied back
    pointer = model[0].weight.data_ptr()
    assert torch.equal(model(x), reference)
    for _ in range(2):
        copies.swap_in(model, "meta")
        assert copies.swap_out(model) == 0 and model[0].weight.data_ptr() == pointer
    assert copies.copies_made == 5


def test_a_quantized_module_made_on_the_device_is_copied_to_the_host_once() -> None:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    model, x = _model(), torch.randn(2, 32)
    quantize_(model, Int8WeightOnlyConfig())
    reference = model(x)
    copies = HostCopies(pin=False)
    copies.swap_in(model, "meta")
    assert type(model[0].weight).__name__ == "Int8Tensor" and model[0].weight.device.type == "meta"
    copies.swap_out(model)
    assert model[0].weight.device.type == "cpu" and torch.equal(model(x), reference)


def test_the_link_class_comes_from_a_measured_rate_and_feeds_the_plan() -> None:
    assert bandwidth_class(22.7e9) == ("PCIe 4.0 x16", 25 * GB)
    assert bandwidth_class(10.5e9)[0] == "PCIe 3.0 x16" and bandwidth_class(48e9)[0] == "PCIe 5.0 x16"
    assert bandwidth_class(350e9)[0] == "NVLink-C2C"
    slow, fast = (plan_memory(24 * GiB, "fp8", bus_bytes_per_s=b, link=n) for n, b in (("3", 12 * GB), ("5", 50 * GB)))
    assert slow.residency == fast.residency == "swap"
    assert slow.tool_switch_seconds == pytest.approx(slow.tool_switch_bytes / (12 * GB), abs=0.01)
    assert slow.tool_switch_seconds > 4 * fast.tool_switch_seconds - 0.05


@pytest.mark.gpu
def test_gpu_swaps_copy_nothing_back(tiny_settings: Any, tiny_image: Any) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from emage_agent.executor import Executor

    settings = tiny_settings.model_copy(update={"device": "cuda", "dtype": "auto", "residency": "swap"})
    args = {"prompt": "a fox", "seed": 11, "width": 64, "height": 64, "steps": 2}
    with Executor(settings) as ex:
        first = ex.run("generate", args)
        ex.run("canny_edit", {"prompt": "a fox", "seed": 11, "steps": 2}, {"image": tiny_image})
        again = ex.run("generate", args)
        counters = ex.counters
    assert counters.bytes_to_host == 0 and counters.bytes_to_device > 0
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
