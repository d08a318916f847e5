"""``emage-agent doctor``: what this machine has, what is missing, and how to get it."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from emage_agent.config import Settings

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


def run_doctor(settings: Settings, console: Console) -> int:
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

    key = settings.gemini_api_key is not None
    table.add_row("GEMINI_API_KEY", "set" if key else "missing", "" if key else "set GEMINI_API_KEY or GOOGLE_API_KEY")
    if not key:
        problems.append("GEMINI_API_KEY")
    token = settings.hf_token is not None
    table.add_row(
        "HF_TOKEN", "set" if token else "not set", "" if token else "needed to download the gated FLUX.1 models"
    )
    table.add_row(
        "Gemini model",
        "ok",
        settings.gemini_model + (f" via {settings.gemini_base_url}" if settings.gemini_base_url else ""),
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
    console.print(table)
    if problems:
        console.print(f"Not ready: fix {', '.join(problems)} (see above).", markup=False)
        return 2
    console.print("Ready.")
    return 0
