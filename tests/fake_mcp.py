"""A minimal MCP server over stdio (newline-delimited JSON-RPC 2.0), for the Claude Code end-to-end test of
deferred tools: it lists a few tools and echoes calls. Only what Claude Code's MCP client needs: ``initialize``,
``tools/list``, ``tools/call``, ``ping``; notifications are read and ignored."""

from __future__ import annotations

import json
import sys

TOOLS = [{"name": name, "description": description, "inputSchema": {
    "type": "object", "properties": {"text": {"type": "string", "description": "What to send"}}, "required": ["text"]}}
    for name, description in [("echo", "Echo the text back"), ("shout", "Echo the text back in capitals"),
                              ("create_ticket", "Create a ticket in the issue tracker")]]


def answer(request: dict) -> dict | None:
    method, params = request.get("method"), request.get("params") or {}
    if "id" not in request:
        return None  # a notification
    if method == "initialize":
        result: dict = {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                        "capabilities": {"tools": {"listChanged": False}},
                        "serverInfo": {"name": "fake-mcp", "version": "1.0.0"}}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        text = str((params.get("arguments") or {}).get("text", ""))
        result = {"content": [{"type": "text", "text": text.upper() if params.get("name") == "shout" else text}]}
    elif method == "ping":
        result = {}
    else:
        return {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32601, "message": f"Method not found: {method}"}}
    return {"jsonrpc": "2.0", "id": request["id"], "result": result}


def main() -> None:
    for line in sys.stdin:
        if line.strip():
            reply = answer(json.loads(line))
            if reply is not None:
                sys.stdout.write(json.dumps(reply) + "\n")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
