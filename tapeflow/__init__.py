"""tapeflow's shared plumbing: the `tapeflow` CLI, settings, logging and the embedded stack supervisor.

Domain code lives in the top-level packages named after their room (producers, stream_apps, sinks,
execution, schemas); this package only wires them together.
"""

__version__ = "0.1.0"
