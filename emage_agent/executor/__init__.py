"""The GPU tool executor: the only part of EMage that imports torch, diffusers and transformers.

Importing this package loads none of them; they load when a tool first runs.
"""

from emage_agent.executor.devices import resolve_device
from emage_agent.executor.executor import Executor
from emage_agent.executor.types import ToolOutput

__all__ = ["Executor", "ToolOutput", "resolve_device"]
