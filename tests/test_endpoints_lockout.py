from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from statehub import DictionaryChange, ResourceLockedError, StateDictionary
from statehub.endpoints.config import load_config
from statehub.endpoints.nodes import ServiceNode, register_service_module
from statehub.endpoints.return_codes import (
    AccessDeniedError,
    InvalidLockoutKeyError,
    InvalidMethodError,
    InvalidPayloadError,
    InvalidRoutingKeyError,
    InvalidSpecifierError,
    InvalidValueError,
    UnhandledExceptionError,
)
from statehub.endpoints.service import EndpointService

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def service() -> EndpointService:
    return EndpointService(StateDictionary(), load_config(FIXTURES / "endpoints_providers.yaml"))


def test_get_set_by_address_or_name(service: EndpointService) -> None:
    assert service.get("somenode.kv.foo") == {"value_raw": 1, "value_cal": 3}
    assert service.get("foo") == {"value_raw": 1, "value_cal": 3}
    assert service.set("foo", 5) == {}  # no get_on_set
    assert service.get("foo") == {"value_raw": 5, "value_cal": 15}
    assert service.state.get("somenode.kv.foo") == 5
    assert service.get("baz") == {"value_raw": [1, 2], "value_cal": [1, 2]}
    assert service.list_endpoints() == {
        "endpoints": ["somenode.kv.foo", "somenode.kv.bar", "somenode.kv.baz", "somenode.valves.v1"]
    }
    assert service.list_endpoints("valves") == {"endpoints": ["somenode.valves.v1"]}
    assert service.cmd("kv", "list_endpoints")["endpoints"] == [
        "somenode.kv.foo",
        "somenode.kv.bar",
        "somenode.kv.baz",
    ]


def test_specifiers(service: EndpointService) -> None:
    assert service.get("somenode.kv.foo.is-locked") == {"is_locked": False, "tag": None}
    assert service.get("foo", "calibration") == {"value": "times3({})"}
    assert service.get("bar.max_interval") == {"value": 60}
    assert service.get("foo.value_cal") == {"value_cal": 3}
    with pytest.raises(InvalidSpecifierError) as caught:
        service.get("foo.colour")
    assert caught.value.code == 310
    with pytest.raises(InvalidRoutingKeyError) as routing:
        service.get("somenode.kv.nothing")
    assert routing.value.code == 102


def test_a_set_that_calibration_refuses_stores_nothing(service: EndpointService) -> None:
    with pytest.raises(InvalidValueError) as caught:
        service.set("v1", "HALF")
    assert caught.value.code == 304
    assert "somenode.valves.v1" in str(caught.value)
    assert service.get("v1")["value_raw"] == "OPEN"
    with pytest.raises(InvalidValueError):
        service.set("foo", (1, 2))  # type: ignore[arg-type]


def test_plain_writes_cannot_bypass_the_service(service: EndpointService) -> None:
    with pytest.raises(ResourceLockedError):
        service.state.update_state("client", DictionaryChange({"somenode.kv.foo": 9}))
    with pytest.raises(ResourceLockedError):
        service.state.update_state("client", DictionaryChange(removals=["somenode.kv.foo"]))
    with pytest.raises(ResourceLockedError):
        service.state.update_state(
            "client", DictionaryChange({"sensor_value.somenode.kv.foo": {"value_raw": 0}})
        )


def test_lock_with_a_generated_key(service: EndpointService) -> None:
    key = service.cmd("foo", "lock")["key"]
    assert isinstance(key, str) and uuid.UUID(key)
    assert service.get("foo.is-locked") == {"is_locked": True, "tag": None}
    with pytest.raises(AccessDeniedError) as caught:
        service.set("foo", 2)
    assert caught.value.code == 307
    with pytest.raises(AccessDeniedError):
        service.set("foo", 2, lockout_key=str(uuid.uuid4()))
    with pytest.raises(AccessDeniedError):
        service.cmd("foo", "set_condition", [1])
    # get and ping always work
    assert service.get("foo")["value_raw"] == 1
    assert service.cmd("foo", "ping") == {}
    assert service.set("foo", 2, lockout_key=key) == {}
    assert service.cmd("foo", "set_condition", [3], lockout_key=key) == {}
    # Other endpoints are not locked.
    assert service.set("bar", 1) == {}


def test_lock_with_a_given_key_and_tag(service: EndpointService) -> None:
    key = str(uuid.uuid4())
    assert service.cmd("foo", "lock", kwargs={"key": key, "tag": "alice"}) == {"key": key}
    assert service.get("foo.is_locked") == {"is_locked": True, "tag": "alice"}
    # Re-locking needs the key; another key is refused.
    with pytest.raises(AccessDeniedError):
        service.cmd("foo", "lock", [str(uuid.uuid4())])
    assert service.cmd("foo", "lock", [key], lockout_key=key.upper()) == {"key": key}


def test_lockout_keys_must_be_uuids(service: EndpointService) -> None:
    with pytest.raises(InvalidLockoutKeyError) as caught:
        service.cmd("foo", "lock", kwargs={"key": "swordfish"})
    assert caught.value.code == 308
    with pytest.raises(InvalidLockoutKeyError):
        service.set("foo", 1, lockout_key="swordfish")
    with pytest.raises(InvalidLockoutKeyError):
        service.set("foo", 1, lockout_key=7)  # type: ignore[arg-type]


def test_unlock_paths(service: EndpointService) -> None:
    assert service.cmd("foo", "unlock") == {
        "unlocked": False,
        "warning": "somenode.kv.foo is already unlocked",
    }
    key = service.cmd("foo", "lock")["key"]
    with pytest.raises(AccessDeniedError):
        service.cmd("foo", "unlock")
    with pytest.raises(AccessDeniedError):
        service.cmd("foo", "unlock", lockout_key=str(uuid.uuid4()))
    assert service.cmd("foo", "unlock", lockout_key=key) == {"unlocked": True}
    assert service.get("foo.is-locked") == {"is_locked": False, "tag": None}
    service.cmd("foo", "lock")
    assert service.cmd("foo", "unlock", kwargs={"force": True}) == {"unlocked": True}
    assert service.set("foo", 3) == {}


def test_locking_a_service_locks_its_endpoints(service: EndpointService) -> None:
    key = service.cmd("kv", "lock", kwargs={"tag": "bob"})["key"]
    for name in ("kv", "foo", "bar", "baz"):
        assert service.get(f"{name}.is-locked") == {"is_locked": True, "tag": "bob"}
    assert service.get("v1.is-locked")["is_locked"] is False
    with pytest.raises(AccessDeniedError):
        service.set("bar", 1)
    assert service.set("bar", 1, lockout_key=key) == {}
    assert service.cmd("kv", "unlock", lockout_key=key) == {"unlocked": True}
    assert service.set("bar", 2) == {}


def test_a_service_lock_is_refused_over_another_key(service: EndpointService) -> None:
    service.cmd("bar", "lock", kwargs={"tag": "carol"})
    with pytest.raises(AccessDeniedError, match=r"somenode\.kv\.bar"):
        service.cmd("kv", "lock")
    # Nothing was locked by the refused request.
    assert service.get("foo.is-locked")["is_locked"] is False
    assert service.get("kv.is-locked")["is_locked"] is False


def test_broadcast_reaches_everything(service: EndpointService) -> None:
    key = service.cmd("broadcast", "lock")["key"]
    assert all(
        service.get(f"{address}.is-locked")["is_locked"]
        for address in service.list_endpoints()["endpoints"]  # type: ignore[union-attr]
    )
    assert service.cmd("broadcast", "ping") == {}
    assert service.cmd("broadcast", "unlock", kwargs={"force": True}) == {"unlocked": True}
    assert service.set("v1", "CLOSE") == {}
    del key


def test_cmd_errors(service: EndpointService) -> None:
    with pytest.raises(InvalidMethodError) as caught:
        service.cmd("foo", "explode")
    assert caught.value.code == 306
    with pytest.raises(InvalidPayloadError) as payload:
        service.cmd("foo", "set_condition")
    assert payload.value.code == 303
    with pytest.raises(InvalidPayloadError):
        service.cmd("foo", "set_condition", ["three"])
    with pytest.raises(InvalidPayloadError):
        service.cmd("foo", "ping", [1])
    with pytest.raises(InvalidMethodError):
        service.set("kv", 1)


class Heater(ServiceNode):
    """A service module overriding the set_condition hook and adding a method."""

    conditions: list[int]

    def cmd_set_condition(self, n: int) -> dict[str, object]:
        self.conditions = [*getattr(self, "conditions", []), n]
        return {"condition": n}

    def cmd_heat(self, watts: float, *, minutes: int = 1) -> dict[str, object]:
        return {"joules": watts * minutes * 60}

    def cmd_melt(self) -> None:
        raise RuntimeError("the heater melted")


def test_service_modules_override_set_condition_and_add_methods() -> None:
    register_service_module("heater_for_test", Heater)
    config = load_config(FIXTURES / "endpoints_dripline.yaml").model_copy(
        update={"module": "heater_for_test"}
    )
    service = EndpointService(StateDictionary(), config)
    assert service.cmd("my_store", "set_condition", [2]) == {"condition": 2}
    assert service.cmd("my_store", "heat", [10], {"minutes": 2}) == {"joules": 1200}
    key = service.cmd("my_store", "lock")["key"]
    with pytest.raises(AccessDeniedError):
        service.cmd("my_store", "heat", [10])
    assert service.cmd("my_store", "heat", [1], lockout_key=key) == {"joules": 60}
    assert service.cmd("my_store", "list_endpoints")["endpoints"] == [
        "my_store.peaches",
        "my_store.peaches_status",
    ]
    with pytest.raises(UnhandledExceptionError, match="the heater melted") as caught:
        service.cmd("my_store", "melt", lockout_key=key)
    assert caught.value.code == 999
