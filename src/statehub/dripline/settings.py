"""Where the mesh is and how to reach it: the ``dripline_mesh`` block, the broker URL of
``statehub serve --dripline``, and the credentials.

The block is dripline's (``broker``, ``broker_port``, ``requests_exchange``,
``alerts_exchange``, ``max_payload_size``, ``heartbeat_routing_key``) plus
``heartbeat_interval_s``, ``auth_file`` and ``chunk_timeout_s``. A URL given on the
command line wins over the block's broker and port. Credentials, first found wins: the
URL's ``user:password``, ``DRIPLINE_USER``/``DRIPLINE_PASSWORD``, the ``auth_file``
(dripline's authentications file: JSON or YAML ``{amqp: {username, password}}``), and
RabbitMQ's ``guest``/``guest``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from statehub.dripline.chunks import DEFAULT_MAX_PAYLOAD_SIZE
from statehub.errors import StatehubError

USER_VARIABLE = "DRIPLINE_USER"
PASSWORD_VARIABLE = "DRIPLINE_PASSWORD"
DEFAULT_PORT = 5672

RoutingWord = Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]+$")]


class MeshSettingsError(StatehubError, ValueError):
    """The mesh cannot be configured as given (the message names the option)."""


class MeshBlock(BaseModel):
    """The ``dripline_mesh`` block of a configuration file; unknown options refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    broker: str = "localhost"
    broker_port: Annotated[int, Field(ge=1, le=65535)] = DEFAULT_PORT
    requests_exchange: RoutingWord = "requests"
    alerts_exchange: RoutingWord = "alerts"
    max_payload_size: Annotated[int, Field(ge=64)] = DEFAULT_MAX_PAYLOAD_SIZE
    heartbeat_routing_key: RoutingWord = "heartbeat"
    heartbeat_interval_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0
    chunk_timeout_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    auth_file: str | None = None


@dataclass(frozen=True, slots=True)
class MeshSettings:
    """Everything the mesh edge and the client need to reach a broker."""

    host: str = "localhost"
    port: int = DEFAULT_PORT
    virtual_host: str = "/"
    username: str = "guest"
    password: str = "guest"
    requests_exchange: str = "requests"
    alerts_exchange: str = "alerts"
    max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE
    heartbeat_routing_key: str = "heartbeat"
    heartbeat_interval: float = 60.0
    chunk_timeout: float = 1.0

    @property
    def url(self) -> str:
        """The AMQP URL (with the password: never log it; ``where`` is for logs)."""
        vhost = quote(self.virtual_host, safe="")
        return (
            f"amqp://{quote(self.username, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{vhost}"
        )

    @property
    def where(self) -> str:
        """The broker for messages: ``user@host:port/vhost``, no password."""
        return f"{self.username}@{self.host}:{self.port}{'/' + self.virtual_host.lstrip('/')}"


def parse_block(data: object, source: str = "dripline_mesh") -> MeshBlock:
    """Validate a ``dripline_mesh`` block; ``MeshSettingsError`` names every bad option."""
    if data is None:
        return MeshBlock()
    if not isinstance(data, Mapping):
        raise MeshSettingsError(f"{source}: must be a mapping, got {type(data).__name__}")
    try:
        return MeshBlock.model_validate(dict(data))
    except ValidationError as error:
        problems = []
        for detail in error.errors(include_url=False):
            option = ".".join(str(part) for part in detail["loc"])
            message = "unknown option" if detail["type"] == "extra_forbidden" else detail["msg"]
            problems.append(f"{source}: option {option!r}: {message}")
        raise MeshSettingsError("\n".join(problems)) from None


def block_from_file(path: str | Path) -> MeshBlock:
    """The ``dripline_mesh`` block of a YAML configuration file (defaults if it has none)."""
    try:
        data: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise MeshSettingsError(f"{path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise MeshSettingsError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise MeshSettingsError(f"{path}: must be a mapping (with a dripline_mesh block)")
    return parse_block(data.get("dripline_mesh"), f"{path}: dripline_mesh")


def mesh_settings(
    url: str | None = None,
    block: MeshBlock | None = None,
    environ: Mapping[str, str] | None = None,
) -> MeshSettings:
    """Combine a broker URL (``amqp://user:pass@host:port/vhost``), a ``dripline_mesh``
    block and the environment into settings; ``MeshSettingsError`` if something is wrong."""
    block = block or MeshBlock()
    environ = os.environ if environ is None else environ
    host, port, vhost = block.broker, block.broker_port, "/"
    username = password = None
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme != "amqp":
            raise MeshSettingsError(
                f"broker URL {_redacted(url)!r}: the scheme must be amqp:// "
                f"(got {parts.scheme or 'none'!r})"
            )
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise MeshSettingsError(f"broker URL {_redacted(url)!r}: bad port") from None
        host = parts.hostname or host
        if parts.path not in ("", "/"):
            vhost = unquote(parts.path[1:])
        if parts.username:
            username, password = unquote(parts.username), unquote(parts.password or "")
    if username is None:
        username, password = _credentials(block, environ)
    return MeshSettings(
        host=host,
        port=port,
        virtual_host=vhost,
        username=username,
        password=password or "",
        requests_exchange=block.requests_exchange,
        alerts_exchange=block.alerts_exchange,
        max_payload_size=block.max_payload_size,
        heartbeat_routing_key=block.heartbeat_routing_key,
        heartbeat_interval=block.heartbeat_interval_s,
        chunk_timeout=block.chunk_timeout_s,
    )


def _credentials(block: MeshBlock, environ: Mapping[str, str]) -> tuple[str, str]:
    user, password = environ.get(USER_VARIABLE), environ.get(PASSWORD_VARIABLE)
    if user is not None or password is not None:
        if user is None or password is None:
            given, missing = (
                (USER_VARIABLE, PASSWORD_VARIABLE) if user else (PASSWORD_VARIABLE, USER_VARIABLE)
            )
            raise MeshSettingsError(f"{given} is set but {missing} is not: set both")
        return user, password
    if block.auth_file is not None:
        return _read_auth_file(Path(block.auth_file).expanduser())
    return "guest", "guest"


def _read_auth_file(path: Path) -> tuple[str, str]:
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise MeshSettingsError(f"auth_file {str(path)!r}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise MeshSettingsError(f"auth_file {str(path)!r}: not JSON or YAML: {error}") from None
    amqp = data.get("amqp") if isinstance(data, dict) else None
    if not isinstance(amqp, dict):
        raise MeshSettingsError(f"auth_file {str(path)!r}: needs an 'amqp' mapping")
    user, password = amqp.get("username"), amqp.get("password")
    if not isinstance(user, str) or not isinstance(password, str):
        raise MeshSettingsError(
            f"auth_file {str(path)!r}: 'amqp' needs string 'username' and 'password'"
        )
    return user, password


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
