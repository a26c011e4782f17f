"""How the client commands report trouble: one line on stderr and exit status 1."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import click

from statehub.errors import StatehubError
from statehub.protocol.errors import error_message


@contextmanager
def reported_client_errors() -> Iterator[None]:
    """statehub errors become one-line CLI errors, Ctrl-C a quiet exit.

    The commands report connection trouble themselves, in one line: the client's own
    warnings (e.g. "lost the connection") are kept off the terminal meanwhile.
    """
    client_logger = logging.getLogger("statehub.client")
    propagate = client_logger.propagate
    client_logger.propagate = False
    silence = logging.NullHandler()
    client_logger.addHandler(silence)
    try:
        yield
    except KeyboardInterrupt:
        pass
    except (StatehubError, LookupError, TypeError, ValueError, OSError) as error:
        raise click.ClickException(f"{type(error).__name__}: {error_message(error)}") from None
    finally:
        client_logger.removeHandler(silence)
        client_logger.propagate = propagate
