"""statehub on a dripline mesh (AMQP, RabbitMQ): its endpoints served as dripline
services, and a client for any dripline service.

- ``wire``: dripline v3 message headers, payloads and return codes as AMQP messages;
- ``chunks``: splitting payloads over the mesh's maximum and putting them back together;
- ``settings``: the ``dripline_mesh`` configuration block, the broker URL, credentials;
- ``operations``: which services go on the mesh, and dripline requests as
  ``EndpointService`` operations (the same ones statehub's own protocol runs);
- ``mesh``: the service edge on the broker: queues, replies, alerts, heartbeats,
  reconnection;
- ``client``: ``AsyncDriplineClient`` and its blocking facade ``DriplineClient``;
- ``serving``: ``statehub serve --dripline``;
- ``broker``: a throwaway RabbitMQ broker for tests and benchmarks.

Import from the modules; this package imports nothing itself, so statehub without the
``dripline`` extra (aio-pika) still imports.
"""
