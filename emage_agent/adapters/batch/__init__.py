"""Many prompts in one command: input parsing, the run, results files and the gallery."""

from emage_agent.adapters.batch.items import read_items
from emage_agent.adapters.batch.run import BatchOptions, run_batch

__all__ = ["BatchOptions", "read_items", "run_batch"]
