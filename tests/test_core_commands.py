import asyncio

import pytest

from statehub import CommandFailedError, CommandRegistry, ResourceLockedError


def test_register_run_and_merge_defaults_without_mutating_them() -> None:
    registry = CommandRegistry()
    registry.register("add", lambda a, b: {"sum": a + b}, {"a": 1, "b": 2})
    assert registry.run("add") == {"sum": 3}
    assert registry.run("add", {"b": 10}) == {"sum": 11}
    assert registry.list() == {"add": {"a": 1, "b": 2}}


def test_defaults_are_copied_so_callbacks_cannot_mutate_them() -> None:
    registry = CommandRegistry()

    def append(items: list[int]) -> None:
        items.append(1)

    registry.register("append", append, {"items": []})
    registry.run("append")
    registry.run("append")
    assert registry.commands["append"].default_arguments == {"items": []}


def test_duplicate_name_is_a_value_error() -> None:
    registry = CommandRegistry()
    registry.register("x", lambda: None)
    with pytest.raises(ValueError, match="command 'x' is already registered"):
        registry.register("x", lambda: None)


def test_unregister_unknown_is_a_key_error() -> None:
    registry = CommandRegistry()
    registry.register("x", lambda: None)
    registry.unregister("x")
    with pytest.raises(KeyError, match="no command named 'x'"):
        registry.unregister("x")
    with pytest.raises(KeyError, match="no command named 'x'"):
        registry.run("x")


def test_wrong_arguments_are_a_type_error_naming_the_command() -> None:
    registry = CommandRegistry()
    registry.register("echo", lambda value: {"value": value})
    with pytest.raises(TypeError, match="command 'echo': missing a required argument: 'value'"):
        registry.run("echo")
    with pytest.raises(TypeError, match="command 'echo': got an unexpected keyword argument"):
        registry.run("echo", {"value": 1, "other": 2})


def test_a_raising_command_becomes_command_failed() -> None:
    registry = CommandRegistry()

    def broken() -> None:
        raise ZeroDivisionError("division by zero")

    registry.register("broken", broken)
    with pytest.raises(CommandFailedError, match="command 'broken' failed: division by zero"):
        registry.run("broken")


def test_typed_statehub_errors_pass_through() -> None:
    registry = CommandRegistry()

    def refuse() -> None:
        raise ResourceLockedError("keys leased by another owner: 'k'")

    registry.register("refuse", refuse)
    with pytest.raises(ResourceLockedError):
        registry.run("refuse")


def test_result_must_be_a_dict_or_none() -> None:
    registry = CommandRegistry()
    registry.register("number", lambda: 5)
    with pytest.raises(CommandFailedError, match="returned int; commands return a dict or None"):
        registry.run("number")


def test_commands_is_a_copy() -> None:
    registry = CommandRegistry()
    registry.register("x", lambda: None)
    registry.commands.clear()
    assert list(registry.commands) == ["x"]


async def test_run_async_awaits_coroutines_and_threads_plain_callbacks() -> None:
    registry = CommandRegistry()

    async def later(value: int) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"value": value}

    registry.register("later", later)
    registry.register("plain", lambda: {"ok": True})
    assert await registry.run_async("later", {"value": 3}) == {"value": 3}
    assert await registry.run_async("plain") == {"ok": True}
