"""Many prompts in one command: input parsing, the run, results files and the gallery."""

from emage_agent.adapters.batch.run import BatchOptions, run_batch

__all__ = ["BatchOptions", "run_batch"]
