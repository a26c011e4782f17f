"""The engine's operations: each state rule written once, for every edge.

An edge (the session protocol over gRPC, TCP or WebSocket; NanoVer's gRPC services;
NanoVer's WebSocket protocol) translates its messages into these calls and their results
and errors back into its protocol. What a call checks and does lives here, once:

- ``owner``: who holds a lease or a session-bound key: one token format that binds the
  identity, whichever edge the client came by;
- ``state``: writes (compare-and-set, ttl, ephemeral keys) checked against the caller's
  rights, committed without blocking the event loop on any store;
- ``leases``: lease changes checked against rights and the per-client ``max_leases``;
- ``commands``: calls checked against call rights, listings filtered by them;
- ``reads``: what a caller may see of the state (gets, listings, subscriptions);
- ``copies``: what a client's copy of the state must drop when its read rights change.

Errors are raised with their statehub types (``PermissionDeniedError``, ``LimitExceededError``,
``ResourceLockedError``, ``StoreUnavailableError``...): each edge maps them to its own
protocol with ``statehub.protocol.errors.status_of``, so every edge answers them.
"""
