"""Dripline-style endpoints on the shared state: YAML configuration, calibration,
lockout, value logging with thresholds, dripline return codes.

Import from the modules (``statehub.endpoints.service``, ``.config``, ...): this package
imports nothing itself, so a client that mixes in ``remote`` does not load pydantic,
PyYAML or simpleeval.
"""
