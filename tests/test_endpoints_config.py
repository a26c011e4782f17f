from __future__ import annotations

from pathlib import Path

import pytest

from statehub import DictionaryChange, ResourceLockedError, StateDictionary
from statehub.endpoints.config import ConfigError, EndpointConfig, load_config, parse_config
from statehub.endpoints.service import EndpointService

FIXTURES = Path(__file__).parent / "fixtures"


def test_dripline_example_loads_with_its_options() -> None:
    config = load_config(FIXTURES / "endpoints_dripline.yaml")
    walked = {address: item for address, item, _ in config.walk()}
    assert list(walked) == ["my_store", "my_store.peaches", "my_store.peaches_status"]
    peaches = walked["my_store.peaches"]
    assert isinstance(peaches, EndpointConfig)
    assert peaches.initial_value == 0.75
    assert peaches.calibration == "2*{}"
    assert peaches.log_interval == 10
    assert peaches.get_on_set is True and peaches.log_on_set is True
    # Thresholds not given are off, not 0.
    assert peaches.max_interval is None
    assert peaches.max_absolute_change is None
    assert peaches.max_fractional_change is None
    assert peaches.alert_routing_key == "sensor_value"
    status = walked["my_store.peaches_status"]
    assert isinstance(status, EndpointConfig)
    assert status.calibration == {"CLOSE": "on", "OPEN": "off"}


def test_nested_provider_form_gives_hierarchical_addresses() -> None:
    config = load_config(FIXTURES / "endpoints_providers.yaml")
    endpoints = [a for a, item, _ in config.walk() if isinstance(item, EndpointConfig)]
    assert endpoints == [
        "somenode.kv.foo",
        "somenode.kv.bar",
        "somenode.kv.baz",
        "somenode.valves.v1",
    ]


def test_seed_form_without_a_top_level_name() -> None:
    config = parse_config(
        "providers:\n"
        "  - name: kv_example\n"
        "    module: kv_store\n"
        "    endpoints:\n"
        "      - {name: foo, module: kv_store_key}\n"
        "      - {name: bar, module: kv_store_key}\n"
    )
    assert [address for address, _, _ in config.walk()] == [
        "kv_example",
        "kv_example.foo",
        "kv_example.bar",
    ]


def test_schedule_interval_is_accepted_for_log_interval() -> None:
    config = parse_config("name: s\nendpoints:\n  - {name: a, schedule_interval: 5}\n")
    assert config.endpoints[0].log_interval == 5


@pytest.mark.parametrize(
    ("fixture", "endpoint", "option", "words"),
    [
        ("endpoints_bad_unknown_option.yaml", "peaches", "colour", "unknown option"),
        ("endpoints_bad_type.yaml", "peaches", "log_interval", "valid number"),
        ("endpoints_bad_duplicate.yaml", "foo", "name", "duplicate name"),
        ("endpoints_bad_calibration.yaml", "peaches", "calibration", "does not parse"),
    ],
)
def test_bad_config_names_file_endpoint_and_option(
    fixture: str, endpoint: str, option: str, words: str
) -> None:
    path = FIXTURES / fixture
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"endpoint {endpoint!r}" in message
    assert f"option {option!r}" in message
    assert words in message
    problem = caught.value.problems[0]
    assert (problem.name, problem.option) == (endpoint, option)


def test_every_problem_is_reported_at_once() -> None:
    text = (
        "name: s\n"
        "endpoints:\n"
        "  - {name: a, log_interval: -1, max_interval: x}\n"
        "  - {name: a}\n"
        "  - {name: b, calibration: 'nope({})'}\n"
        "  - {name: c, get_on_set: 'yes please', initial_value: 2024-01-01}\n"
        "providers:\n"
        "  - {name: p, broker: localhost, endpoints: [{name: d.e}]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "many.yaml")
    found = {(p.name, p.option) for p in caught.value.problems}
    assert found == {
        ("a", "log_interval"),
        ("a", "max_interval"),
        ("a", "name"),
        ("b", "calibration"),
        ("c", "get_on_set"),
        ("c", "initial_value"),
        ("p", "broker"),
        ("d.e", "name"),
    }
    assert all(line.startswith("many.yaml: ") for line in str(caught.value).splitlines())


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name: [", "not valid YAML at line 1"),
        ("- 1\n- 2\n", "must be a mapping"),
        ("name: s\nname: t\nendpoints: [{name: a}]\n", "duplicate key 'name'"),
        ("name: s\n", "no endpoints configured"),
        ("name: s\nendpoints:\n  - {name: a, module: thermometer}\n", "unknown endpoint module"),
        ("name: s\nendpoints:\n  - {name: a, log_interval: .inf}\n", "finite"),
        ("name: s\nendpoints:\n  - {name: a, calibration: [1, 2]}\n", "calibration"),
    ],
)
def test_other_bad_configs(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=r"^bad\.yaml: ") as caught:
        parse_config(text, "bad.yaml")
    assert words in str(caught.value)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_nothing_starts_half_configured() -> None:
    """If one key cannot be claimed, no key is leased or written."""
    state = StateDictionary()
    state.update_locks("squatter", {"my_store.peaches_status": None})
    config = load_config(FIXTURES / "endpoints_dripline.yaml")
    with pytest.raises(ResourceLockedError):
        EndpointService(state, config)
    assert state.copy_content() == {}
    assert [lease.key for lease in state.leases()] == ["my_store.peaches_status"]


def test_initial_values_are_written_unless_the_state_has_the_key() -> None:
    state = StateDictionary()
    state.update_state("earlier", DictionaryChange({"my_store.peaches": 5}))
    EndpointService(state, load_config(FIXTURES / "endpoints_dripline.yaml"))
    assert state.copy_content() == {"my_store.peaches": 5, "my_store.peaches_status": "CLOSE"}


def test_serve_refuses_a_bad_config_before_starting() -> None:
    from click.testing import CliRunner

    from statehub.cli import main

    path = FIXTURES / "endpoints_bad_unknown_option.yaml"
    result = CliRunner().invoke(main, ["serve", "--port", "0", "--config", str(path)])
    assert result.exit_code == 1
    assert "serving" not in result.output
    assert f"{path}: endpoint 'peaches' (endpoints[0]): option 'colour': unknown option" in (
        result.output
    )
