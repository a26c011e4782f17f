"""Commands across the servers sharing one Redis: a directory and calls between servers.

The directory lives in Redis under the store's prefix: ``cmd:servers`` (the servers that
offer commands), ``cmd:offers:<server>`` (name -> default arguments and route),
``cmd:claims`` (``name NUL value`` -> the server that claimed that value of a routed
command, such as an endpoint address) and ``cmd:labels`` (server -> its host and pid,
for error messages). Offering is one Lua script (``redis_command_scripts``) that refuses
a name (or a claimed value) another live server holds; each server re-reads the
directory every heartbeat and whenever one is told (Pub/Sub) that it changed, and in the
same script forgets the servers whose liveness key (kept by ``RedisStore``) expired.

A call travels by Pub/Sub on the target server's channel ``cmd:to:<server>``; ``PUBLISH``
answers how many listened, so a server that is gone (its connection to Redis closed) is
known at once. The target says "taken" as it starts the call, runs it through its own
registry, stores the answer under ``cmd:reply:<call>`` (kept a minute) and says "done"
on the caller's channel (with the answer, when small); the caller also looks for the
answer each heartbeat, so a lost message delays an answer by a heartbeat but never loses
it. While it waits, the caller checks each heartbeat that the target still listens and
its liveness key lives: if not, the call ends with ``CommandUnavailableError`` naming the
command and the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

import redis

from statehub.core.commands import CommandResult, CommandRoute
from statehub.core.values import JsonValue
from statehub.errors import CommandUnavailableError, StoreUnavailableError
from statehub.protocol.codec import decode_value, encode_value
from statehub.protocol.errors import error_from_wire, error_to_wire
from statehub.store.peers import Offer, PeerRunner
from statehub.store.redis_command_scripts import DIRECTORY, OFFER, WITHDRAW

if TYPE_CHECKING:
    from statehub.store.redis_link import RedisLink

logger = logging.getLogger(__name__)

#: Seconds an answer waits in Redis for its caller (who looks every heartbeat).
REPLY_TTL_S = 60
#: Waits between two attempts to listen again after the Pub/Sub connection broke.
RELISTEN_S = 0.2
#: How long a live server (its liveness key there) that does not listen on its channel is
#: given to listen again before a caller takes it for gone: it may be reconnecting.
LISTENER_GRACE_S = 2.5 * RELISTEN_S
#: An answer up to this size also travels in the "done" message (no read of its key).
INLINE_ANSWER_BYTES = 64 * 1024
#: How errors name this server to people, next to its id: where to find the process.
SERVER_LABEL = f"host {socket.gethostname()}, pid {os.getpid()}"


class RedisCommandPeers:
    """The command directory and calls between the servers of one ``RedisStore``."""

    def __init__(self, store: RedisLink) -> None:
        self._store = store
        self._base = store.keys.base
        self._runner: PeerRunner | None = None
        self._mine: dict[str, tuple[dict[str, JsonValue], CommandRoute | None]] = {}
        self._offers: dict[str, list[Offer]] = {}
        self._claims: dict[tuple[str, str], str] = {}
        self._labels: dict[str, str] = {}
        self._calls: dict[str, _Call] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Future[None]] = set()
        self._changed = asyncio.Event()
        self._closing = False

    @property
    def server_id(self) -> str:
        return self._store.server_id

    @property
    def answer_timeout(self) -> float:
        """Seconds a live server has to take a call (the liveness TTL)."""
        return self._store.liveness_ttl

    def channel(self, server: str) -> str:
        return f"{self._base}cmd:to:{server}"

    # -- the directory -------------------------------------------------------------------

    def serve(self, runner: PeerRunner) -> None:
        self._runner = runner

    def offer(
        self, name: str, defaults: Mapping[str, JsonValue], route: CommandRoute | None
    ) -> None:
        self._offer(name, dict(defaults), route)
        self._mine[name] = (dict(defaults), route)

    def _offer(self, name: str, defaults: dict[str, JsonValue], route: CommandRoute | None) -> None:
        description: dict[str, JsonValue] = {"defaults": defaults}
        if route is not None:
            description |= {"argument": route.argument, "gather": route.gather}
        blob = (b"r" if route is not None else b"p") + encode_value(description)
        args: list[str | bytes] = [
            self._base,
            self.server_id,
            name,
            blob,
            "1" if route is not None else "0",
            str(int(self._store.liveness_ttl * 1000)),
            SERVER_LABEL,
        ]
        args += sorted(route.values) if route is not None else []
        reply = self._store.run_script(OFFER, [], args)
        if reply[0] == b"taken":
            raise ValueError(
                f"command {name!r} is already offered by server {_named(reply[1], reply[2])} "
                "sharing this Redis: a command without a route runs on one server only"
            )
        if reply[0] == b"claimed":
            raise ValueError(
                f"command {name!r}: {reply[3].decode()!r} is already claimed by server "
                f"{_named(reply[1], reply[2])} sharing this Redis"
            )

    def withdraw(self, name: str) -> None:
        self._mine.pop(name, None)
        try:
            self._store.run_script(WITHDRAW, [], [self._base, self.server_id, name])
        except StoreUnavailableError as error:  # a call for it meanwhile: "no command named"
            logger.warning("could not withdraw command %r from Redis: %s", name, error)

    def offers(self) -> dict[str, list[Offer]]:
        return self._offers

    def claimant(self, name: str, value: str) -> str | None:
        return self._claims.get((name, value))

    async def refresh(self) -> None:
        reply = await self._store.run_script_async(DIRECTORY, [], [self._base, self.server_id])
        listed, flat_offers, flat_claims, flat_labels = reply
        offers: dict[str, list[Offer]] = {}
        for index in range(0, len(flat_offers), 2):
            server = flat_offers[index].decode()
            fields = flat_offers[index + 1]
            for field in range(0, len(fields), 2):
                name = fields[field].decode()
                offers.setdefault(name, []).append(_offer_from(server, fields[field + 1]))
        claims = {}
        for index in range(0, len(flat_claims), 2):
            server = flat_claims[index + 1].decode()
            if server != self.server_id:
                name, _, value = flat_claims[index].decode().partition("\0")
                claims[name, value] = server
        for listing in offers.values():
            listing.sort(key=lambda offer: offer.server)
        self._offers, self._claims = offers, claims
        self._labels = {
            flat_labels[i].decode(): flat_labels[i + 1].decode()
            for i in range(0, len(flat_labels), 2)
        }
        if not listed and self._mine:  # Redis lost the directory (a new epoch): offer again
            for name, (defaults, route) in list(self._mine.items()):
                try:
                    await asyncio.to_thread(self._offer, name, defaults, route)
                except ValueError as error:
                    logger.error("command %r is no longer offered by this server: %s", name, error)
                    self._mine.pop(name, None)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for calls and directory changes; return once listening."""
        listening = asyncio.get_running_loop().create_future()
        self._tasks = [
            asyncio.create_task(self._listen(listening), name="statehub-redis-commands"),
            asyncio.create_task(self._keep_directory(), name="statehub-redis-directory"),
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.answer_timeout):
                await listening

    async def stop(self) -> None:
        """Withdraw every command of this server; end the calls running here."""
        self._closing = True
        tasks, self._tasks = self._tasks, []  # the listener first: no new call starts
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        running = list(self._running.values())
        for task in running:
            task.cancel()
        for call in self._calls.values():
            call.wake.set()
        await asyncio.gather(*running, *self._background, return_exceptions=True)
        self._mine.clear()
        try:
            await self._store.run_script_async(WITHDRAW, [], [self._base, self.server_id, ""])
        except (StoreUnavailableError, RuntimeError) as error:
            logger.warning("could not withdraw this server's commands from Redis: %s", error)

    async def _keep_directory(self) -> None:
        while not self._closing:
            self._changed.clear()
            try:
                await self.refresh()
            except (redis.RedisError, StoreUnavailableError) as error:
                logger.debug("could not read the command directory: %s", error)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._store.heartbeat):
                    await self._changed.wait()

    async def _listen(self, listening: asyncio.Future[None]) -> None:
        channels = (self.channel(self.server_id), self._base + "cmd:directory")
        while not self._closing:
            try:
                pubsub = self._store.async_client().pubsub()
                async with pubsub:
                    await pubsub.subscribe(*channels)
                    confirmed = 0
                    async for message in pubsub.listen():
                        kind = message.get("type")
                        if kind == "subscribe":
                            confirmed += 1
                            if confirmed == len(channels) and not listening.done():
                                listening.set_result(None)
                            self._changed.set()  # missed changes while away: read again
                        elif kind == "message":
                            if message["channel"].decode() == channels[1]:
                                self._changed.set()
                            else:
                                self._receive(decode_value(message["data"]))
            except (redis.RedisError, OSError) as error:
                logger.debug("command listener: %s; listening again", error)
                await asyncio.sleep(RELISTEN_S)

    # -- calls between servers ------------------------------------------------------------

    async def call(
        self, server: str, name: str, arguments: dict[str, Any], context: dict[str, Any]
    ) -> CommandResult:
        call_id = uuid.uuid4().hex
        pending = self._calls[call_id] = _Call()
        request = {
            "k": "call",
            "id": call_id,
            "from": self.server_id,
            "name": name,
            "args": arguments,
            "ctx": context,
        }
        try:
            client = self._store.async_client()
            encoded = encode_value(request)
            listeners = await self._store.run_async(client.publish(self.channel(server), encoded))
            if not listeners and await self._alive(server):  # maybe listening again soon
                await asyncio.sleep(LISTENER_GRACE_S)
                listeners = await self._store.run_async(
                    client.publish(self.channel(server), encoded)
                )
            if not listeners:
                await self.refresh()
                if not any(offer.server == server for offer in self._offers.get(name, [])):
                    raise KeyError(f"no command named {name!r}")  # withdrawn meanwhile
                raise self._gone(name, server, "it no longer listens on Redis")
            take_by = asyncio.get_running_loop().time() + self.answer_timeout
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._store.heartbeat):
                        while not pending.done:
                            await self._wait(pending)
                if pending.answer is not None:  # it came with "done": drop the stored copy
                    self._discard_answer(call_id)
                    return _result_of(pending.answer)
                answer = await self._fetch_answer(call_id)
                if answer is not None:
                    return _result_of(answer)
                if not await self._listening(server):
                    raise self._gone(name, server, "it went away before answering")
                if not pending.taken and asyncio.get_running_loop().time() > take_by:
                    raise CommandUnavailableError(
                        f"command {name!r}: server {self._describe(server)} did not take the "
                        f"call within {self.answer_timeout:g} s"
                    )
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                cancel = encode_value({"k": "cancel", "id": call_id})
                publishing = self._store.async_client().publish(self.channel(server), cancel)
                await asyncio.shield(publishing)
            raise
        finally:
            del self._calls[call_id]

    async def _wait(self, pending: _Call) -> None:
        if self._closing:
            raise CommandUnavailableError("this server is stopping")
        await pending.wake.wait()
        pending.wake.clear()

    async def _fetch_answer(self, call_id: str) -> dict[str, Any] | None:
        key = self._reply_key(call_id)
        async with self._store.async_client().pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.delete(key)
            data, _ = await self._store.run_async(pipe.execute())
        return None if data is None else dict(decode_value(data))

    def _discard_answer(self, call_id: str) -> None:
        unlinking = asyncio.ensure_future(
            self._quietly(self._store.async_client().unlink(self._reply_key(call_id)))
        )
        self._background.add(unlinking)
        unlinking.add_done_callback(self._background.discard)

    async def _quietly(self, call: Awaitable[Any]) -> None:
        """Send a command nobody waits for: a failure costs at most a stale key or message."""
        try:
            await call
        except (redis.RedisError, OSError) as error:
            logger.debug("a command to Redis failed: %s", error)

    async def _listening(self, server: str) -> bool:
        """True while ``server`` listens on Redis and its liveness key lives (a listener
        that is not there is given a moment to connect again)."""
        for attempt in range(2):
            async with self._store.async_client().pipeline(transaction=False) as pipe:
                pipe.pubsub_numsub(self.channel(server))
                pipe.exists(self._store.keys.alive(server))
                numsub, alive = await self._store.run_async(pipe.execute())
            if not alive:
                return False
            if numsub and numsub[0][1]:
                return True
            if attempt == 0:
                await asyncio.sleep(LISTENER_GRACE_S)
        return False

    async def _alive(self, server: str) -> bool:
        return bool(
            await self._store.run_async(
                self._store.async_client().exists(self._store.keys.alive(server))
            )
        )

    def _gone(self, name: str, server: str, why: str) -> CommandUnavailableError:
        return CommandUnavailableError(
            f"command {name!r} is served by server {self._describe(server)}, which is gone ({why})"
        )

    def _describe(self, server: str) -> str:
        label = SERVER_LABEL if server == self.server_id else self._labels.get(server)
        return f"{server} ({label})" if label else server

    def _reply_key(self, call_id: str) -> str:
        return f"{self._base}cmd:reply:{call_id}"

    def _receive(self, message: dict[str, Any]) -> None:
        kind, call_id = message.get("k"), message.get("id")
        if not isinstance(call_id, str):
            return
        if kind == "call" and not self._closing:
            task = asyncio.create_task(self._run_call(message))
            self._running[call_id] = task
            task.add_done_callback(lambda _: self._running.pop(call_id, None))
        elif kind == "cancel":
            running = self._running.get(call_id)
            if running is not None:
                running.cancel()
        elif (pending := self._calls.get(call_id)) is not None:
            pending.taken = True
            if kind == "done":
                pending.done = True
                answer = message.get("answer")
                pending.answer = answer if isinstance(answer, dict) else None
            pending.wake.set()

    async def _run_call(self, message: dict[str, Any]) -> None:
        caller, call_id = str(message.get("from")), str(message["id"])
        client = self._store.async_client()
        taken = encode_value({"k": "taken", "id": call_id})
        # Said while the call runs, not before: a quick call's answer is not held up.
        telling = asyncio.ensure_future(self._quietly(client.publish(self.channel(caller), taken)))
        answer: dict[str, Any]
        try:
            if self._runner is None:
                raise CommandUnavailableError(f"server {self.server_id} runs no commands")
            name, arguments = message.get("name"), message.get("args")
            if not isinstance(name, str) or not isinstance(arguments, dict):
                raise TypeError(f"a forwarded call needs a name and arguments, got {message!r}")
            context = message.get("ctx")
            context = context if isinstance(context, dict) else {}
            result = await self._runner(name, arguments, context)
            answer = {"ok": result}
        except asyncio.CancelledError:
            if not self._closing:
                raise  # the caller cancelled: nobody waits for an answer
            stopping = self._gone(str(message.get("name")), self.server_id, "it is stopping")
            answer = {"error": error_to_wire(stopping)}
        except Exception as error:
            answer = {"error": error_to_wire(error)}
        await telling
        encoded = encode_value(answer)
        inline = len(encoded) <= INLINE_ANSWER_BYTES
        done = encode_value({"k": "done", "id": call_id, **({"answer": answer} if inline else {})})
        try:
            async with client.pipeline(transaction=False) as pipe:
                pipe.set(self._reply_key(call_id), encoded, ex=REPLY_TTL_S)
                pipe.publish(self.channel(caller), done)
                await pipe.execute()
        except (redis.RedisError, OSError) as error:
            logger.warning("could not answer call %s of server %s: %s", call_id, caller, error)


class _Call:
    """A call this server forwarded: taken by its server yet, answered yet (as told), and
    the answer if it came with the message."""

    __slots__ = ("answer", "done", "taken", "wake")

    def __init__(self) -> None:
        self.taken = False
        self.done = False
        self.answer: dict[str, Any] | None = None
        self.wake = asyncio.Event()


def _result_of(answer: dict[str, Any]) -> CommandResult:
    if "error" in answer:
        wire = answer["error"]
        raise error_from_wire(wire if isinstance(wire, dict) else {})
    result = answer.get("ok")
    return result if isinstance(result, dict) else None


def _named(server: bytes, label: bytes) -> str:
    return f"{server.decode()} ({label.decode()})" if label else server.decode()


def _offer_from(server: str, blob: bytes) -> Offer:
    description = decode_value(blob[1:])
    defaults = description.get("defaults")
    route = None
    if blob[:1] == b"r":
        route = CommandRoute(str(description["argument"]), gather=bool(description["gather"]))
    return Offer(server, defaults if isinstance(defaults, dict) else {}, route)
