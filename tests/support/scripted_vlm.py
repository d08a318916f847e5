"""An in-process scripted VLM: a transport that answers from a list, so the real roles run without a server.

Why: the evaluator, planner and rewriter are written once over ``vlm.transport``; a loop test can drive
them, and the whole loop, with answers it states up front (as openai-agents' scripted model and
pydantic-ai's ``FunctionModel`` do). Each answer names the purpose it expects; a request of another
purpose, or one too many, fails the test, and ``assert_all_used`` fails when answers were left over.
The HTTP stand-ins (``fake_gemini``, ``fake_openai``) stay for the transport tests. This module holds no tests.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from emage_agent.core.tools import load_contracts
from emage_agent.vlm.calls import CallLog, CallRecord
from emage_agent.vlm.transport import Reply, Request, Turn
from emage_agent.vlm.turns import Pending


@dataclass
class Answer:
    purpose: str
    reply: Reply


def evaluation(score: float, *issues: dict[str, Any], summary: str = "") -> Answer:
    """An evaluation answer (issues as dicts: category, severity, description, target...)."""
    data = {"satisfaction_score": score, "issues": list(issues), "summary": summary or f"scored {score}"}
    return Answer("evaluate", Reply(parsed=data))


def calls(*named: tuple[str, dict[str, Any]], text: str = "") -> Answer:
    """A planning answer calling ``(tool, args)`` in order; call ids ``s<n>-<tool>``."""
    pending = [Pending(name, f"s{n}-{name}", dict(args)) for n, (name, args) in enumerate(named)]
    return Answer("plan", Reply(text=text, calls=pending, turn=Turn("model", raw={"calls": named})))


def rewrite(prompt: str, rationale: str = "scripted") -> Answer:
    return Answer("rewrite", Reply(parsed={"prompt": prompt, "rationale": rationale}))


class ScriptedVLM:
    """The transport interface over a list of answers; ``requests`` keeps what each role sent."""

    backend = "scripted"
    model = "scripted-vlm"
    label = "the scripted model"
    parses_answers = True
    keeps_history = True
    answers_objects = False
    tools = sorted(load_contracts())

    def __init__(self, *answers: Answer) -> None:
        self.answers = deque(answers)
        self.requests: list[Request] = []
        self.calls = CallLog()

    def request(self, request: Request) -> Reply:
        self.requests.append(request)
        self.calls.append(CallRecord(purpose=request.purpose, model=self.model, backend=self.backend, ok=True))
        assert self.answers, f"no scripted answer left for a {request.purpose} request"
        answer = self.answers.popleft()
        assert answer.purpose == request.purpose, f"scripted a {answer.purpose} answer, got a {request.purpose} request"
        return answer.reply

    def scrub(self, text: str) -> str:
        return text

    def assert_all_used(self) -> None:
        left = [a.purpose for a in self.answers]
        assert not left, f"scripted answers never asked for: {left}"
