"""The request interface's shared pieces: image pruning and the wire order of tool results, for every transport."""

from __future__ import annotations

from emage_agent.vlm.local import prompt_of
from emage_agent.vlm.transport import OMITTED, Picture, Text, ToolResult, Turn, prune_images, split_results


def _pictures(turns: list[Turn]) -> list[bytes]:
    found = []
    for turn in turns:
        for part in turn.parts:
            png = part.png if isinstance(part, Picture | ToolResult) else None
            if png is not None:
                found.append(png)
    return found


def test_only_the_newest_images_stay_and_model_turns_are_untouched() -> None:
    model = Turn("model", raw=object())
    turns = [
        Turn("user", [Picture(b"1"), Text("first")]),
        model,
        Turn("user", [ToolResult("inpaint", "c1", {"ok": True}, png=b"2"), Picture(b"3"), Text("second")]),
        model,
        Turn("user", [Picture(b"4"), Text("third")]),
    ]
    pruned = prune_images(turns, keep=2)
    assert _pictures(pruned) == [b"3", b"4"]
    assert pruned[1] is model and pruned[3] is model and pruned[4] is turns[4]
    assert pruned[0].parts[0] == Text(OMITTED)
    result = pruned[2].parts[0]
    assert isinstance(result, ToolResult) and result.png is None and result.omitted and result.call_id == "c1"
    assert _pictures(turns) == [b"1", b"2", b"3", b"4"]  # the caller's turns are not changed


def test_returned_images_follow_their_run_of_results_unless_the_backend_takes_them_inline() -> None:
    parts = [
        ToolResult("make_mask", "a", {"ok": True}),
        ToolResult("inpaint", "b", {"ok": True}, png=b"img"),
        ToolResult("canny_edit", "c", {"ok": True}, omitted=True),
        Text("The current image:"),
        Picture(b"now"),
    ]
    kinds = [(k, v if k != "result" else v.name) for k, v in split_results(parts, inline_images=False)]
    assert kinds == [
        ("result", "make_mask"),
        ("result", "inpaint"),
        ("result", "canny_edit"),
        ("text", "Image returned by inpaint:"),
        ("png", b"img"),
        ("text", "Image returned by canny_edit:"),
        ("text", OMITTED),
        ("text", "The current image:"),
        ("png", b"now"),
    ]
    inline = [k for k, _ in split_results(parts, inline_images=True)]
    assert inline == ["result", "result", "result", "text", "png"]


def test_the_local_model_gets_one_prompt_with_the_last_results_first() -> None:
    turn = Turn(
        "user",
        [
            ToolResult("make_mask", "local-0", {"ok": True, "result": "mask covers 20%"}),
            ToolResult("inpaint", "local-1", {"ok": False, "result": "not executed"}, ran=False),
            Text("The current image:"),
            Picture(b"now"),
            Text("Decide the next step."),
        ],
    )
    text, images = prompt_of(turn)
    assert text.startswith(
        "Results of your previous calls:\n- make_mask: succeeded: mask covers 20%\n- inpaint: not executed: \n\n"
    )
    assert text.endswith("Decide the next step.") and images == [b"now"]
