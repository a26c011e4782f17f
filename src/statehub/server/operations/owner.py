"""Who owns a lease or a session-bound key: one token format for every edge.

An owner token binds the identity that acts to the holder it acts as: a session, a NanoVer
WebSocket connection, or a NanoVer ``access_token``. A client-chosen name alone would let
any client that names it take over (or release) the leases of whoever chose it first; with
the identity bound in, another identity naming the same holder is another owner.

The holder is escaped so that the first unescaped ``:`` always ends it: no holder and
identity pair can spell another pair's token.
"""

from __future__ import annotations

from statehub.server.limits import check_token

#: Holder prefix of a NanoVer ``access_token``: the token owns the lease, whichever gRPC
#: connection presents it (a reconnecting NanoVer client keeps its leases, as in NanoVer).
NANOVER_TOKEN_HOLDER = "nanover-token/"


def owner_token(holder: str, identity: str) -> str:
    """The owner token of ``holder`` (a session id, a connection id) acting as ``identity``."""
    escaped = holder.replace("\\", "\\\\").replace(":", "\\:")
    return f"{escaped}:{identity}"


def nanover_token_owner(access_token: str, identity: str) -> str:
    """The owner of a NanoVer gRPC request presenting ``access_token`` as ``identity``.

    ``LimitExceededError`` for a token over ``MAX_TOKEN_BYTES``: owners are kept per lease.
    """
    check_token(access_token, "access_token")
    return owner_token(NANOVER_TOKEN_HOLDER + access_token, identity)
