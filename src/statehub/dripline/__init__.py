"""statehub on a dripline mesh (AMQP, RabbitMQ): its endpoints served as dripline
services, and a client for any dripline service.

- ``wire``: dripline v3 message headers, payloads and return codes as AMQP messages;
- ``chunks``: splitting payloads over the mesh's maximum and putting them back together;
- ``settings``: the ``dripline_mesh`` configuration block, the broker URL, credentials;
- ``mesh``: the service edge, which turns dripline requests into ``EndpointService``
  operations (the same ones statehub's own protocol runs) and publishes alerts;
- ``client``: ``AsyncDriplineClient`` and its blocking facade ``DriplineClient``;
- ``broker``: a throwaway RabbitMQ broker for tests and benchmarks.

Import from the modules; this package imports nothing itself, so statehub without the
``dripline`` extra (aio-pika) still imports.
"""
