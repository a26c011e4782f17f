"""``--settings FILE``: a command's options from a TOML file, then the environment, then flags.

Every option of the command has a *key*: its long flag without the dashes, the other
dashes turned to underscores (``--http-port`` is ``http_port``, ``--store`` is ``store``),
and an environment variable, ``STATEHUB_SERVE_`` and the key in capitals
(``STATEHUB_SERVE_HTTP_PORT``).
A flag on the command line wins over the environment, which wins over the file, which wins
over the built-in default.

That order is click's own: the file becomes the context's ``default_map`` (read by an eager
``--settings`` option, so before any other option is looked at) and each option gets its
``envvar``, so the option's value, its checks and its callback are the same whichever place
it came from, and ``Context.get_parameter_source`` says which place that was.

A bad file stops the command before anything starts, with exit status 2 (as click's usage
errors) and a message naming the file and the key: a key no option has (with the closest
one, if one is close), or a value of the wrong TOML type (with the type expected). Relative
paths in the file are taken from the file's directory, so a file and what it names can move
together; in the environment and on the command line they are taken from the working
directory, as usual.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

#: Prefix of the environment variables (``STATEHUB_SERVE_<KEY>``): not ``STATEHUB_<KEY>``,
#: which would read the client commands' ``STATEHUB_HOST``/``_PORT``/``_TLS_CERT`` as the
#: server's own address and certificate.
ENV_PREFIX = "STATEHUB_SERVE"

#: The key of the ``--settings`` option itself (its variable: ``STATEHUB_SERVE_SETTINGS``).
SETTINGS_KEY = "settings"

logger = logging.getLogger(__name__)


class SettingsError(click.ClickException):
    """A settings file that cannot be used; exits 2, as click's usage errors do."""

    exit_code = 2


@dataclass(frozen=True)
class Setting:
    """One option as a setting: its key, its flag, its variable and its TOML type."""

    key: str
    option: click.Option
    #: For an option repeated as ``NAME=VALUE`` (``--session-limit``): the names allowed and
    #: their defaults, whose types the values must have; the key is a TOML table.
    table: Mapping[str, object] | None = None

    @property
    def flag(self) -> str:
        return _long_flag(self.option)

    @property
    def envvar(self) -> str:
        """``STATEHUB_SERVE_<KEY>``, unless the option names a variable of its own."""
        own = self.option.envvar
        return own if isinstance(own, str) else f"{ENV_PREFIX}_{self.key.upper()}"

    @property
    def toml_type(self) -> str:
        """The TOML type the file must give, as the documentation and the errors say it."""
        if self.table is not None:
            kinds = sorted({_expected(type(default))[1] for default in self.table.values()})
            return f"table of {' or '.join(kind + 's' for kind in kinds)}"
        kind = _expected_of(self.option)[1]
        return f"array of {kind}s" if self.option.multiple else kind


class SettingsOption(click.Option):
    """``--settings FILE``, eager: it reads the file into the context's ``default_map`` before
    any other option is looked at."""

    def __init__(self, tables: Mapping[str, Mapping[str, object]]) -> None:
        super().__init__(
            ["--settings"],
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            metavar="FILE",
            envvar=f"{ENV_PREFIX}_{SETTINGS_KEY.upper()}",
            is_eager=True,
            expose_value=False,
            callback=_read_settings,
            help="Read settings from this TOML file: a key for each option, its long name "
            "with underscores (http_port = 38801). STATEHUB_SERVE_<KEY> environment variables "
            "override it, and flags override both. See docs/settings.md.",
        )
        #: The repeated ``NAME=VALUE`` options written as a table in the file: the names
        #: each allows and their defaults (which give the values' types).
        self.tables = dict(tables)


def settings_of(command: click.Command) -> list[Setting]:
    """The settings of ``command``: every option but ``--help`` and ``--settings``."""
    tables: Mapping[str, Mapping[str, object]] = next(
        (p.tables for p in command.params if isinstance(p, SettingsOption)), {}
    )
    settings = []
    for parameter in command.params:
        if not isinstance(parameter, click.Option) or isinstance(parameter, SettingsOption):
            continue
        key = _long_flag(parameter)[2:].replace("-", "_")
        settings.append(Setting(key, parameter, tables.get(key)))
    return settings


def settings_option(
    tables: Mapping[str, Mapping[str, object]] | None = None,
) -> Callable[[click.Command], click.Command]:
    """Give ``command`` a ``--settings FILE`` option and an environment variable per option.

    ``tables`` names the repeated ``NAME=VALUE`` options that the file writes as a table,
    with the names each allows and their defaults (which give the values' types).
    Apply it above ``@click.command()``.
    """

    def decorate(command: click.Command) -> click.Command:
        command.params.insert(0, SettingsOption(tables or {}))
        for setting in settings_of(command):
            if setting.option.envvar is None:
                setting.option.envvar = setting.envvar
        return command

    return decorate


def _read_settings(context: click.Context, parameter: click.Parameter, path: Path | None) -> None:
    if path is None or context.resilient_parsing:
        return
    defaults = load_settings(path, context.command, context)
    context.default_map = {**(context.default_map or {}), **defaults}
    context.meta[__name__] = path


def load_settings(
    path: Path, command: click.Command, context: click.Context | None = None
) -> dict[str, Any]:
    """The settings in the TOML file ``path`` for ``command``, as its ``default_map``
    (parameter name to value); a bad file raises `SettingsError` naming file and key."""
    import tomllib

    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise SettingsError(f"{path}: {error.strerror or error}") from None
    settings = {setting.key: setting for setting in settings_of(command)}
    context = context or click.Context(command)
    defaults: dict[str, Any] = {}
    for key, value in document.items():
        setting = settings.get(key)
        if setting is None:
            raise SettingsError(f"{path}: {_unknown(key, settings)}")
        name = setting.option.name
        assert name is not None  # an option's name is never None
        defaults[name] = _value(path, setting, value, context)
    return defaults


def _value(path: Path, setting: Setting, value: object, context: click.Context) -> object:
    """``value`` checked against ``setting``'s type, as ``default_map`` wants it."""
    if setting.table is not None:
        return _table(path, setting.key, setting.table, value)
    if not setting.option.multiple:
        return _scalar(path, setting, value, context)
    if not isinstance(value, list):
        raise _wrong_type(path, setting.key, setting.toml_type, value)
    return [_scalar(path, setting, item, context) for item in value]


def _scalar(path: Path, setting: Setting, value: object, context: click.Context) -> object:
    """One value, checked by the option's own type (ranges, choices); a relative path is
    taken from the file's directory."""
    wanted, kind = _expected_of(setting.option)
    if not _is(value, wanted):
        raise _wrong_type(path, setting.key, kind, value)
    if isinstance(setting.option.type, click.Path) and isinstance(value, str):
        value = value if os.path.isabs(value) else str(path.parent / value)
    try:
        setting.option.type.convert(value, setting.option, context)
    except click.BadParameter as error:
        raise SettingsError(f"{path}: {setting.key}: {error.message}") from None
    return value


def _table(path: Path, key: str, allowed: Mapping[str, object], value: object) -> list[str]:
    """A table of ``NAME = VALUE`` as the ``NAME=VALUE`` strings the repeated option takes."""
    if not isinstance(value, dict):
        kinds = sorted({_expected(type(default))[1] + "s" for default in allowed.values()})
        raise _wrong_type(path, key, f"table of {' or '.join(kinds)}", value)
    entries = []
    for name, entry in value.items():
        if name not in allowed:
            raise SettingsError(f"{path}: {_unknown(f'{key}.{name}', allowed, key)}")
        wanted, kind = _expected(type(allowed[name]))
        if not _is(entry, wanted):
            raise _wrong_type(path, f"{key}.{name}", kind, entry)
        entries.append(f"{name}={entry}")
    return entries


def _expected_of(option: click.Option) -> tuple[type | tuple[type, ...], str]:
    if option.is_flag and option.is_bool_flag:
        return _expected(bool)
    if isinstance(option.type, click.types.IntParamType):
        return _expected(int)
    if isinstance(option.type, click.types.FloatParamType):
        return _expected(float)
    return _expected(str)


def _expected(kind: type) -> tuple[type | tuple[type, ...], str]:
    """The Python types ``tomllib`` gives for a value of ``kind``, and its TOML name."""
    if kind is bool:
        return bool, "boolean"
    if kind is int:
        return int, "integer"
    if kind is float:
        return (int, float), "float"
    return str, "string"


def _is(value: object, wanted: type | tuple[type, ...]) -> bool:
    """``isinstance``, except that a boolean is not an integer here."""
    if isinstance(value, bool):
        return wanted is bool
    return isinstance(value, wanted)


def _wrong_type(path: Path, key: str, kind: str, value: object) -> SettingsError:
    return SettingsError(
        f"{path}: {key} must be a{'n' if kind[0] in 'aeiou' else ''} {kind}, "
        f"not {_toml_type_of(value)} ({_toml_repr(value)})"
    )


def _toml_type_of(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), "a date or time")


def _toml_repr(value: object) -> str:
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    return text if len(text) <= 40 else text[:37] + "..."


def _unknown(key: str, known: Mapping[str, object], table: str | None = None) -> str:
    names = [f"{table}.{name}" for name in known] if table else list(known)
    close = difflib.get_close_matches(key.replace("-", "_"), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    if table is not None:
        return f"unknown key {key!r}{hint} ({table} has {', '.join(known)})"
    return f"unknown key {key!r}{hint}"


def _long_flag(option: click.Option) -> str:
    return next(name for name in option.opts if name.startswith("--"))


def sources(context: click.Context) -> dict[str, list[str]]:
    """Which settings came from where (keys, not values: a URL may hold a password):
    the settings file, the environment (by variable) and the command line."""
    path = context.meta.get(__name__)
    places = {
        ParameterSource.COMMANDLINE: "the command line",
        ParameterSource.ENVIRONMENT: "the environment",
        ParameterSource.DEFAULT_MAP: str(path) if path is not None else "the default map",
    }
    found: dict[str, list[str]] = {}
    for setting in settings_of(context.command):
        name = setting.option.name
        source = context.get_parameter_source(name) if name is not None else None
        if source in places:
            shown = setting.envvar if source is ParameterSource.ENVIRONMENT else setting.key
            found.setdefault(places[source], []).append(shown)
    return found


def log_sources(context: click.Context) -> None:
    """Log (debug) where the settings came from, for the operator wondering which won."""
    for place, keys in sources(context).items():
        logger.debug("settings from %s: %s", place, ", ".join(keys))
