"""Endpoint configuration: YAML files validated by pydantic models, unknown options refused.

Two layouts are accepted, as in dripline/dragonfly (both may be mixed):

- dripline v3: ``name`` (the service) and ``endpoints: [{name, module, ...}]``;
- dragonfly: ``providers: [{name, module, endpoints: [...]}]``, nested as deep as needed,
  under an optional top-level ``name`` (the node).

An endpoint's address joins the names on its path with dots (``somenode.kv.foo``).
Names are unique across the file (dripline routes by bare name too), contain no dots, and
``load_config`` reports every problem at once, each naming the file, the endpoint (or
service) and the option, before anything is started.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from statehub.core.values import checked_copy
from statehub.endpoints.calibration import Calibration
from statehub.endpoints.logging_rules import LoggingRules
from statehub.errors import StatehubError

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$"
DEFAULT_ALERT_ROUTING_KEY = "sensor_value"

#: Module names an endpoint may give (``module:``); ``service.register_endpoint_module``
#: adds to it.
ENDPOINT_MODULES: set[str] = {"kv_store_key", "KeyValueStore"}
#: Module names a service or provider may give.
SERVICE_MODULES: set[str] = {"kv_store", "KVStore", "Service"}

_NAME = re.compile(NAME_PATTERN)


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or len(name) > 200:
        raise ValueError(
            f"names hold letters, digits, '_' and '-' (no dots: dots join names into "
            f"addresses), got {name!r}"
        )
    return name


Name = Annotated[str, AfterValidator(_check_name)]
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ConfigError(StatehubError, ValueError):
    """A configuration cannot be used; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        lines = [problem.describe(source) for problem in problems]
        super().__init__("\n".join(lines) if lines else f"{source}: invalid configuration")


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong: where (a path such as ``providers[0].endpoints[2]``), which
    endpoint or service, which option, and what."""

    location: str
    kind: str  # "endpoint", "service" or "file"
    name: str | None
    option: str | None
    message: str

    def describe(self, source: str) -> str:
        parts = [source]
        if self.kind != "file":
            who = f"{self.kind} {self.name!r}" if self.name else f"unnamed {self.kind}"
            parts.append(f"{who} ({self.location})" if self.location else who)
        if self.option is not None:
            parts.append(f"option {self.option!r}")
        return ": ".join(parts) + f": {self.message}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _known_module(module: str, known: Collection[str], kind: str) -> str:
    if module not in known:
        raise ValueError(f"unknown {kind} module {module!r} (known: {', '.join(sorted(known))})")
    return module


class EndpointConfig(_Strict):
    """One endpoint (a dripline ``kv_store_key``)."""

    name: Name
    module: str = "kv_store_key"
    initial_value: Any = None
    calibration: str | dict[Any, Any] | None = None
    get_on_set: bool = False
    log_on_set: bool = False
    log_interval: PositiveSeconds | None = Field(
        default=None, validation_alias=AliasChoices("log_interval", "schedule_interval")
    )
    max_interval: NonNegative | None = None
    max_absolute_change: NonNegative | None = None
    max_fractional_change: NonNegative | None = None
    alert_routing_key: Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")] = (
        DEFAULT_ALERT_ROUTING_KEY
    )

    _calibration: Calibration | None = PrivateAttr(default=None)

    @field_validator("module")
    @classmethod
    def _known_module(cls, module: str) -> str:
        return _known_module(module, ENDPOINT_MODULES, "endpoint")

    @field_validator("initial_value")
    @classmethod
    def _json_like(cls, value: Any) -> Any:
        try:
            return checked_copy(value, "initial_value")
        except TypeError as error:
            raise ValueError(str(error).removeprefix("key 'initial_value': ")) from None

    @field_validator("calibration")
    @classmethod
    def _calibration_works(cls, spec: Any) -> Any:
        Calibration.from_config(spec)  # raises ValueError with the reason
        return spec

    def model_post_init(self, context: Any) -> None:
        self._calibration = Calibration.from_config(self.calibration)

    @property
    def compiled_calibration(self) -> Calibration | None:
        return self._calibration

    @property
    def logging_rules(self) -> LoggingRules:
        return LoggingRules(
            log_interval=self.log_interval,
            max_interval=self.max_interval,
            max_absolute_change=self.max_absolute_change,
            max_fractional_change=self.max_fractional_change,
        )


class ServiceConfig(_Strict):
    """A service (dripline v3) or provider (dragonfly): named, with endpoints and providers."""

    name: Name
    module: str = "kv_store"
    endpoints: list[EndpointConfig] = Field(default_factory=list)
    providers: list[ServiceConfig] = Field(default_factory=list)

    @field_validator("module")
    @classmethod
    def _known_module(cls, module: str) -> str:
        return _known_module(module, SERVICE_MODULES, "service")


class EndpointsConfig(ServiceConfig):
    """A whole file: like a service, but its name is optional (the node's name)."""

    name: Name | None = None  # type: ignore[assignment]
    #: dripline's mesh settings (broker, exchanges...), checked by ``statehub.dripline``
    #: when the endpoints are served on a mesh.
    dripline_mesh: dict[str, Any] | None = None

    def walk(self) -> Iterator[tuple[str, ServiceConfig | EndpointConfig, str | None]]:
        """Every service and endpoint as ``(address, config, parent address)``, depth first."""
        yield from _walk(self, self.name, None)


def _walk(
    service: ServiceConfig, address: str | None, parent: str | None
) -> Iterator[tuple[str, ServiceConfig | EndpointConfig, str | None]]:
    if address is not None:
        yield address, service, parent
    for endpoint in service.endpoints:
        yield _join(address, endpoint.name), endpoint, address
    for provider in service.providers:
        yield from _walk(provider, _join(address, provider.name), address)


def _join(prefix: str | None, name: str) -> str:
    return name if prefix is None else f"{prefix}.{name}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a mapping with the same key twice (PyYAML keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in mapping
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key {key!r}", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"duplicate key {key!r}",
                key_node.start_mark,
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_config(path: str | Path) -> EndpointsConfig:
    """Read and validate a YAML configuration file; ``ConfigError`` lists every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            source, [ConfigProblem("", "file", None, None, f"cannot read: {error.strerror}")]
        ) from None
    return parse_config(text, source)


def parse_config(text: str, source: str = "<config>") -> EndpointsConfig:
    """Validate YAML text; ``source`` names it in error messages."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        message = _yaml_message(error)
        raise ConfigError(source, [ConfigProblem("", "file", None, None, message)]) from None
    return validate_config(data, source)


def _yaml_message(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    return "not valid YAML: " + " ".join(str(error).split())


def validate_config(data: object, source: str = "<config>") -> EndpointsConfig:
    """Validate already parsed data (a dict) as a configuration."""
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            [
                ConfigProblem(
                    "",
                    "file",
                    None,
                    None,
                    "the configuration must be a mapping with 'name' and 'endpoints' "
                    f"or 'providers', got {type(data).__name__}",
                )
            ],
        )
    problems: list[ConfigProblem] = []
    config: EndpointsConfig | None = None
    try:
        config = EndpointsConfig.model_validate(data)
    except ValidationError as error:
        problems.extend(_problems(data, error))
    problems.extend(_duplicate_names(data))
    if config is not None and not any(
        isinstance(item, EndpointConfig) for _, item, _ in config.walk()
    ):
        problems.append(ConfigProblem("", "file", None, None, "no endpoints configured"))
    if problems or config is None:
        raise ConfigError(source, problems)
    return config


def _problems(data: dict[str, Any], error: ValidationError) -> list[ConfigProblem]:
    problems = []
    for detail in error.errors(include_url=False):
        location, kind, name, option = _locate(data, detail["loc"])
        kind_of_error = detail["type"]
        message = detail["msg"]
        if kind_of_error == "extra_forbidden":
            message = "unknown option"
        elif kind_of_error == "missing":
            message = "required option is missing"
        elif kind_of_error == "value_error":
            message = message.removeprefix("Value error, ")
        else:
            message += f" (got {detail.get('input')!r})"
        problems.append(ConfigProblem(location, kind, name, option, message))
    return problems


def _locate(
    data: dict[str, Any], loc: tuple[int | str, ...]
) -> tuple[str, str, str | None, str | None]:
    """Turn a pydantic error location into (path, kind, name, option) using the raw data."""
    node: Any = data
    kind = "service"
    name = _name_of(data)
    path = ""
    index = 0
    while index + 1 < len(loc) and loc[index] in ("endpoints", "providers"):
        field, position = loc[index], loc[index + 1]
        if not isinstance(position, int):
            break
        try:
            node = node[field][position]
        except (KeyError, IndexError, TypeError):
            break
        path = f"{path}.{field}[{position}]" if path else f"{field}[{position}]"
        kind = "endpoint" if field == "endpoints" else "service"
        name = _name_of(node)
        index += 2
    rest = loc[index:]
    option = str(rest[0]) if rest else None
    if not path and name is None:
        kind = "file"
    return path, kind, name, option


def _name_of(node: object) -> str | None:
    name = node.get("name") if isinstance(node, dict) else None
    return name if isinstance(name, str) else None


def _duplicate_names(data: dict[str, Any]) -> list[ConfigProblem]:
    """Names used twice anywhere in the file (checked on the raw data, so they are
    reported together with every other problem)."""
    problems: list[ConfigProblem] = []
    seen: dict[str, str] = {}
    top = _name_of(data)
    if top is not None:
        seen[top] = "the top-level name"

    def visit(service: dict[str, Any], path: str) -> None:
        for field, kind in (("endpoints", "endpoint"), ("providers", "service")):
            items = service.get(field)
            if not isinstance(items, list):
                continue
            for position, item in enumerate(items):
                where = f"{path}.{field}[{position}]" if path else f"{field}[{position}]"
                name = _name_of(item)
                if name is not None:
                    if name in seen:
                        problems.append(
                            ConfigProblem(
                                where,
                                kind,
                                name,
                                "name",
                                f"duplicate name: {seen[name]} already uses {name!r} "
                                "(names are unique across the file)",
                            )
                        )
                    else:
                        seen[name] = where
                if kind == "service" and isinstance(item, dict):
                    visit(item, where)

    visit(data, "")
    return problems
