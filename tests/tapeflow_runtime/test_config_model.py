"""The shared base of the config sections (``tapeflow_runtime.config_model``): unknown keys refused, a
section frozen, and the strictly-increasing check the routing table and management validators use."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tapeflow_runtime.config_model import StrictModel, strictly_increasing


class _Section(StrictModel):
    wait_ms: int = 5


def test_a_section_refuses_unknown_keys_and_is_frozen():
    with pytest.raises(ValidationError, match="extra"):
        _Section.model_validate({"wiat_ms": 3})
    section = _Section(wait_ms=3)
    with pytest.raises(ValidationError, match="frozen"):
        section.wait_ms = 4
    assert hash(section) == hash(_Section(wait_ms=3))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], True),
        ([0.05], True),
        ([0.05, 0.10, 0.2], True),
        ([0.05, 0.05], False),  # the same step twice
        ([0.10, 0.05], False),  # out of order
        ([200.0, 500.0, 400.0], False),  # one bound below the one before, late in the list
    ],
)
def test_strictly_increasing(values, expected):
    assert strictly_increasing(values) is expected
