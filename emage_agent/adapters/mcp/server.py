"""EMage over the Model Context Protocol (the official SDK's low-level ``Server``), on stdio or streamable HTTP.

A thin adapter: every call goes through the same ``Agent`` and session store as the CLI, so a
session started here can be resumed with ``emage-agent resume`` and the other way round. What
it adds is what a remote, untrusted caller needs:

- input schemas derived from ``tools/*.json`` (the contracts cannot drift from what clients see;
  ``schemas``), published as given through the SDK's documented ``on_list_tools`` /
  ``on_call_tool`` handlers (EMage's schemas are data, not Python signatures);
- a bounded set of open sessions (least recently used closed first, all closed at shutdown), so a
  long-lived server never runs out of file descriptors;
- resource reads confined to the session's directory (no artifact path or symlink leads out);
- image and session arguments confined to the session root (``emage_agent.adapters.paths``);
- small thumbnails as image content, with the full image's path and an ``emage://`` resource link
  (``results``);
- progress notifications wired from the agent's events, for runs that take minutes;
- EMage's errors as MCP tool errors carrying their message, never a crashed server;
- a bearer token (``EMAGE_MCP_TOKEN``) checked with ``hmac.compare_digest`` on every HTTP request,
  mandatory when bound to anything but loopback, and a Host/Origin check against DNS rebinding
  (``http``).

One agent serves all calls. Calls run side by side (several clients, VLM calls in parallel); their GPU
work waits its turn in one first-come-first-served ``engine.GpuQueue``, the same engine as the web UI
and batch, so it never overlaps and the FLUX models load once per process.
What each tool does is in ``tools``; the public names of ``http`` and ``results`` are importable from here too.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
from mcp import types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.types import CallToolResult

from emage_agent.adapters.mcp.http import BearerAuth as BearerAuth
from emage_agent.adapters.mcp.http import http_app as http_app
from emage_agent.adapters.mcp.http import is_loopback as is_loopback
from emage_agent.adapters.mcp.http import serve_http
from emage_agent.adapters.mcp.listing import recent_resources
from emage_agent.adapters.mcp.results import THUMB_PX as THUMB_PX
from emage_agent.adapters.mcp.results import error_result
from emage_agent.adapters.mcp.results import thumbnail as thumbnail
from emage_agent.adapters.mcp.schemas import (
    DESCRIPTIONS,
    INSTRUCTIONS,
    SCHEMAS,
    check_schema,
    contract_schema,
)
from emage_agent.adapters.mcp.sessions import MAX_OPEN_SESSIONS as MAX_OPEN_SESSIONS
from emage_agent.adapters.mcp.tools import ARTIFACT_URI, EmageTools, ToolSpec
from emage_agent.core.errors import EmageError, UserError
from emage_agent.core.redact import install_log_scrubber
from emage_agent.core.tools import available_tools, export_tools
from emage_agent.engine import GpuQueue

if TYPE_CHECKING:
    from emage_agent.api import Agent
    from emage_agent.core.settings import Settings

log = logging.getLogger(__name__)


def _specs(tools: EmageTools, names: list[str]) -> dict[str, ToolSpec]:
    """Every tool: the single tools ``names`` from their contracts, then the MCP-only ones."""
    specs: list[ToolSpec] = []
    for c in export_tools("mcp", names):
        tool = types.Tool(name=c["name"], description=c["description"], input_schema=contract_schema(c["name"]))
        check = functools.partial(tools.check_contract, c["name"])
        specs.append(ToolSpec(tool, check, functools.partial(tools.run_contract, c["name"])))
    checks = {"refine": tools.check_refine}
    for name in ("evaluate", "refine", "session_history", "revert"):
        tool = types.Tool(name=name, description=DESCRIPTIONS[name], input_schema=copy.deepcopy(SCHEMAS[name]))
        check = checks.get(name, functools.partial(check_schema, SCHEMAS[name]))
        specs.append(ToolSpec(tool, check, getattr(tools, name)))
    return {spec.tool.name: spec for spec in specs}


def build_server(
    agent_factory: Callable[[], Agent],
    *,
    root: Path | None = None,
    max_open_sessions: int = MAX_OPEN_SESSIONS,
    gpu: GpuQueue | None = None,
    settings: Settings | None = None,
) -> Server[Any]:
    """The MCP server over the agent ``agent_factory`` makes (called once, on the first tool call that needs it).

    ``root`` is the session root for path checks; by default the agent's ``root``. At most
    ``max_open_sessions`` sessions stay open between calls; all are closed when the server stops.
    ``gpu`` is the queue the calls' GPU work waits in (share one with a UI or a pool in the same
    process); by default one in front of the agent's executor. ``settings`` (by default the environment's)
    decide which tools are on: a switched-off tool (``EMAGE_KONTEXT_MODEL=none``: edit) is not listed.
    """
    from emage_agent.core.settings import load_settings

    tools = EmageTools(agent_factory, root, max_open_sessions, gpu)
    specs = _specs(tools, available_tools(settings or load_settings()))
    template = types.ResourceTemplate(
        uri_template=ARTIFACT_URI,
        name="artifact",
        mime_type="image/png",
        description="A session's full-size PNG artifact (image, mask or control).",
    )

    async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[spec.tool for spec in specs.values()])

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> CallToolResult:
        spec = specs.get(params.name)
        if spec is None:
            return error_result(UserError(f"unknown tool {params.name[:80]!r}; tools are {', '.join(specs)}"))
        return await tools.call(spec, dict(params.arguments or {}), ctx)

    async def list_templates(ctx: ServerRequestContext[Any], params: Any) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[template])

    async def list_resources(ctx: ServerRequestContext[Any], params: Any) -> types.ListResourcesResult:
        try:
            found = await anyio.to_thread.run_sync(recent_resources, tools.root())
        except EmageError:  # no root configured yet, say: an empty list, not a failed call
            found = []
        return types.ListResourcesResult(resources=found)

    @contextlib.asynccontextmanager
    async def lifespan(_server: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}
        finally:
            tools.sessions.close_all()

    server: Server[Any] = Server(
        "emage",
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        get_tool_input_schema=lambda name: specs[name].tool.input_schema if name in specs else None,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=tools.read_resource,
    )
    return server


def _default_factory(settings: Settings) -> Callable[[], Agent]:
    def make() -> Agent:
        from emage_agent.api import Agent

        agent = Agent(settings)
        agent.check_ready()  # a missing key or device comes back as a clear tool error
        return agent

    return make


def serve(
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
    settings: Settings | None = None,
    *,
    agent_factory: Callable[[], Agent] | None = None,
) -> None:
    """Serve until stopped: stdio (one client, the launching process) or streamable HTTP on ``host:port``."""
    from emage_agent.core.settings import load_settings

    settings = settings or load_settings()
    server = build_server(
        agent_factory or _default_factory(settings),
        root=None if agent_factory else settings.session_root,
        max_open_sessions=settings.mcp_open_sessions,
        settings=settings,
    )
    install_log_scrubber()
    if transport == "stdio":
        anyio.run(_run_stdio, server)
        return
    token = settings.mcp_token.get_secret_value() if settings.mcp_token else None
    serve_http(
        server, host, port, token or None, allowed_hosts=settings.mcp_allowed_hosts, sessions=settings.mcp_http_sessions
    )


async def _run_stdio(server: Server[Any]) -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def main(http: bool = False, host: str = "127.0.0.1", port: int = 8765) -> None:
    """``emage-agent mcp [--http --host H --port P]`` (the CLI parses; this only serves)."""
    serve("http" if http else "stdio", host, port)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m emage_agent.adapters.mcp.server")
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    ns = parser.parse_args()
    try:
        main(http=ns.http, host=ns.host, port=ns.port)
    except UserError as exc:
        raise SystemExit(f"emage-agent mcp: error: {exc}") from None
