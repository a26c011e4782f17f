"""Lua scripts sent to Redis in the order they were asked for, without blocking the loop.

Lease changes, lease listings and every read/write lock step of one server go through
one ``OrderedScripts``: ``submit`` queues a script at once (synchronously, so the
requests of one frame, handled one after the other, keep their order), and one task
sends what is queued as one pipeline on one connection, so Redis runs the scripts in
that order. A script that queued while a pipeline was on its way goes with the next
one: many requests share a round trip. Scripts are loaded before their first use; if
Redis lost them (restarted empty, and so also every lock), a script refused with NOSCRIPT
is sent again after the rest of its pipeline.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio

from statehub.errors import StoreUnavailableError

logger = logging.getLogger(__name__)

#: One queued script: its source, keys, arguments, and the future of its reply.
_Queued = tuple[str, list[Any], list[Any], "asyncio.Future[Any]"]


class OrderedScripts:
    """Scripts for one Redis, run there in submission order.

    ``client`` gives the asyncio client (the store's, once started); ``unavailable``
    turns a connection failure into the error callers see.
    """

    def __init__(
        self,
        client: Callable[[], redis.asyncio.Redis],
        unavailable: Callable[[str], StoreUnavailableError],
    ) -> None:
        self._client = client
        self._unavailable = unavailable
        self._queued: list[_Queued] = []
        self._sender: asyncio.Task[None] | None = None
        self._shas: dict[str, str] = {}
        self._loaded: set[str] = set()

    def submit(self, source: str, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        """Queue ``source`` now; the future ends with its reply (or its error).

        Cancelling the future does not stop the script: it runs all the same.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((source, keys, args, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="statehub-redis-ordered")
        return future

    async def drain(self) -> None:
        """Return once everything queued so far was sent and answered."""
        sender = self._sender
        if sender is not None:
            await asyncio.gather(asyncio.shield(sender), return_exceptions=True)

    async def _send(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                replies = await self._run(batch)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
                failure: BaseException = self._unavailable(str(error))
                replies = [failure] * len(batch)
            except Exception as error:
                replies = [error] * len(batch)
            for (_, _, _, future), reply in zip(batch, replies, strict=True):
                if future.done():
                    continue
                if isinstance(reply, BaseException):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    async def _run(self, batch: list[_Queued]) -> list[Any]:
        client = self._client()
        # Loaded first, not on NOSCRIPT: a script that failed so would be sent again
        # after those behind it in the pipeline had run.
        for source in {queued[0] for queued in batch} - self._loaded:
            await client.script_load(source)
            self._loaded.add(source)
        replies = await self._pipeline(client, batch)
        missing = [i for i, reply in enumerate(replies) if _no_script(reply)]
        if missing:  # Redis lost its scripts (restarted empty): those did not run
            self._loaded.clear()
            for source in {batch[i][0] for i in missing}:
                await client.script_load(source)
                self._loaded.add(source)
            again = await self._pipeline(client, [batch[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(self, client: redis.asyncio.Redis, batch: list[_Queued]) -> list[Any]:
        async with client.pipeline(transaction=False) as pipe:
            for source, keys, args, _ in batch:
                pipe.execute_command("EVALSHA", self._sha(source), len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))

    def _sha(self, source: str) -> str:
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = hashlib.sha1(source.encode()).hexdigest()
        return sha


def log_failure(what: str) -> Callable[[asyncio.Future[Any]], None]:
    """A done-callback logging that ``what`` failed, for requests nobody waits for (a
    session that ended cannot; the dead-server sweep releases what they leave)."""

    def report(done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and (error := done.exception()) is not None:
            logger.warning("%s failed in Redis: %s", what, error)

    return report


def _no_script(reply: Any) -> bool:
    return isinstance(reply, redis.exceptions.NoScriptError)
