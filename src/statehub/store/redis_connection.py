"""Redis URLs: a plain Redis (``redis://``, ``rediss://``, ``unix://``) or one watched by
Sentinel (``redis+sentinel://host:port[,host:port...]/service[/db]``).

Both a blocking and an asyncio client are made for the same target: the store's
synchronous methods (server-side code that is not in the event loop, or is but cannot
await) use the first, the event loop's commits and the change feed the second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

SENTINEL_SCHEME = "redis+sentinel"
PLAIN_SCHEMES = ("redis", "rediss", "unix")
#: Seconds to connect, and to wait for a reply to a command that should be quick: past
#: that Redis counts as away (the state refuses changes until it is back).
CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 5.0


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is: a URL for a plain Redis, or Sentinels and a service name."""

    url: str
    sentinels: list[tuple[str, int]] = field(default_factory=list)
    service: str = ""
    db: int = 0
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> RedisTarget:
        """Check ``url``; ``ValueError`` naming what is wrong with it."""
        parts = urlsplit(url)
        if parts.scheme in PLAIN_SCHEMES:
            return cls(url)
        if parts.scheme != SENTINEL_SCHEME:
            known = ", ".join(f"{scheme}://" for scheme in (*PLAIN_SCHEMES, SENTINEL_SCHEME))
            raise ValueError(f"Redis URL {url!r}: unknown scheme {parts.scheme!r}; use {known}")
        netloc = parts.netloc
        password = None
        if "@" in netloc:
            credentials, netloc = netloc.rsplit("@", 1)
            password = unquote(credentials.split(":", 1)[-1]) or None
        sentinels = [_host_port(url, item) for item in netloc.split(",") if item]
        if not sentinels:
            raise ValueError(f"Redis URL {url!r}: no Sentinel host:port given")
        path = [piece for piece in parts.path.split("/") if piece]
        if not path or len(path) > 2:
            raise ValueError(
                f"Redis URL {url!r}: the path must be /<service name>[/<db>], got {parts.path!r}"
            )
        db = 0
        if len(path) == 2:
            if not path[1].isdigit():
                raise ValueError(f"Redis URL {url!r}: the database must be a number")
            db = int(path[1])
        return cls(url, sentinels, path[0], db, password)

    def sync_client(self) -> redis.Redis:
        options = _options()
        if not self.sentinels:
            return redis.Redis.from_url(self.url, **options)
        sentinel = redis.sentinel.Sentinel(
            self.sentinels, sentinel_kwargs=_sentinel_options(), **options
        )
        client = sentinel.master_for(self.service, db=self.db, password=self.password)
        return cast(redis.Redis, client)

    def async_client(self) -> redis.asyncio.Redis:
        options = _options()
        if not self.sentinels:
            return redis.asyncio.Redis.from_url(self.url, **options)
        sentinel = redis.asyncio.sentinel.Sentinel(
            self.sentinels, sentinel_kwargs=_sentinel_options(), **options
        )
        client = sentinel.master_for(self.service, db=self.db, password=self.password)
        return cast(redis.asyncio.Redis, client)

    def describe(self) -> str:
        """The target without a password, for messages."""
        if self.sentinels:
            hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"{SENTINEL_SCHEME}://{hosts}/{self.service}/{self.db}"
        parts = urlsplit(self.url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return parts._replace(netloc=netloc).geturl()


def _options() -> dict[str, Any]:
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": REPLY_TIMEOUT,
        "health_check_interval": 10,
    }


def _sentinel_options() -> dict[str, Any]:
    return {"socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": REPLY_TIMEOUT}


def _host_port(url: str, item: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Redis URL {url!r}: {item!r} is not host:port")
    return host.strip("[]"), int(port)
