"""The Model Context Protocol adapter: EMage's tools for other agent systems, over stdio or HTTP."""

from emage_agent.adapters.mcp.server import main

__all__ = ["main"]
