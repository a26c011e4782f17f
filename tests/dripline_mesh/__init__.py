"""Tests of statehub on a dripline mesh, against one real RabbitMQ broker."""
