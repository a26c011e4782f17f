"""A script using the blocking Client exits without asyncio's "Task was destroyed" noise.

The noise came from the Client's background loop being closed while grpc still had a
call-status task due to run one more iteration; it showed in a few runs out of 30, so
the script runs many times.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

RUNS = 30
AT_ONCE = 6
SCRIPT = """
from statehub import Client, StateServer

with StateServer(address="127.0.0.1", port=0) as server:
    with Client("127.0.0.1", server.port) as client:
        client.set("k", 1)
        assert client.get("k") == 1
        with client.get_lock("l"):
            pass
        for change in client.subscribe():
            break
    with Client("127.0.0.1", server.port) as client:
        assert client.get("k") == 1
"""


def test_scripts_using_the_blocking_client_exit_with_a_clean_stderr() -> None:
    noisy = []
    for start in range(0, RUNS, AT_ONCE):
        batch = [
            subprocess.Popen(
                [sys.executable, "-c", SCRIPT],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(start, min(start + AT_ONCE, RUNS))
        ]
        for process in batch:
            _, stderr = process.communicate(timeout=120)
            if process.returncode != 0 or stderr:
                noisy.append((process.returncode, stderr))
    assert noisy == [], f"{len(noisy)} of {RUNS} runs were not clean; first: {noisy[0]}"


def test_a_blocking_call_from_an_event_callback_fails_instead_of_hanging() -> None:
    """Over gRPC (and WebSocket) every blocking Client shares one background event loop,
    so a blocking call from a callback running in it would wait for itself. (Over plain
    TCP a callback runs in the thread that noticed the event, with no shared loop.)"""
    from statehub import Client
    from support.client_servers import threaded_server
    from support.polling import eventually_sync

    server = threaded_server()
    errors: list[BaseException] = []
    address = f"statehub+grpc://127.0.0.1:{server.grpc_port}"
    try:
        with Client(address) as client, Client(address) as other:

            def on_lost(reason: str) -> None:
                try:
                    other.get("k")
                except RuntimeError as error:
                    errors.append(error)

            client.connection_lost.add_callback(on_lost)
            server.close()
            eventually_sync(lambda: errors, "the callback's blocking call failing", timeout=20)
    finally:
        server.close()
    assert errors and "event callback" in str(errors[0])


def test_over_tcp_a_blocking_call_from_a_callback_fails_instead_of_waiting_for_itself() -> None:
    """Over plain TCP the thread reading for every caller runs the callbacks: a blocking
    call of the same client from one would wait for that very thread."""
    from statehub import Client, LockLostError
    from support.client_servers import threaded_server

    server = threaded_server()
    errors: list[BaseException] = []
    try:
        address = f"statehub://127.0.0.1:{server.tcp_port}"
        with Client(address, name="holder") as holder, Client(address) as admin:

            def on_locks_lost(keys: list[str]) -> None:
                try:
                    holder.get("k")
                except RuntimeError as error:
                    errors.append(error)

            holder.locks_lost.add_callback(on_locks_lost)
            with pytest.raises(LockLostError), holder.get_lock("lab.valve"):
                admin.force_release("lock", "lab.valve")
                holder.get("anything")  # reads the lost message: the callback runs here
            assert holder.get("k") is None  # and the client still works
    finally:
        server.close()
    assert errors and "event callback" in str(errors[0])
