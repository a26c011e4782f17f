"""statehub's public names: one errors module under one base class, every error a user
can catch exported from ``statehub``, and the names before 0.2 kept as aliases."""

from __future__ import annotations

import inspect

import pytest

import statehub
import statehub.client
import statehub.errors
from statehub.protocol.errors import error_from_wire

#: Name before 0.2 -> its name now.
RENAMED = {
    "LockFailed": "LockFailedError",
    "CommandFailed": "CommandFailedError",
    "LimitExceeded": "LimitExceededError",
    "ConnectionLost": "ConnectionLostError",
    "RequestCancelled": "RequestCancelledError",
}


def errors_module_classes() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(statehub.errors).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == "statehub.errors"
        and name == value.__name__  # the aliases are checked on their own
    }


def test_every_error_of_the_errors_module_is_a_statehub_error_named_error() -> None:
    classes = errors_module_classes()
    assert classes, "statehub.errors holds no exceptions?"
    for name, cls in classes.items():
        assert issubclass(cls, statehub.StatehubError), name
        assert name.endswith("Error"), name


def test_every_error_of_the_errors_module_is_exported_from_statehub() -> None:
    for name, cls in errors_module_classes().items():
        assert name in statehub.__all__, name
        assert getattr(statehub, name) is cls


@pytest.mark.parametrize("module", [statehub, statehub.errors], ids=lambda m: m.__name__)
@pytest.mark.parametrize(("former", "current"), sorted(RENAMED.items()))
def test_a_former_name_is_its_new_class_and_warns(
    module: object, former: str, current: str
) -> None:
    cls = getattr(statehub.errors, current)
    with pytest.warns(DeprecationWarning, match=rf"\.{former} is deprecated, use .*\.{current}"):
        alias = getattr(module, former)
    assert alias is cls
    with pytest.raises(alias):
        raise cls("raised under the new name, caught under the old one")


def test_former_names_are_not_advertised() -> None:
    for former in RENAMED:
        assert former not in statehub.__all__
        assert former not in dir(statehub)


def test_the_client_package_keeps_connection_lost_too() -> None:
    with pytest.warns(DeprecationWarning, match="statehub.client.ConnectionLost is deprecated"):
        assert statehub.client.ConnectionLost is statehub.ConnectionLostError


#: ConnectionLostError is raised by the client itself: it never travels.
TRAVELLING = sorted(
    (former, current) for former, current in RENAMED.items() if former != "ConnectionLost"
)


@pytest.mark.parametrize(("former", "current"), TRAVELLING)
def test_an_error_sent_under_its_former_name_comes_back_with_its_type(
    former: str, current: str
) -> None:
    error = error_from_wire({"type": former, "message": "from a 0.1 server", "details": {}})
    assert type(error) is getattr(statehub, current)
    assert str(error) == "from a 0.1 server"
