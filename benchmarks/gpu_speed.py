"""Benchmark: seconds per image and per edit, tool-switch cost and peak memory, per speed setting.

Full size (the default) builds the real FLUX.1 transformers, T5-XXL, CLIP-L and the VAE from the
shipped configs with random weights directly on the GPU (no download: speed and memory do not
depend on the weights' values) and times 1024x1024, 28-step generate and each edit tool for
each configuration. ``--tiny`` runs the same code on the tiny random-weight family on the CPU.
Prints a table and writes JSON.

    python benchmarks/gpu_speed.py                       # full size, one CUDA GPU
    python benchmarks/gpu_speed.py --vram-limit 24       # what a 24 GB card would get
    python benchmarks/gpu_speed.py --tiny                # CPU, tiny models
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emage_agent.core.settings import Settings  # noqa: E402
from emage_agent.executor import Executor  # noqa: E402

# name -> settings; fp8 and nf4 need CUDA, so the CPU run skips them
CONFIGS: dict[str, dict[str, Any]] = {
    "bf16 eager": {},
    "compile": {"compile": "regional"},
    "int8": {"quantize": "int8"},
    "first_block": {"step_cache": "first_block"},
    "fp8": {"quantize": "fp8"},
    "fp8+compile": {"quantize": "fp8", "compile": "regional"},
    "fp8+compile+fbc": {"quantize": "fp8", "compile": "regional", "step_cache": "first_block"},
    "nf4": {"quantize": "nf4"},
}
CUDA_ONLY = ("fp8", "nf4")
PROMPT = "a red fox sitting on the roof of a blue car, golden hour"
GiB = 1024**3


def cuda() -> Any:
    import torch

    return torch.cuda if torch.cuda.is_available() else None


def base_settings(args: argparse.Namespace, family: Any, device: str) -> Settings:
    values: dict[str, Any] = {"device": device, "compile_backend": args.compile_backend}
    if device == "cuda":
        values["dtype"] = "bfloat16"
    return family.settings(**values)


def executor_for(settings: Settings, args: argparse.Namespace, family: Any) -> Executor:
    executor = Executor(settings)
    if not args.tiny:
        from emage_agent.executor.synthetic import SyntheticLoader

        manager = executor.models()
        keep_on_host = manager.policy != "resident"
        manager.use_loader(SyntheticLoader(executor._counters, str(family.base), "cuda", keep_on_host))
    return executor


def box_mask(size: int) -> Any:
    from PIL import Image, ImageDraw

    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle([size // 4, size // 4, 3 * size // 4, 3 * size // 4], fill=255)
    return mask


def timed(executor: Executor, tool: str, call: dict[str, Any], images: dict[str, Any], repeats: int) -> dict[str, Any]:
    """First call (loads, compiles) and the median of ``repeats`` more."""
    first = executor.run(tool, call, images)
    times = [executor.run(tool, call, images).seconds for _ in range(repeats)]
    return {"first_s": round(first.seconds, 3), "s": round(statistics.median(times), 3), "image": first.image}


def run_config(name: str, extra: dict[str, Any], args: argparse.Namespace, family: Any, device: str) -> dict[str, Any]:
    gpu = cuda() if device == "cuda" else None
    settings = base_settings(args, family, device).model_copy(update=extra)
    row: dict[str, Any] = {"config": name, **{k: getattr(settings, k) for k in ("quantize", "compile", "step_cache")}}
    row["dtype"] = "bfloat16" if device == "cuda" else "float32"
    if gpu is not None:
        gpu.reset_peak_memory_stats()
    size, steps = args.size, args.steps
    common = {"prompt": PROMPT, "steps": steps, "seed": 1}
    start = time.perf_counter()
    with executor_for(settings, args, family) as executor:
        executor.models()
        row["residency"] = executor.counters.residency
        gen = timed(executor, "generate", {**common, "width": size, "height": size}, {}, args.repeats)
        row["generate_first_s"], row["generate_s"] = gen["first_s"], gen["s"]
        image = gen["image"]
        mask = box_mask(size)  # CLIPSeg is not what this benchmark measures
        for tool, images in (
            ("canny_edit", {"image": image}),
            ("depth_edit", {"image": image}),
            ("inpaint", {"image": image, "mask": mask}),
        ):
            row[f"{tool}_s"] = timed(executor, tool, common, images, args.repeats)["s"]
        counters = executor.counters
        row["switch_bytes"] = counters.bytes_to_device
        row["graphs_compiled"], row["recompiles"] = counters.graphs_compiled, counters.recompiles
        row["transformer_mb"] = round(counters.weight_bytes.get("transformer:base", 0) / 1e6, 3)
    row["total_s"] = round(time.perf_counter() - start, 1)
    row["peak_gb"] = round(gpu.max_memory_allocated() / 1e9, 2) if gpu is not None else None
    return row


def switch_costs(args: argparse.Namespace, family: Any, device: str, extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Seconds and bytes of one generate -> canny switch, per residency (resident only on the CPU)."""
    rows = []
    for residency in ("resident", "swap", "offload") if device == "cuda" else ("resident",):
        settings = base_settings(args, family, device).model_copy(update={**extra, "residency": residency})
        try:
            rows.append(switch_cost(settings, args, family, device, residency))
        except Exception as exc:  # noqa: BLE001 - e.g. resident bf16 on a card too small for it
            rows.append({"residency": residency, "skipped": f"{type(exc).__name__}: {exc}"[:200]})
        gc.collect()
        if device == "cuda":
            cuda().empty_cache()
    return rows


def switch_cost(
    settings: Settings, args: argparse.Namespace, family: Any, device: str, residency: str
) -> dict[str, Any]:
    """Build two tools' pipelines, then time one switch between them."""
    with executor_for(settings, args, family) as executor:
        manager = executor.models()
        manager.activate("generate")
        manager.activate("canny_edit")
        manager.activate("generate")
        before = executor.counters.bytes_to_device
        start = time.perf_counter()
        manager.activate("canny_edit")
        if cuda() is not None and device == "cuda":
            cuda().synchronize()
        return {
            "residency": residency,
            "switch_s": round(time.perf_counter() - start, 4),
            "bytes_to_device": executor.counters.bytes_to_device - before,
        }


def table(rows: list[dict[str, Any]]) -> str:
    cols = ["config", "dtype", "residency", "generate_s", "generate_first_s", "canny_edit_s", "depth_edit_s"]
    cols += ["inpaint_s", "peak_gb", "transformer_mb", "recompiles"]
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for row in rows:
        if "skipped" in row:
            lines.append(" | ".join([row["config"], f"skipped: {row['skipped']}"] + [""] * (len(cols) - 2)))
        else:
            lines.append(" | ".join(str(row.get(c, "")) for c in cols))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random-weight family on the CPU")
    parser.add_argument("--size", type=int, default=None, help="image side (default 1024, tiny 64)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 28, tiny 10)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after the first")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help="comma-separated names from: " + ", ".join(CONFIGS)
    )
    parser.add_argument("--vram-limit", type=float, default=None, help="cap GPU memory at this many GiB")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--out", type=Path, default=Path("gpu_speed.json"), help="where to write the JSON")
    args = parser.parse_args()
    args.size = args.size or (64 if args.tiny else 1024)
    args.steps = args.steps or (10 if args.tiny else 28)
    gpu = cuda()
    device = "cpu" if args.tiny or gpu is None else "cuda"
    if device == "cpu" and not args.tiny:
        sys.exit("no CUDA GPU: run with --tiny for the CPU version")
    if args.vram_limit and gpu is not None:
        total = gpu.get_device_properties(0).total_memory
        gpu.set_per_process_memory_fraction(min(1.0, args.vram_limit * GiB / total))
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        sys.exit(f"unknown configs {unknown}; choose from {list(CONFIGS)}")
    from tests.support.tiny_family import build_tiny_family

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        family = build_tiny_family(Path(tmp))  # the models for --tiny, the tokenizers for full size
        for name in names:
            extra = CONFIGS[name]
            if device == "cpu" and extra.get("quantize") in CUDA_ONLY:
                rows.append({"config": name, "skipped": "needs CUDA"})
                continue
            try:
                rows.append(run_config(name, extra, args, family, device))
            except Exception as exc:  # noqa: BLE001 - one failing setting must not hide the others
                rows.append({"config": name, "skipped": f"{type(exc).__name__}: {exc}"[:200]})
            print(table(rows[-1:]).splitlines()[-1], flush=True)
            gc.collect()
            if gpu is not None and device == "cuda":
                gpu.empty_cache()
        switches = switch_costs(args, family, device, {})
    from emage_agent.executor.planner import recommend

    card = None
    if device == "cuda":
        limit = args.vram_limit * GiB if args.vram_limit else gpu.mem_get_info()[1]
        card = {
            "name": gpu.get_device_name(0),
            "vram_gib": round(limit / GiB, 1),
            "recommended": recommend(int(limit), gpu.get_device_capability(0)),
        }
    report = {"device": device, "card": card, "size": args.size, "steps": args.steps, "rows": rows}
    report["switch"] = switches
    print()
    print(f"{device}, {args.size}x{args.size}, {args.steps} steps, median of {args.repeats} after a first call")
    print(table(rows))
    print()
    for s in switches:
        if "skipped" in s:
            print(f"tool switch ({s['residency']}): skipped: {s['skipped']}")
            continue
        print(f"tool switch ({s['residency']}): {s['switch_s']} s, {s['bytes_to_device'] / 1e9:.2f} GB to the device")
    if card:
        print(f"recommended for {card['name']} ({card['vram_gib']} GiB): {card['recommended']['env']}")
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
