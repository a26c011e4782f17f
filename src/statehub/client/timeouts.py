"""Per-call timeouts: the client's default, a call's own ``timeout=``, and their checks.

Every call waits at most its timeout for the server's answer, then raises statehub's
``TimeoutError`` naming the call and the server (as redis-py's ``socket_timeout`` and
nats-py's ``request(timeout=)`` do). ``timeout=None`` waits as long as it takes.
"""

from __future__ import annotations

import enum
import math
from typing import Final, Literal

from statehub.errors import TimeoutError as CallTimeoutError

#: Seconds a call waits for its answer unless the client or the call says otherwise.
DEFAULT_TIMEOUT: Final = 10.0
#: Seconds to open a session (connect and hello) unless the client says otherwise.
DEFAULT_CONNECT_TIMEOUT: Final = 5.0


class _ClientDefault(enum.Enum):
    TIMEOUT = "the client's timeout"


#: A call's ``timeout=`` when it is not given: the client's own ``timeout``.
CLIENT_DEFAULT: Final = _ClientDefault.TIMEOUT
#: What a call's ``timeout=`` accepts: seconds, None (no limit) or the client's default.
Timeout = float | None | Literal[_ClientDefault.TIMEOUT]


def checked_timeout(value: object, name: str = "timeout") -> float | None:
    """``value`` as seconds (a finite number > 0) or None; ``ValueError`` naming ``name``."""
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or not value > 0:  # type: ignore[arg-type,operator]
        raise ValueError(f"{name} must be None or a finite number of seconds > 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def timed_out(call: str, target: str, seconds: float) -> CallTimeoutError:
    """The error of ``call`` that got no answer from the server at ``target`` in time."""
    return CallTimeoutError(
        f"{call}: no answer from statehub at {target} within {seconds:g} s (the call's timeout)"
    )
