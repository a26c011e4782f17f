"""``/metrics``: what a server is doing, in the Prometheus text format (prometheus_client).

Counters move where the events happen (``SessionObserver`` hooks in the sessions, the
NanoVer edge, the event-loop probe); gauges of what is held right now (sessions, leases,
locks) are read from the hub when Prometheus scrapes, so they can never drift.
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from statehub.server.session import Hub, Session, SessionObserver
from statehub.store.sqlite import SQLiteStore
from statehub.web.nanover_socket import NanoverObserver, NanoverRoom

#: Seconds between two event-loop lag probes.
LAG_PROBE_INTERVAL = 0.5
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
_DURABLE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


#: Every ``transport`` label of ``statehub_sessions``, always present (0 when none).
SESSION_TRANSPORTS = ("grpc", "websocket", "tcp", "nanover")


def transport_of(session: Session) -> str:
    return session.peer.transport


class ServerMetrics(SessionObserver, NanoverObserver):
    """One server's metrics, in a registry of its own (several servers may share a process)."""

    def __init__(self, hub: Hub, nanover: NanoverRoom) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "statehub_requests",
            "Session-protocol requests answered, by op and outcome (ok or an error status).",
            ["op", "outcome"],
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "statehub_commit_seconds",
            "Time to commit one update (check leases, apply, number, log).",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.durable_wait_seconds = Histogram(
            "statehub_durable_wait_seconds",
            "Time an update's acknowledgement waited for the store to make it durable.",
            buckets=_DURABLE_BUCKETS,
            registry=registry,
        )
        self.deliveries = Counter(
            "statehub_deliveries",
            "Change batches sent to subscribers after their first (snapshot) batch.",
            registry=registry,
        )
        self.coalesced = Counter(
            "statehub_coalesced_revisions",
            "Revisions folded into a later batch instead of being sent one by one "
            "(for a prefix subscription, revisions outside the prefix count too).",
            registry=registry,
        )
        self.bytes_received = Counter(
            "statehub_received_bytes",
            "Bytes of frames and messages received, by transport.",
            ["transport"],
            registry=registry,
        )
        self.bytes_sent = Counter(
            "statehub_sent_bytes",
            "Bytes of frames and messages sent, by transport.",
            ["transport"],
            registry=registry,
        )
        self.loop_lag = Gauge(
            "statehub_event_loop_lag_seconds",
            f"How late the server's event loop ran a timer due every {LAG_PROBE_INTERVAL} s "
            "(a busy loop delays every client).",
            registry=registry,
        )
        registry.register(_HeldNow(hub, nanover))
        #: Labelled counters by (counter, labels): ``labels()`` costs more than the
        #: increment, and NanoVer rooms count thousands of messages a second.
        self._children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}

    # -- SessionObserver -------------------------------------------------------------

    def frame_received(self, session: Session, size: int) -> None:
        self._labelled(self.bytes_received, transport_of(session)).inc(size)

    def frame_sent(self, session: Session, size: int) -> None:
        self._labelled(self.bytes_sent, transport_of(session)).inc(size)

    def nanover_received(self, size: int) -> None:
        self._labelled(self.bytes_received, "nanover").inc(size)

    def nanover_sent(self, size: int) -> None:
        self._labelled(self.bytes_sent, "nanover").inc(size)

    def request_done(self, op: str, outcome: str) -> None:
        self._labelled(self.requests, op, outcome).inc()

    def _labelled(self, counter: Counter, *labels: str) -> Counter:
        child = self._children.get((counter, labels))
        if child is None:
            child = self._children[counter, labels] = counter.labels(*labels)
        return child

    def committed(self, seconds: float) -> None:
        self.commit_seconds.observe(seconds)

    def durable_waited(self, seconds: float) -> None:
        self.durable_wait_seconds.observe(seconds)

    def delivered(self, revisions: int) -> None:
        self.deliveries.inc()
        if revisions > 1:
            self.coalesced.inc(revisions - 1)

    # -- the rest --------------------------------------------------------------------

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def probe_loop_lag(self) -> None:
        """Measure how late a timer fires, for as long as the server runs."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_PROBE_INTERVAL
            await asyncio.sleep(LAG_PROBE_INTERVAL)
            self.loop_lag.set(max(0.0, loop.time() - due))


class _HeldNow(Collector):
    """Gauges of what the hub holds at scrape time."""

    def __init__(self, hub: Hub, nanover: NanoverRoom) -> None:
        self._hub = hub
        self._nanover = nanover

    def collect(self) -> Iterator[Metric]:
        hub = self._hub
        sessions = GaugeMetricFamily(
            "statehub_sessions", "Connected clients, by transport.", labels=["transport"]
        )
        by_transport = Tally(transport_of(session) for session in list(hub.sessions))
        by_transport["nanover"] = len(self._nanover.connections)
        for transport in SESSION_TRANSPORTS:
            sessions.add_metric([transport], by_transport[transport])
        yield sessions
        yield GaugeMetricFamily(
            "statehub_subscriptions",
            "Live change subscriptions (NanoVer connections each have one).",
            value=sum(session.subscription_count for session in list(hub.sessions))
            + len(self._nanover.connections),
        )
        groups = hub.fanout.sizes()
        yield GaugeMetricFamily(
            "statehub_fanout_groups",
            "Fan-out groups: subscriptions at interval 0 sharing one encoding per change.",
            value=len(groups),
        )
        yield GaugeMetricFamily(
            "statehub_fanout_members",
            "Subscriptions in a fan-out group (the others deliver alone).",
            value=sum(groups.values()),
        )
        yield GaugeMetricFamily("statehub_leases", "Keys leased.", value=len(hub.state.leases()))
        held, waiting = hub.locks.counts()
        yield GaugeMetricFamily("statehub_rwlocks_held", "Read/write lock holds.", value=held)
        yield GaugeMetricFamily(
            "statehub_rwlocks_waiting", "Read/write lock requests waiting.", value=waiting
        )
        yield GaugeMetricFamily(
            "statehub_revision", "The state's current revision.", value=hub.state.revision
        )
        yield GaugeMetricFamily(
            "statehub_commands", "Registered commands.", value=len(hub.commands.commands)
        )
        store = hub.state.store
        if isinstance(store, SQLiteStore):
            yield CounterMetricFamily(
                "statehub_store_fsyncs",
                "Transactions the SQLite store committed to disk (one fsync each); "
                "rate(statehub_store_durable_revision) / rate(statehub_store_fsyncs_total) "
                "is the group commit size.",
                value=store.transactions,
            )
            yield GaugeMetricFamily(
                "statehub_store_durable_revision",
                "The last revision on disk.",
                value=store.durable_revision,
            )
