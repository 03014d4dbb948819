"""The MCP server: sandboxes, skills and gated actions for other agents, over stdio
(``closedpaw mcp``) and streamable HTTP (``/mcp`` of ``closedpaw serve``)."""

from closedpaw.mcp.bridge import TOOLS, McpBridge

__all__ = ["TOOLS", "McpBridge"]
