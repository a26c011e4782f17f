"""A RabbitMQ for the dripline tests, started in a fresh directory and stopped after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from statehub.dripline.broker import BrokerUnavailable, TemporaryBroker


def temporary_broker() -> Iterator[TemporaryBroker]:
    """Body of a ``rabbitmq`` fixture (module or session scope: it takes seconds to
    start); skips the tests where no RabbitMQ can run."""
    try:
        broker = TemporaryBroker()
    except BrokerUnavailable as error:
        pytest.skip(f"no RabbitMQ broker can run here: {error}")
    with broker:
        yield broker
