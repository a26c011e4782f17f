"""A throwaway RabbitMQ broker on loopback, for tests and benchmarks.

Runs Debian's ``rabbitmq-server`` (its scripts in ``/usr/lib/rabbitmq/bin``) in a fresh
directory, on free ports, with a node name of its own and no plugins, next to an ``epmd``
of its own (on a free port too, so it never meets another Erlang node on the machine).
As root, the broker runs as the ``rabbitmq`` user and the directory belongs to it.
``stop()`` stops it with ``rabbitmqctl stop`` and kills what is left; ``kill()`` kills it
at once (a crash) and ``start()`` brings it back on the same port and node name.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
STARTUP_TIMEOUT = 90.0


class BrokerUnavailable(RuntimeError):
    """RabbitMQ is not installed here, or cannot run."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class TemporaryBroker:
    """``with TemporaryBroker() as broker: broker.url``."""

    def __init__(self) -> None:
        server = RABBITMQ_BIN / "rabbitmq-server"
        epmd = shutil.which("epmd")
        if not server.exists() or epmd is None:
            raise BrokerUnavailable(
                f"RabbitMQ is not installed ({server} or epmd missing): "
                "apt-get install rabbitmq-server"
            )
        self._server = server
        self._epmd = epmd
        # As root, run as the rabbitmq user through setpriv rather than Popen(user=...):
        # changing user makes Python fork instead of vfork, and a forked copy of this
        # process (gRPC's fork handlers, in a threaded test run) may crash before exec.
        self._run_as: list[str] = []
        self._owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            try:
                user = pwd.getpwnam("rabbitmq")
            except KeyError:
                raise BrokerUnavailable("running as root but there is no rabbitmq user") from None
            if setpriv is None:
                raise BrokerUnavailable("running as root but setpriv (util-linux) is missing")
            self._owner = (user.pw_uid, user.pw_gid)
            self._run_as = [
                setpriv,
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--clear-groups",
            ]
        self.directory = Path(tempfile.mkdtemp(prefix="statehub-rabbitmq-"))
        self.port = free_port()
        self.node = f"statehub-{uuid.uuid4().hex[:12]}@localhost"
        self._epmd_port = free_port()
        (self.directory / "enabled_plugins").write_text("[].\n")
        if self._owner is not None:
            for path in (self.directory, self.directory / "enabled_plugins"):
                os.chown(path, *self._owner)
        self._env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
            "HOME": str(self.directory),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.directory / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.directory / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_PORT": str(self._epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        self._epmd_process: subprocess.Popen[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Start the broker and wait until it accepts AMQP connections."""
        if self._epmd_process is None or self._epmd_process.poll() is not None:
            self._epmd_process = subprocess.Popen(
                [*self._run_as, self._epmd, "-port", str(self._epmd_port), "-address", "127.0.0.1"],
                env=self._env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        with (self.directory / "server.log").open("ab") as log:
            self._process = subprocess.Popen(
                [*self._run_as, str(self._server)],
                env=self._env,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._accepts_connections():
            if self._process.poll() is not None:
                raise BrokerUnavailable(
                    f"rabbitmq-server exited with code {self._process.returncode}: "
                    f"{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self._kill_process_group()
                raise BrokerUnavailable(
                    f"rabbitmq-server did not accept connections within {timeout:g} s: "
                    f"{self._log_tail()}"
                )
            time.sleep(0.1)

    def _accepts_connections(self) -> bool:
        """Whether the AMQP listener (opened last in the broker's boot) answers the
        protocol header with Connection.Start."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as probe:
                probe.sendall(b"AMQP\x00\x00\x09\x01")
                return probe.recv(1) == b"\x01"  # a method frame
        except OSError:
            return False

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "server.log").read_text(errors="replace")[-2000:]
        return "(no log)"

    def kill(self) -> None:
        """Kill the broker at once, as a crash would (epmd stays up)."""
        self._kill_process_group()

    def _kill_process_group(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        """Stop the broker (``rabbitmqctl stop``, else kill it) and its epmd, and remove
        the directory."""
        try:
            if self._process is not None and self._process.poll() is None:
                try:
                    subprocess.run(
                        [*self._run_as, str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, "stop"],
                        env=self._env,
                        cwd=self.directory,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        timeout=30,
                        check=True,
                    )
                    self._process.wait(timeout=30)
                except (subprocess.SubprocessError, OSError):
                    pass
            self._kill_process_group()
        finally:
            epmd, self._epmd_process = self._epmd_process, None
            if epmd is not None:
                epmd.kill()
                epmd.wait(timeout=30)
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> TemporaryBroker:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
