"""A replay's pace is written one way everywhere (`up --replay-speed`, `TAPEFLOW_REPLAY_SPEED`, `replay
--speed`, the fake exchange's `--speed`): `max` or a positive factor, with or without the `x`. Before,
`replay` took `10x` and `up` refused it while taking `10`."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fake_exchange.config import FakeExchangeConfig
from tapeflow_runtime.settings import Settings
from tapeflow_runtime.speed import parse_speed, speed_text


@pytest.mark.parametrize(
    ("text", "factor"),
    [
        ("1", 1.0),
        ("1x", 1.0),
        (" 10X ", 10.0),
        ("0.5x", 0.5),
        ("60", 60.0),
        ("max", None),
        ("MAX", None),
        ("1234567", 1234567.0),
        ("0.1x", 0.1),
    ],
)
def test_a_speed_is_a_factor_or_max(text, factor):
    assert parse_speed(text) == factor
    assert parse_speed(speed_text(parse_speed(text))) == factor  # what is passed on reads back the same


@pytest.mark.parametrize("text", ["0", "0x", "-1", "x", "fast", "", "nan", "inf", "1xx"])
def test_anything_else_says_what_is_expected(text):
    with pytest.raises(ValueError, match=r"expected 1x, 10x, \.\.\. \(the x is optional\) or max"):
        parse_speed(text)


def test_the_stack_and_the_fake_exchange_take_the_same_spellings(tmp_path):
    for text, factor in (("10x", 10.0), ("10", 10.0), ("max", None)):
        settings = Settings(home=tmp_path, replay_speed=text)
        # the stack hands its setting to the fake exchange's --speed as it is
        assert (
            FakeExchangeConfig(synthetic={"symbols": ["BTCUSDT"], "duration_s": 60}, speed=settings.replay_speed).speed
            == factor
        )
    with pytest.raises(ValidationError, match="expected 1x, 10x"):
        Settings(home=tmp_path, replay_speed="fast")
