"""Seeing what is on a server: ``statehub keys | leases | locks | sessions``."""

from __future__ import annotations

import click

from statehub.cli.client_commands import connect, run
from statehub.cli.options import server_options
from statehub.cli.output import dumps, emit, output_option
from statehub.client.listing import ReleasedHold


@click.command()
@click.argument("prefix", default="")
@click.option("--values", is_flag=True, help="Print each key's value too.")
@click.option(
    "--long",
    "-l",
    "long",
    is_flag=True,
    help="Print each key's revision of last change, creating revision and version too "
    "(and seconds left, if some key expires).",
)
@output_option()
@server_options
def keys(prefix: str, values: bool, long: bool, output: str, host: str, port: int) -> None:
    """List the keys starting with PREFIX (every key without one), sorted."""

    async def main() -> None:
        async with connect(host, port) as client:
            if long:
                entries = await client.entries(prefix)
                expiring = any(entry.expires_in is not None for entry in entries)
                data = [
                    {
                        "key": entry.key,
                        "mod_revision": entry.mod_revision,
                        "create_revision": entry.create_revision,
                        "version": entry.version,
                        **({} if entry.expires_in is None else {"expires_in": entry.expires_in}),
                        **({"value": entry.value} if values else {}),
                    }
                    for entry in entries
                ]
                columns = ["key", "revision", "created", "version"]
                if expiring:
                    columns.append("expires_in")
                rows = [
                    [
                        entry.key,
                        str(entry.mod_revision),
                        str(entry.create_revision),
                        str(entry.version),
                        *([_seconds_left(entry.expires_in)] if expiring else []),
                        *([dumps(entry.value)] if values else []),
                    ]
                    for entry in entries
                ]
                emit(
                    output, data, [*columns, *(["value"] if values else [])], rows, empty="no keys"
                )
            elif values:
                found = await client.get_prefix(prefix)
                rows = [[key, dumps(value)] for key, value in found.items()]
                emit(output, found, ["key", "value"], rows, empty="no keys")
            else:
                names = await client.keys(prefix)
                emit(output, names, ["key"], [[name] for name in names], empty="no keys")

    run(main)


_FORCE_RELEASE_HELP = (
    "Take the {kind} on KEY away from whoever holds it, instead of listing (admin right "
    "'force_unlock'); the holding client is told it lost it."
)


@click.command()
@click.option(
    "--force-release", "force_key", metavar="KEY", help=_FORCE_RELEASE_HELP.format(kind="lease")
)
@output_option()
@server_options
def leases(force_key: str | None, output: str, host: str, port: int) -> None:
    """List the live leases: key, held by this client, seconds left."""

    async def main() -> None:
        async with connect(host, port) as client:
            if force_key is not None:
                _report_released("lease", force_key, await client.force_release("lease", force_key))
                return
            found = await client.leases()
        rows = [[lease.key, _seconds(lease.seconds_left)] for lease in found]
        data = [{"key": lease.key, "seconds_left": lease.seconds_left} for lease in found]
        emit(output, data, ["key", "seconds left"], rows, empty="no leases")

    run(main)


@click.command()
@click.option(
    "--force-release", "force_key", metavar="KEY", help=_FORCE_RELEASE_HELP.format(kind="lock")
)
@output_option()
@server_options
def locks(force_key: str | None, output: str, host: str, port: int) -> None:
    """List the read/write locks held: key, mode, holders (client, session), waiting."""

    async def main() -> None:
        async with connect(host, port) as client:
            if force_key is not None:
                _report_released("lock", force_key, await client.force_release("lock", force_key))
                return
            found = await client.locks()
        rows = [
            [
                lock.key,
                lock.mode,
                ", ".join(_holder(h.client, h.session) for h in lock.holders),
                lock.waiting,
            ]
            for lock in found
        ]
        data = [
            {key: value for key, value in lock.as_dict().items() if key != "mine"} for lock in found
        ]
        emit(output, data, ["key", "mode", "held by", "waiting"], rows, empty="no locks held")

    run(main)


@click.command()
@output_option()
@server_options
def sessions(output: str, host: str, port: int) -> None:
    """List the connected sessions: client name, address, subscriptions."""

    async def main() -> None:
        async with connect(host, port) as client:
            found = [s for s in await client.sessions() if not s.you]  # not this command's own
        rows = [[s.client or "?", s.peer, s.subscriptions, s.session] for s in found]
        data = [{key: value for key, value in s.as_dict().items() if key != "you"} for s in found]
        emit(
            output,
            data,
            ["client", "address", "subscriptions", "session"],
            rows,
            empty="no other sessions",
        )

    run(main)


def _report_released(kind: str, key: str, released: list[ReleasedHold]) -> None:
    for holder in released:
        told = "told" if holder.told else "not told: not a session of this server"
        session = holder.session[:8] or "another client"
        click.echo(f"force-released the {kind} on {key!r} held by session {session} ({told})")


def _seconds(left: float | None) -> str:
    return "never expires" if left is None else f"{left:.1f}"


def _seconds_left(left: float | None) -> str:
    return "-" if left is None else f"{left:.1f}s"


def _holder(client: str, session: str) -> str:
    """A lock holder as the table shows it; one without a session id is one this identity
    may not see (``list_locks`` under ``--auth``)."""
    if not session:
        return "another session"
    return f"{client or '?'} ({session[:8]})"
