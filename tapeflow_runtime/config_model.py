"""The base of tapeflow's config sections that users write and review (a strategy's routing table, the
executor's config and its position management) and the checks their validators share.

Why here, in the runtime layer: the routing table lives in ``stream_apps`` and the executor's config and
management in ``execution``, and ``stream_apps`` may not import ``execution`` (``tests/test_layers.py``);
the runtime is the lowest layer both import, so one definition serves both.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A config section: unknown keys are refused (a typo such as ``daly_loss_limit_r`` must not fall back
    to a default silently) and a loaded section is frozen (read-only and hashable while it trades)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def strictly_increasing(values: Sequence[float]) -> bool:
    """Whether each value is above the one before (ladders and bucket bounds: no step twice, none out of
    order); true for fewer than two values."""
    return all(a < b for a, b in zip(values, values[1:], strict=False))
