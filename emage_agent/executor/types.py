"""What the executor hands back, as plain data: no torch here, so any layer may import it."""

from __future__ import annotations

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, computed_field


class ToolOutput(BaseModel):
    """One tool's result. ``seed`` is the seed actually used, so any result can be reproduced."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    tool: str
    image: Image.Image | None = None
    mask: Image.Image | None = None
    control: Image.Image | None = None
    seed: int | None = None
    seconds: float
    coverage: float | None = None
    note: str = ""


class ExecutorCounters(BaseModel):
    """Where the executor spent disk, bus and wall time; benchmarks read a snapshot of it.

    ``bytes_read`` sums the weight files each ``from_pretrained`` loaded. ``bytes_to_device``
    and ``bytes_to_host`` count parameter and buffer bytes moved between host and accelerator
    (always zero on a CPU-only run, where both are the same memory). ``weight_bytes`` is each
    loaded model's size in memory as it runs (after quantization); a quantized tensor counts
    its real storage, not the dtype it stands for. ``graphs_compiled`` counts torch.compile
    graphs; ``recompiles`` those compiled for an image size that had already run.
    """

    device: str | None = None
    residency: str | None = None
    bytes_read: int = 0
    bytes_to_device: int = 0
    bytes_to_host: int = 0
    loads: dict[str, int] = Field(default_factory=dict)
    embedding_hits: int = 0
    embedding_misses: int = 0
    tool_calls: dict[str, int] = Field(default_factory=dict)
    tool_seconds: dict[str, float] = Field(default_factory=dict)
    quantize: str | None = None
    compile: str | None = None
    step_cache: str | None = None
    attention: str | None = None
    speed_why: dict[str, str] = Field(default_factory=dict)  # why each speed setting resolved as it did
    weight_bytes: dict[str, int] = Field(default_factory=dict)
    graphs_compiled: int = 0
    recompiles: int = 0
    cached_runs: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def bytes_moved(self) -> int:
        return self.bytes_to_device + self.bytes_to_host

    def count_load(self, component: str, nbytes: int) -> None:
        self.loads[component] = self.loads.get(component, 0) + 1
        self.bytes_read += nbytes

    def count_call(self, tool: str, seconds: float) -> None:
        self.tool_calls[tool] = self.tool_calls.get(tool, 0) + 1
        self.tool_seconds[tool] = self.tool_seconds.get(tool, 0.0) + seconds
