"""``emage-agent doctor``: what this machine has, what is missing, and how to get it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from emage_agent.core.settings import Settings
from emage_agent.vlm.choice import Role

GATED_HINT = "accept the licence on its Hugging Face page and set HF_TOKEN"
MODEL_FIELDS = ("base_model", "canny_model", "depth_model", "fill_model", "depth_estimator", "segmenter")


def _model_status(ref: str, has_token: bool) -> tuple[bool, str]:
    """Whether a model setting can be loaded now, and why not."""
    path = Path(ref).expanduser()
    if path.exists():
        ok = (path / "model_index.json").is_file() or (path / "config.json").is_file()
        return ok, "local directory" if ok else "local directory without model_index.json or config.json"
    if ref.startswith((".", "/", "~")):
        return False, "no such directory"
    try:
        from huggingface_hub import try_to_load_from_cache

        for name in ("model_index.json", "config.json"):
            if isinstance(try_to_load_from_cache(ref, name), str):
                return True, "in the Hugging Face cache"
    except Exception:  # noqa: BLE001 - a broken cache is just "not cached"
        pass
    gated = ref.startswith("black-forest-labs/")
    if gated and not has_token:
        return False, f"not downloaded; {GATED_HINT}"
    return True, "will download on first use"


def _vlm_status(settings: Settings, role: Role, has_token: bool) -> tuple[str, str]:
    """Which backend ``role`` will use and whether it can answer: a tiny request to an endpoint, the
    model's presence for the local backend, the key for Gemini (checked on the first call)."""
    from emage_agent.core.errors import EmageError
    from emage_agent.vlm import choose, model_of

    try:
        backend = choose(settings, role)
        if backend == "openai":
            from emage_agent.vlm.openai_compat import OpenAIClient

            client = OpenAIClient(settings)
            try:
                return "ok", f"openai: {client.probe()} (answered)"
            finally:
                client.close()
        if backend == "gemini":
            if settings.gemini_api_key is None:
                return "missing", "gemini: set GEMINI_API_KEY or GOOGLE_API_KEY"
            via = f" via {settings.gemini_base_url}" if settings.gemini_base_url else ""
            return "set", f"gemini: {settings.gemini_model}{via} (key set; checked on the first call)"
        ok, detail = _model_status(settings.local_vlm_model, has_token)
        return ("ok" if ok else "missing"), f"local: {model_of(settings, backend)}: {detail}"
    except ImportError:
        return "missing", "openai: pip install 'emage-agent[openai]'"
    except EmageError as exc:
        return "failed", str(exc)


def memory_plan(
    hw: dict[str, Any],
    vram_gb: float | None,
    quantize: str,
    vlm: str | None = None,
    n_transformers: int = 4,
    settings: Settings | None = None,
) -> dict[str, Any] | None:
    """The memory plan for ``vram_gb`` GiB, else for the first GPU's free memory; None without either.

    ``auto`` asks the card (fp8 from compute capability 8.9); without one it assumes an fp8 card.
    ``vlm``: the local VLM that will judge or plan beside FLUX, counted in the plan. ``speed``: what
    every speed setting resolves to on that card, and why (``executor.speed_choice``).
    """
    from emage_agent.executor.planner import GiB, pipeline_peak, plan_memory, recommend
    from emage_agent.executor.speed_choice import GPU, choose_speed, installed_attention

    if vram_gb is not None:
        vram = int(vram_gb * GiB)
    elif hw["gpus"]:
        vram = int(hw["gpus"][0]["free_gib"] * GiB)
    else:
        return None
    capability = tuple(hw["gpus"][0]["capability"]) if hw["gpus"] else None
    name = hw["gpus"][0]["name"] if hw["gpus"] and vram_gb is None else f"a {vram_gb:g} GiB card"
    gpu = GPU(name=name, capability=capability or (9, 0), free_bytes=vram)
    compile_setting = settings.compile if settings else "auto"
    attention = settings.attention if settings else "auto"
    choice = choose_speed(
        quantize,
        compile_setting,
        attention,
        gpu,
        installed=installed_attention(),
        n_transformers=n_transformers,
        vlm=vlm,
    )
    if capability is None:
        choice.why["quantize"] += " (no GPU here: a Hopper-class card assumed)"
    plan = plan_memory(vram, choice.quantize, vlm=vlm, n_transformers=n_transformers).model_dump(mode="json")
    plan["pipeline_peak_bytes"] = pipeline_peak(choice.quantize)
    plan["speed"] = choice.model_dump(mode="json")
    plan["recommended"] = recommend(vram, capability, vlm=vlm)  # type: ignore[arg-type]
    return plan


def _plan_rows(table: Table, plan: dict[str, Any] | None) -> None:
    if plan is None:
        table.add_row("memory plan", "-", "no GPU: give --vram GB to plan for a card")
        return
    detail = (
        f"{plan['vram_gb']:g} GiB, quantize {plan['quantize']}: peak {plan['peak_bytes'] / 1e9:.1f} GB; "
        f"{plan['advice']}"
    )
    table.add_row("memory plan", plan["residency"] + ("" if plan["fits"] else " (does not fit)"), detail)
    speed = plan["speed"]
    for key in ("quantize", "compile", "attention"):
        table.add_row(f"speed: {key}", speed[key], speed["why"][key])
    table.add_row("recommended", "", plan["recommended"]["env"])


def run_doctor(
    settings: Settings,
    console: Console,
    *,
    vram_gb: float | None = None,
    quantize: str | None = None,
    as_json: bool = False,
) -> int:
    """Print the checks; exit code 0 when a session could start, 2 when something blocks it."""
    from emage_agent.executor.hardware import describe_hardware

    problems: list[str] = []
    table = Table(title="EMage doctor", show_lines=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail")

    hw = describe_hardware()
    gpus = ", ".join(f"{g['name']} ({g['free_gib']:.1f}/{g['total_gib']:.1f} GiB free)" for g in hw["gpus"])
    table.add_row("torch", "ok", hw["torch"])
    if hw["cuda"]:
        table.add_row("GPU", "ok", gpus)
    elif settings.device == "cpu":
        table.add_row("GPU", "cpu", "no CUDA GPU; EMAGE_DEVICE=cpu runs on the CPU (hours for the 12B models)")
    else:
        table.add_row("GPU", "missing", "no CUDA GPU; set EMAGE_DEVICE=cpu to run on the CPU anyway")
        problems.append("GPU")

    token = settings.hf_token is not None
    vlm: dict[str, dict[str, str]] = {}
    for role in ("evaluator", "planner") if settings.planner_vlm else ("evaluator",):
        status, detail = _vlm_status(settings, role, token)  # type: ignore[arg-type]
        vlm[role] = {"status": status, "detail": detail}
        table.add_row(f"VLM ({role})" if settings.planner_vlm else "VLM", status, detail)
        if status not in ("ok", "set"):
            problems.append(f"VLM ({role})" if settings.planner_vlm else "VLM")
    table.add_row(
        "HF_TOKEN", "set" if token else "not set", "" if token else "needed to download the gated FLUX.1 models"
    )
    for field in MODEL_FIELDS:
        ref = getattr(settings, field)
        ok, detail = _model_status(ref, token)
        table.add_row(f"EMAGE_{field.upper()}", "ok" if ok else "missing", f"{ref}: {detail}")
        if not ok:
            problems.append(field)
    # Optional capabilities: missing ones are reported, never blocking (the session runs without them).
    for field, what in (("kontext_model", "the edit tool"), ("detector", "detector verification")):
        ref = getattr(settings, field)
        if ref.strip().lower() in ("", "none", "off"):
            table.add_row(f"EMAGE_{field.upper()}", "off", f"{what} switched off")
            continue
        ok, detail = _model_status(ref, token)
        table.add_row(f"EMAGE_{field.upper()}", "ok" if ok else "optional", f"{ref}: {detail}; for {what}")
    from emage_agent.vlm import local_model

    transformers = 5 if settings.edit_enabled else 4  # base, Canny, Depth, Fill (and Kontext for the edit tool)
    plan = memory_plan(hw, vram_gb, quantize or settings.quantize, local_model(settings), transformers, settings)
    if as_json:
        report = {"ready": not problems, "problems": problems, "hardware": hw, "vlm": vlm, "memory_plan": plan}
        sys.stdout.write(json.dumps(report) + "\n")
        return 2 if problems else 0
    _plan_rows(table, plan)
    console.print(table)
    if problems:
        console.print(f"Not ready: fix {', '.join(problems)} (see above).", markup=False)
        return 2
    console.print("Ready.")
    return 0
