"""Reading a VLM's evaluation answers leniently but never inventing one.

Why this exists: structured output usually parses, but models still wrap JSON in prose or code fences,
give boxes as fractions or reversed, or name a category we do not have. Each of those is recovered here,
deterministically. The score itself is strict: a number in [0, 1] or one that states its scale ('70%',
'7/10'); anything else (1.7, 85, -0.2) is malformed and raises ``UnreadableAnswer``, so the loop never
acts on a clamped or guessed score. Pure functions, no SDK types: unit-testable on their own.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from emage_agent.core.errors import UnreadableAnswer
from emage_agent.core.evaluation import ISSUE_CATEGORIES, Evaluation, Issue

log = logging.getLogger("emage_agent.vlm")

CATEGORY_SYNONYMS = {
    "objects": "object", "missing": "object", "missing_object": "object", "extra_object": "object",
    "count": "object", "attribute": "object", "attributes": "object",
    "layout": "spatial", "position": "spatial", "composition": "spatial", "size": "spatial", "space": "spatial",
    "styles": "style", "color": "style", "colour": "style", "lighting": "style", "texture": "style",
    "ambiguity": "prompt", "prompt_issue": "prompt",
    "meaning": "semantic", "semantics": "semantic", "intent": "semantic",
}  # fmt: skip
MAX_ANSWER_CHARS = 200_000  # a model answer (or a tool call's arguments) longer than this is not read at all
MAX_JSON_DEPTH = 32  # deeper nesting is no answer of ours (and 100,000 brackets end in RecursionError)
SCORE_KEYS = ("satisfaction_score", "satisfactionScore", "score", "satisfaction", "overall_score")


class TooDeep(UnreadableAnswer):
    """A transport could not decode the answer: it nests too deeply (asked again, like a malformed one)."""


def nesting_depth(text: str) -> int:
    """How deeply ``[``/``{`` nest in ``text`` outside JSON strings, scanned without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def value_depth(value: Any) -> int:
    """How deeply lists and dicts nest in an already-parsed value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                return level
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def answer_problem(text: str) -> str | None:
    """Why a model's text is not read as JSON (too long, nested too deeply), or None when it may be."""
    if len(text) > MAX_ANSWER_CHARS:
        return f"the answer is {len(text)} characters long; at most {MAX_ANSWER_CHARS} are read"
    depth = nesting_depth(text)
    if depth > MAX_JSON_DEPTH:
        return f"the answer nests {depth} levels of brackets; at most {MAX_JSON_DEPTH} are read"
    return None


def load_json(text: str) -> Any:
    """``json.loads`` with the bounds above: ``ValueError`` (naming the bound) instead of a huge or deep value."""
    problem = answer_problem(text)
    if problem:
        raise ValueError(problem)
    return json.loads(text)


def extract_json(text: str | None) -> Any | None:
    """The first JSON object in ``text``: the whole text, a fenced block, or the first decodable ``{...}``.

    None for text beyond the bounds (``answer_problem``): it is asked for again, never parsed.
    """
    if not text or not text.strip() or answer_problem(text):
        return None
    candidates = [text.strip()]
    candidates += re.findall(r"```(?:json)?\s*(.*?)```", text, flags=re.DOTALL)
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _number(value: Any) -> float | None:
    """A float from 0.7, '0.7', '70%', '7/10'; None when there is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    match = re.search(r"(-?\d+(?:\.\d+)?)\s*(%|/\s*(\d+(?:\.\d+)?))?", value)
    if not match:
        return None
    number = float(match.group(1))
    if match.group(2) == "%":
        return number / 100
    if match.group(3):
        denominator = float(match.group(3))
        return number / denominator if denominator else None
    return number


def unit_interval(value: Any) -> float | None:
    """A 0..1 value, clamped; a value from 2 to 100 was meant on a 0..10 or 0..100 scale and is rescaled.

    Why: a model that ignores the schema and answers 7 or 85 means 0.7 or 0.85, not a silent 1. A value
    just above 1 (below 2) is an overshoot and clamps to 1.
    """
    number = _number(value)
    if number is None or number != number:  # NaN
        return None
    if 2.0 <= number <= 10.0:
        number /= 10.0
    elif 10.0 < number <= 100.0:
        number /= 100.0
    return min(1.0, max(0.0, number))


def score_value(value: Any) -> float | None:
    """The satisfaction score: a number in [0, 1], or '70%' / '7/10' (scale stated); None for anything else.

    Why no clamping or rescaling: 1.7 clamped to 1.0 ended sessions as a threshold success; a bare number
    outside [0, 1] says the model did not follow the rubric, so the answer is malformed, not a score.
    """
    number = _number(value)
    if number is None or number != number or not 0.0 <= number <= 1.0:  # NaN fails the range too
        return None
    return number


def normalise_box(value: Any) -> list[int] | None:
    """``[ymin, xmin, ymax, xmax]`` in 0..1000: fractions scaled, values clamped, reversed pairs sorted."""
    if isinstance(value, dict):
        value = [value.get(k) for k in ("ymin", "xmin", "ymax", "xmax")]
    if not isinstance(value, list | tuple) or len(value) != 4:
        return None
    numbers = [_number(v) for v in value]
    if any(n is None for n in numbers):
        return None
    floats = [float(n) for n in numbers if n is not None]
    if all(0.0 <= n <= 1.0 for n in floats) and any(n != int(n) for n in floats):
        floats = [n * 1000 for n in floats]
    y0, x0, y1, x1 = (min(1000, max(0, round(n))) for n in floats)
    y0, y1 = sorted((y0, y1))
    x0, x1 = sorted((x0, x1))
    return [y0, x0, y1, x1] if y0 < y1 and x0 < x1 else None


def normalise_category(value: Any) -> str | None:
    name = str(value or "").strip().lower().replace(" ", "_").replace("-", "_")
    name = CATEGORY_SYNONYMS.get(name, name)
    return name if name in ISSUE_CATEGORIES else None


def coerce_issue(raw: Any) -> tuple[Issue | None, int | None]:
    """An ``Issue`` from one answer item and the user-remark index it claims, or (None, None) if unusable."""
    if not isinstance(raw, dict):
        return None, None
    category = normalise_category(raw.get("category"))
    target = str(raw["target"]).strip() if raw.get("target") not in (None, "") else None
    description = str(raw.get("description") or "").strip() or target
    if category is None or not description:
        log.warning("evaluation: dropped an issue with category %r", raw.get("category"))
        return None, None
    severity = unit_interval(raw.get("severity"))
    issue = Issue(
        category=category,  # type: ignore[arg-type]
        severity=0.5 if severity is None else severity,
        description=description,
        target=target,
        box=normalise_box(raw.get("box")),
    )
    index = raw.get("feedback_index")
    return issue, index if isinstance(index, int) and not isinstance(index, bool) else None


def evaluation_from_dict(data: Any) -> tuple[Evaluation, dict[int, Issue]] | None:
    """The evaluation in a decoded answer and the issues it ties to user remarks; None without a score."""
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        return None
    score = next((score_value(data[k]) for k in SCORE_KEYS if k in data), None)
    if score is None:
        return None
    issues: list[Issue] = []
    remarks: dict[int, Issue] = {}
    raw_issues = data.get("issues")
    for raw in raw_issues if isinstance(raw_issues, list) else []:
        issue, index = coerce_issue(raw)
        if issue is not None:
            issues.append(issue)
            if index is not None:
                remarks.setdefault(index, issue)
    summary = str(data.get("summary") or "").strip()
    return Evaluation(satisfaction_score=score, issues=issues, summary=summary), remarks


_VALUE = r"(\d+(?:\.\d+)?\s*(?:%|/\s*\d+)?)"
_PROSE_SCORE = (
    re.compile(r"(?:satisfaction[ _]?score|score|rating)\W{0,5}(?:is|of|=|:)?\W{0,3}" + _VALUE, re.I),
    re.compile(r"(?:rate|give)\s+(?:it|this|the image)\s+(?:an?\s+)?" + _VALUE, re.I),
    re.compile(r"\b(\d+(?:\.\d+)?\s*/\s*(?:10|100))\b"),
)


def evaluation_from_prose(text: str | None) -> Evaluation | None:
    """Last resort: a score stated in prose ('score: 0.7', '7/10', '70%'); issues cannot be read from prose."""
    if not text:
        return None
    for pattern in _PROSE_SCORE:
        match = pattern.search(text)
        score = score_value(match.group(1)) if match else None
        if score is not None:
            sentence = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]
            return Evaluation(satisfaction_score=score, issues=[], summary=sentence[:300])
    return None


def read_evaluation(parsed: Any, text: str | None) -> tuple[Evaluation, dict[int, Issue], str]:
    """The evaluation from the SDK's ``parsed`` value, else JSON in the text, else prose; and how it was read.

    Raises ``UnreadableAnswer`` (with the start of the answer) when none of these yields a score.
    """
    if parsed is not None:
        data = parsed.model_dump() if hasattr(parsed, "model_dump") else parsed
        found = evaluation_from_dict(data)
        if found:
            return found[0], found[1], "structured"
    decoded = extract_json(text)
    found = evaluation_from_dict(decoded)
    if found:
        return found[0], found[1], "json_in_text"
    problem = answer_problem(text or "")
    if problem:
        raise UnreadableAnswer(f"the evaluation was not read: {problem}")
    if isinstance(decoded, dict) and any(k in decoded for k in SCORE_KEYS):  # a score, but not in [0, 1]
        snippet = (text or "").strip().replace("\n", " ")[:200]
        raise UnreadableAnswer(f"the evaluation has no satisfaction score in [0, 1]: {snippet!r}")
    prose = evaluation_from_prose(text)
    if prose:
        return prose, {}, "prose"
    snippet = (text or "").strip().replace("\n", " ")[:200] or "(empty answer)"
    raise UnreadableAnswer(f"the evaluation has no satisfaction score in [0, 1]: {snippet!r}")


ANSWER_ATTEMPTS = 2  # a malformed evaluation (no score in [0, 1]) is asked for again once


def read_answer(
    ask: Callable[[], tuple[Any, str | None]], calls: list[Any], scrub: Callable[[str], str]
) -> tuple[Evaluation, dict[int, Issue], str]:
    """``read_evaluation`` of ``ask()``'s answer, asking once more when it is malformed.

    ``ask`` makes one call and returns its (parsed, text). A malformed answer marks that call's record
    (the last of ``calls``) as failed, so the log never counts it as a success; a second bad answer
    raises ``UnreadableAnswer``, with the model's text scrubbed of secrets.
    """
    for attempt in range(1, ANSWER_ATTEMPTS + 1):
        problem = None
        try:
            parsed, text = ask()
        except TooDeep as deep:  # a body too deep for the SDK's decoder is a malformed answer too
            parsed, text, problem = None, None, str(deep)
        try:
            if problem:
                raise UnreadableAnswer(problem)
            return read_evaluation(parsed, text)
        except UnreadableAnswer as exc:
            message = scrub(str(exc))
            if calls:
                calls[-1].ok = False
                calls[-1].error = f"malformed answer: {message}"[:400]
            if attempt == ANSWER_ATTEMPTS:
                raise UnreadableAnswer(f"{message} (after {attempt} answers)") from None
            log.warning("evaluation malformed (%s); asking again", message[:200])
    raise AssertionError("unreachable")  # pragma: no cover
