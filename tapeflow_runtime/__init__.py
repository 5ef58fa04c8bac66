"""The shared runtime every tapeflow process stands on: settings, paths, logging, Kafka helpers, the
publisher, health and /metrics serving, endpoints and secrets, process records and the root exception.

It is the bottom layer above `schemas/`: it imports only `schemas` and third-party libraries, never a
service package (`producers`, `sinks`, `stream_apps`, `execution`) nor the CLI and stack supervisor in
`tapeflow/` (tests/test_layers.py walks the imports and fails on a violation).
"""
