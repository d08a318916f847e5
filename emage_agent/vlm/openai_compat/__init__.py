"""The OpenAI-compatible backend: the only package in EMage that imports ``openai``.

Speaks the Chat Completions API that vLLM, Ollama, LM Studio, OpenRouter and OpenAI serve; images go
as data URLs, the planner through ``tools``/``tool_calls``, answers through ``response_format``.
"""

from emage_agent.vlm.openai_compat.client import OpenAIClient
from emage_agent.vlm.openai_compat.evaluator import Evaluator, Rewriter
from emage_agent.vlm.openai_compat.planner import Planner

__all__ = ["Evaluator", "OpenAIClient", "Planner", "Rewriter"]
