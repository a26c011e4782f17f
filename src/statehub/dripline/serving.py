"""``statehub serve --dripline``: decide whether and where the endpoints go on a mesh
(before anything starts, so a bad setting stops start-up), then serve them there.

This module imports aio-pika only when a mesh is actually served, so ``statehub serve``
without ``--dripline`` works without the ``dripline`` extra.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from statehub.dripline.settings import MeshSettings, MeshSettingsError, mesh_settings, parse_block
from statehub.endpoints.config import EndpointsConfig
from statehub.endpoints.service import EndpointService
from statehub.extras import require_extra

logger = logging.getLogger(__name__)


def mesh_for(
    url: str | None, config: EndpointsConfig | None, source: str = "the configuration"
) -> MeshSettings | None:
    """The mesh to serve on: with ``url`` (``--dripline``) or a ``dripline_mesh`` block in
    the configuration; None without either. ``MeshSettingsError`` names what is wrong."""
    if config is None:
        if url is not None:
            raise MeshSettingsError("--dripline needs --config: the endpoints to serve on the mesh")
        return None
    if url is None and config.dripline_mesh is None:
        return None
    if config.name is None and config.endpoints:
        names = ", ".join(repr(endpoint.name) for endpoint in config.endpoints)
        raise MeshSettingsError(
            f"{source}: endpoints {names} are under no named service: a dripline mesh routes "
            "to services, so give the configuration a top-level 'name' (or put the endpoints "
            "under a provider)"
        )
    block = parse_block(config.dripline_mesh, f"{source}: dripline_mesh")
    settings = mesh_settings(url, block)
    require_extra("dripline", "serving endpoints on a dripline mesh")
    return settings


@contextlib.asynccontextmanager
async def on_mesh(service: EndpointService, settings: MeshSettings | None) -> AsyncIterator[None]:
    """Serve ``service`` on the mesh for the body of the block (nothing if no settings).

    The broker need not be up: the service connects in the background and keeps trying.
    """
    if settings is None:
        yield
        return
    from statehub.dripline.mesh import MeshService

    aiormq_logger = logging.getLogger("aiormq.connection")
    aiormq_logger.addFilter(_without_connect_errors)
    mesh = MeshService(service, settings)
    logger.info(
        "dripline mesh: connecting to %s as %s",
        settings.where,
        ", ".join(node.name for node in mesh.nodes),
    )
    try:
        async with mesh:
            yield
    finally:
        aiormq_logger.removeFilter(_without_connect_errors)


def _without_connect_errors(record: logging.LogRecord) -> bool:
    """aiormq logs each failed connection attempt as an ERROR; the mesh already logs it
    once, as a warning that says when it retries."""
    return not record.getMessage().startswith("error when creating transport")
