"""The OpenAI-compatible transport: the only package in EMage that imports ``openai``.

Speaks the Chat Completions API that vLLM, Ollama, LM Studio, OpenRouter and OpenAI serve; ``OpenAIClient``
implements the request interface of ``vlm.transport``, and the roles above it are the shared ones.
"""

from emage_agent.vlm.evaluator import Evaluator
from emage_agent.vlm.openai_compat.client import OpenAIClient
from emage_agent.vlm.planner import Planner
from emage_agent.vlm.rewriter import Rewriter

__all__ = ["Evaluator", "OpenAIClient", "Planner", "Rewriter"]
