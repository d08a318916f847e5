"""Every weight the executor reads from disk goes through ``load``, which counts the bytes.

A setting is a hub id or a local directory in the hub's layout; both go to the standard
``from_pretrained``. The byte count is the size of the weight files that call reads (the
cached snapshot's files for a hub id), so a benchmark sees real disk traffic, not tensor sizes.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from emage_agent.core.errors import UserError
from emage_agent.core.settings import Settings
from emage_agent.executor.types import ExecutorCounters

log = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
# Files such as "model.fp16.safetensors" are alternative variants, not read by a plain load.
_VARIANT = re.compile(r"\.(fp16|bf16|fp32|fp8)\.")


def _folder(source: str, subfolder: str | None) -> Path | None:
    """The directory holding the weight files: local, or the hub cache's snapshot."""
    local = Path(source).expanduser()
    if local.is_dir():
        return local / subfolder if subfolder else local
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(source, f"{subfolder}/config.json" if subfolder else "config.json")
    except Exception:  # noqa: BLE001 - accounting must never break loading
        return None
    return Path(found).parent if isinstance(found, str) else None


def weight_bytes(source: str, subfolder: str | None = None) -> int:
    """Bytes of the weight files ``from_pretrained(source, subfolder=...)`` reads.

    safetensors win over pickles when both are present, as in diffusers and transformers.
    """
    folder = _folder(source, subfolder)
    if folder is None or not folder.is_dir():
        return 0
    files = [f for f in folder.iterdir() if f.suffix in _WEIGHT_SUFFIXES and not _VARIANT.search(f.name)]
    chosen = [f for f in files if f.suffix == ".safetensors"] or files
    return sum(f.stat().st_size for f in chosen)


def _dtype_kwarg() -> str:
    """transformers took ``torch_dtype`` before 4.56 and ``dtype`` since (the old name warns)."""
    import transformers

    major, minor = (int(part) for part in re.findall(r"\d+", transformers.__version__)[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


class Loader:
    """``from_pretrained`` with the token, the dtype, the counters and errors that name the setting."""

    def __init__(self, settings: Settings, counters: ExecutorCounters) -> None:
        self._token = settings.hf_token.get_secret_value() if settings.hf_token else None
        self._counters = counters

    def load(
        self,
        component: str,
        cls: Any,
        source: str,
        *,
        field: str,
        subfolder: str | None = None,
        dtype: Any = None,
        library: str = "diffusers",
        weights: bool = True,
        quantization: Any = None,
        device_map: str | None = None,
    ) -> Any:
        """Load ``cls`` from ``source``; ``field`` is the setting to blame when that fails.

        ``weights=False`` for tokenizers, processors and schedulers, which read only small
        text files even when weight files sit beside them. ``quantization`` is a diffusers or
        transformers ``quantization_config``, applied while the weights load; ``device_map``
        puts the weights (and so the quantizing) straight on that device.
        """
        kwargs: dict[str, Any] = {}
        if subfolder:
            kwargs["subfolder"] = subfolder
        if self._token:
            kwargs["token"] = self._token
        if dtype is not None:
            kwargs["torch_dtype" if library == "diffusers" else _dtype_kwarg()] = dtype
        if quantization is not None:
            kwargs["quantization_config"] = quantization
        if device_map is not None:
            kwargs["device_map"] = device_map
        log.info("loading %s from %s%s", component, source, f" ({subfolder})" if subfolder else "")
        try:
            loaded = cls.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as exc:
            where = f"{source}/{subfolder}" if subfolder else source
            raise UserError(
                f"cannot load the {component} from {where!r} ({type(exc).__name__}: {exc}); "
                "give a hub id you can access or a local directory in the hub's layout",
                field=field,
            ) from exc
        self._counters.count_load(component, weight_bytes(source, subfolder) if weights else 0)
        return loaded
