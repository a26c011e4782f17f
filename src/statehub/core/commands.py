"""Commands registered on the server, called by name with keyword arguments."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from statehub.core.values import JsonValue, checked_copy, copy_mapping
from statehub.errors import CommandFailedError, StatehubError

CommandResult = dict[str, JsonValue] | None


@dataclass(frozen=True, slots=True)
class CommandRoute:
    """How a command offered by several servers sharing one state picks the one to run on.

    A call's ``argument`` names something one server holds (an endpoint address): the
    server that claimed that value, or the longest dotted prefix of it (``a.b.c`` ->
    ``a.b``), runs the call. ``values`` are the ones this server claims. A call without
    the argument (or None) runs on every server offering the command when ``gather`` is
    set, the results merged (their lists joined), else on one of them. One server alone
    (memory or SQLite store) just runs the command.
    """

    argument: str
    values: frozenset[str] = frozenset()
    gather: bool = False


@dataclass(frozen=True, slots=True)
class CommandRegistration:
    """A registered command: its callback and the default values of its arguments."""

    name: str
    callback: Callable[..., Any]
    default_arguments: dict[str, JsonValue]
    signature: inspect.Signature | None
    route: CommandRoute | None = None

    # NanoVer's names for the same things: `arguments` and `handler` (its WebSocket era),
    # `info.name`/`info.arguments` and `callback` (its gRPC era).
    @property
    def arguments(self) -> dict[str, JsonValue]:
        """A copy of the default arguments."""
        return copy_mapping(self.default_arguments)

    @property
    def handler(self) -> Callable[..., Any]:
        """The callback."""
        return self.callback

    @property
    def info(self) -> CommandRegistration:
        """This registration (it has NanoVer's ``info.name`` and ``info.arguments``)."""
        return self


class CommandRegistry:
    """Named commands; running one merges its defaults with the call's arguments.

    A callback that raises a ``StatehubError`` (a typed, intended error) has it passed on
    as it is; any other exception becomes ``CommandFailedError`` naming the command.
    """

    def __init__(self, *, executor: Executor | None = None) -> None:
        """``executor`` runs plain callbacks for ``run_async`` (None: the loop's default)."""
        self._commands: dict[str, CommandRegistration] = {}
        self._lock = threading.Lock()
        self._executor = executor

    def register(
        self,
        name: str,
        callback: Callable[..., Any],
        default_arguments: Mapping[str, Any] | None = None,
        *,
        route: CommandRoute | None = None,
    ) -> None:
        """Add a command; ``ValueError`` if the name is taken.

        ``route``: how servers sharing one state pick the one that runs a call (see
        ``CommandRoute``); a command without one is offered by one server only.
        """
        if type(name) is not str or not name:
            raise TypeError(f"command name must be a non-empty str, got {name!r}")
        if not callable(callback):
            raise TypeError(f"command {name!r}: callback is not callable")
        defaults = checked_copy(dict(default_arguments or {}), f"{name} default_arguments")
        try:
            signature: inspect.Signature | None = inspect.signature(callback)
        except (TypeError, ValueError):  # some builtins have no signature to check against
            signature = None
        registration = CommandRegistration(name, callback, defaults, signature, route)  # type: ignore[arg-type]
        with self._lock:
            if name in self._commands:
                raise ValueError(f"command {name!r} is already registered")
            self._commands[name] = registration

    def unregister(self, name: str) -> None:
        """Remove a command; ``KeyError`` if there is none by that name."""
        with self._lock:
            if name not in self._commands:
                raise KeyError(f"no command named {name!r}")
            del self._commands[name]

    def registration(self, name: str) -> CommandRegistration | None:
        """The command registered as ``name``, if any."""
        with self._lock:
            return self._commands.get(name)

    @property
    def commands(self) -> dict[str, CommandRegistration]:
        """A copy of the registered commands by name."""
        with self._lock:
            return dict(self._commands)

    def list(self) -> dict[str, dict[str, JsonValue]]:
        """Each command's name with a copy of its default arguments."""
        with self._lock:
            return {name: copy_mapping(r.default_arguments) for name, r in self._commands.items()}

    def run(self, name: str, arguments: Mapping[str, Any] | None = None) -> CommandResult:
        """Run a command in this thread and return its result (a dict or None)."""
        registration, merged = self._prepare(name, arguments)
        try:
            result = registration.callback(**merged)
            if inspect.isawaitable(result):
                raise TypeError("it is a coroutine function: use run_async")
        except StatehubError:
            raise
        except Exception as error:
            raise CommandFailedError(f"command {name!r} failed: {error}") from error
        return _checked_result(name, result)

    async def run_async(
        self, name: str, arguments: Mapping[str, Any] | None = None
    ) -> CommandResult:
        """Run a command: coroutine callbacks are awaited, others run in a worker thread."""
        registration, merged = self._prepare(name, arguments)
        try:
            if inspect.iscoroutinefunction(registration.callback):
                result = await registration.callback(**merged)
            else:
                # In the caller's context: a callback may ask who it runs for.
                call = functools.partial(
                    contextvars.copy_context().run, registration.callback, **merged
                )
                result = await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except StatehubError:
            raise
        except Exception as error:
            raise CommandFailedError(f"command {name!r} failed: {error}") from error
        return _checked_result(name, result)

    def _prepare(
        self, name: str, arguments: Mapping[str, Any] | None
    ) -> tuple[CommandRegistration, dict[str, Any]]:
        with self._lock:
            registration = self._commands.get(name)
        if registration is None:
            raise KeyError(f"no command named {name!r}")
        merged = {**copy_mapping(registration.default_arguments), **(arguments or {})}
        if registration.signature is not None:
            try:
                registration.signature.bind(**merged)
            except TypeError as error:
                raise TypeError(f"command {name!r}: {error}") from None
        return registration, merged


def _checked_result(name: str, result: object) -> CommandResult:
    if result is None:
        return None
    if type(result) is not dict:
        raise CommandFailedError(
            f"command {name!r} returned {type(result).__name__}; commands return a dict or None"
        )
    return checked_copy(result, f"{name} result")  # type: ignore[return-value]
