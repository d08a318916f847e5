"""The executor: one entry point, ``run``, for every tool EMage executes on its own hardware.

Arguments are checked against the tool's contract and images are checked before any model
loads; models load on first use and stay. Failures keep EMage's three kinds apart: bad input
is ``InvalidArgument``, the planner's unusable request is ``ModelMistake``, and anything that
breaks while running becomes ``ExecutionFailure`` so the session records it and stays resumable.
"""

from __future__ import annotations

import importlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from emage_agent.core.errors import EmageError, ExecutionFailure, InvalidArgument, UserError
from emage_agent.core.settings import Settings
from emage_agent.core.tools import get_tool, validate_arguments
from emage_agent.executor import inputs
from emage_agent.executor.generation import CallbackRaised
from emage_agent.executor.types import ExecutorCounters, ToolOutput

log = logging.getLogger(__name__)

SEED_LIMIT = 2**32


class Executor:
    """Runs FLUX.1 tools and mask making; thread-safe, one tool at a time on the device."""

    def __init__(self, settings: Settings, local_vlm: str | None = None, long_lived: bool = False) -> None:
        """``local_vlm``: the local VLM model that shares this device (its bytes join the memory plan);
        ``long_lived``: this process serves many sessions (``auto`` speed settings count on it)."""
        self.settings = settings
        self.local_vlm = local_vlm
        self.long_lived = long_lived
        self._counters = ExecutorCounters()
        self._manager: Any = None
        self._lock = threading.RLock()

    @property
    def counters(self) -> ExecutorCounters:
        """A snapshot: later runs do not change the object returned."""
        return self._counters.model_copy(deep=True)

    def models(self) -> Any:
        """The model manager (created on first use; resolving the device may raise ``UserError``)."""
        with self._lock:
            if self._manager is None:
                from emage_agent.executor.models import ModelManager

                self._manager = ModelManager(
                    self.settings, self._counters, local_vlm=self.local_vlm, long_lived=self.long_lived
                )
            return self._manager

    def run(
        self,
        tool: str,
        args: dict[str, Any] | None,
        images: dict[str, Image.Image] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> ToolOutput:
        """Run ``tool``; ``images`` holds ``image`` (and ``mask`` for inpaint) as PIL images."""
        args, checked = _check(tool, args, images)
        if not get_tool(tool).available(self.settings.edit_enabled):
            raise UserError(
                f"{tool} is switched off; set EMAGE_KONTEXT_MODEL to a FLUX.1 Kontext model to use it",
                field="EMAGE_KONTEXT_MODEL",
            )
        with self._lock:
            manager = self.models()
            start = time.perf_counter()
            try:
                output = _dispatch(manager, tool, args, checked, on_step)
                if "region" in checked and output.image is not None:
                    output = _within_region(output, checked["image"], checked["region"])
            except CallbackRaised as raised:
                raise raised.original from None
            except EmageError:
                raise
            except Exception as exc:
                raise _failure(tool, exc) from exc
            finally:
                seconds = time.perf_counter() - start
                self._counters.count_call(tool, seconds)
        log.info("%s took %.2fs", tool, seconds)
        return output.model_copy(update={"seconds": seconds})

    def detect(self, image: Image.Image, labels: list[str]) -> list[Any]:
        """The detector's confident boxes for ``labels`` (``verification.Detection``); [] when it is off."""
        if not self.settings.detector_enabled or not labels:
            return []
        image = inputs.rgb_image({"image": image}, edit=False)
        with self._lock:
            manager = self.models()
            start = time.perf_counter()
            try:
                from emage_agent.executor.detection import detect

                return detect(manager, image, labels, self.settings.detector_threshold)
            except EmageError:
                raise
            except Exception as exc:
                raise _failure("detect", exc) from exc
            finally:
                self._counters.count_call("detect", time.perf_counter() - start)

    def close(self) -> None:
        """Free every model; a later ``run`` loads again (and the counters will show it)."""
        with self._lock:
            if self._manager is not None:
                self._manager.close()
                self._manager = None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _check(
    tool: str, args: dict[str, Any] | None, images: dict[str, Image.Image] | None
) -> tuple[dict[str, Any], dict[str, Image.Image]]:
    """Validated arguments (defaults filled, seed chosen) and checked images, before any model work."""
    traits = get_tool(tool)
    if traits.rewrites_prompt:
        raise InvalidArgument(
            f"{tool} is the VLM's tool, not the executor's: the agent asks the VLM for the new prompt, "
            "then runs generate or an edit with it",
            field="tool",
        )
    args = validate_arguments(tool, args)
    if images is not None and not isinstance(images, dict):
        raise InvalidArgument(f"images must be a dict of PIL images, got {type(images).__name__}", field="images")
    images = images or {}
    checked: dict[str, Image.Image] = {}
    if "low_threshold" in args:
        inputs.canny_thresholds(args)
    if traits.makes_mask:
        inputs.mask_region(args)
        checked["image"] = inputs.rgb_image(images, edit=False)
    elif traits.edits_image:
        checked["image"] = inputs.rgb_image(images)
    if traits.takes_instruction and args.get("box") is not None:
        inputs.mask_region({"box": args["box"]})
    if traits.needs_mask:
        checked["mask"] = inputs.mask_image(images, checked["image"].size)
    if "region" in images and traits.denoises:  # the session's region: nothing outside it may change
        if "image" not in checked:
            checked["image"] = inputs.rgb_image(images)
        checked["region"] = inputs.mask_image(images, checked["image"].size, field="region")
        if not traits.edits_image and checked["image"].size != (args["width"], args["height"]):
            raise InvalidArgument(f"with a region, {tool} must keep the current image's size", field="width")
    if traits.denoises and args.get("seed") is None:
        args["seed"] = secrets.randbelow(SEED_LIMIT)
    return args, checked


# The runner of each FLUX.1 family (module, function), imported on first use; mask making has its own.
_RUNNERS = {
    "dev": ("generation", "generate"),
    "canny": ("control", "canny"),
    "depth": ("control", "depth"),
    "fill": ("inpainting", "inpaint"),
    "kontext": ("editing", "edit"),
}


def _dispatch(
    manager: Any,
    tool: str,
    args: dict[str, Any],
    images: dict[str, Image.Image],
    on_step: Callable[[int, int], None] | None,
) -> ToolOutput:
    """Run ``tool`` by its registry traits: its family's runner with the images it reads."""
    traits = get_tool(tool)
    if traits.makes_mask:
        from emage_agent.executor.masks import make_mask

        return make_mask(manager, args, images["image"])
    if traits.family not in _RUNNERS:
        raise InvalidArgument(f"the executor does not run {tool!r}", field="tool")
    module, name = _RUNNERS[traits.family]
    runner = getattr(importlib.import_module(f"emage_agent.executor.{module}"), name)
    given = [images["image"]] if traits.edits_image else []
    given += [images["mask"]] if traits.needs_mask else []
    return runner(manager, args, *given, on_step)


def _within_region(output: ToolOutput, original: Image.Image, region: Image.Image) -> ToolOutput:
    """The output pasted over ``original`` through the user's region, so pixels outside it never change."""
    from emage_agent.executor.inpainting import paste_back

    image = paste_back(original, output.image, region)
    note = "; ".join(n for n in (output.note, "kept outside the session's region") if n)
    return output.model_copy(update={"image": image, "note": note})


def _failure(tool: str, exc: Exception) -> ExecutionFailure:
    message = f"{tool} failed: {type(exc).__name__}: {exc}"
    if type(exc).__name__ == "OutOfMemoryError":
        message += "; free GPU memory or set EMAGE_RESIDENCY=offload"
    return ExecutionFailure(message)
