"""statehub's HTTP/WebSocket edge: the session protocol and NanoVer's WebSocket protocol,
the dashboard, ``/metrics`` and health checks, on one port next to the gRPC one.

``StateServer(http_port=...)`` starts it (``statehub.web.edge.WebEdge``); see
``docs/web.md``.
"""
