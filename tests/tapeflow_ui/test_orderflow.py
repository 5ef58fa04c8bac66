"""The order-flow arithmetic (tapeflow_ui.orderflow) on hand-computed examples."""

from __future__ import annotations

import pytest

from tapeflow_ui.orderflow import Level, imbalances, nice_step, poc, session_vwap, value_area

# volumes per level 10..16: 2, 5, 9, 12, 4, 3, 1 (total 36; 70 % = 25.2)
PROFILE = [
    Level(10, 1, 1),
    Level(11, 3, 2),
    Level(12, 4, 5),
    Level(13, 6, 6),
    Level(14, 1, 3),
    Level(15, 2, 1),
    Level(16, 0, 1),
]


def test_poc_is_the_level_with_most_volume_and_the_lower_one_on_a_tie():
    assert poc(PROFILE) == 13
    assert poc([Level(5, 2, 0), Level(7, 1, 1), Level(9, 0, 1)]) == 5  # 5 and 7 both hold 2
    assert poc([]) is None


def test_value_area_grows_from_the_poc_towards_the_larger_neighbour_until_it_holds_70_percent():
    # 13 (12) -> 12 is 9 vs 14's 4: take 12 (21) -> 11's 5 vs 14's 4: take 11 (26 >= 25.2): 11..13
    assert value_area(PROFILE) == (11, 13)
    # an up/down tie goes up; a missing level inside the range counts as zero
    assert value_area([Level(1, 2, 0), Level(2, 5, 0), Level(3, 2, 0)], share=0.8) == (1, 3)
    # POC: the lower of two 4s; 4 < 4.5, so it grows up through the empty level 2 (0 >= nothing below) to 3
    assert value_area([Level(1, 4, 0), Level(3, 4, 0), Level(4, 1, 0)], share=0.5) == (1, 3)
    assert value_area([Level(1, 4, 0), Level(3, 5, 0)], share=0.9) == (1, 3)


def test_diagonal_imbalances_compare_the_ask_with_the_bid_one_level_below():
    levels = [
        Level(100, bought=1, sold=2),
        Level(101, bought=6, sold=1),
        Level(102, bought=0.5, sold=9),
        Level(103, bought=2, sold=0),
    ]
    # 101: bought 6 >= 3 x sold@100 (2) -> buy; 102: sold 9 >= 3 x bought@103 (2) -> sell;
    # 100: sold 2 vs bought@101 6 -> none, bought 1 vs nothing below -> buy (a zero side counts);
    # 103: bought 2 >= 3 x sold@102 (9)? no; sold 0 -> none
    assert imbalances(levels) == {100: "buy", 101: "buy", 102: "sell"}
    assert imbalances(levels, min_qty=1.5) == {101: "buy", 102: "sell"}


def test_session_vwap_restarts_at_each_utc_day():
    day = 86_400
    times = [day - 120, day - 60, day, day + 60]
    quote = [100.0, 300.0, 50.0, 70.0]
    volume = [1.0, 2.0, 1.0, 1.0]
    assert session_vwap(times, quote, volume) == [100.0, pytest.approx(400 / 3), 50.0, 60.0]
    assert session_vwap([0], [0.0], [0.0]) == [None]


@pytest.mark.parametrize(("price", "step"), [(30_000.0, 5.0), (2_000.0, 0.2), (0.6, 0.0001), (150.0, 0.02), (0.0, 1.0)])
def test_nice_step_is_one_two_or_five_times_a_power_of_ten(price, step):
    assert nice_step(price) == step


def test_the_ui_reads_an_external_database_as_the_readonly_role_or_not_at_all(tmp_path):
    import psycopg
    from pydantic import SecretStr

    from tapeflow_runtime.paths import StackPaths
    from tapeflow_runtime.settings import Settings
    from tapeflow_ui.service import UIError, readonly_conninfo

    url = "postgresql://owner:ownerpw@db.example:5433/tapeflow"
    with pytest.raises(UIError, match="TAPEFLOW_READONLY_PASSWORD"):
        readonly_conninfo(Settings(home=tmp_path, database_url=url), StackPaths(tmp_path))
    info = psycopg.conninfo.conninfo_to_dict(
        readonly_conninfo(
            Settings(home=tmp_path, database_url=url, readonly_password=SecretStr("ro-pw")), StackPaths(tmp_path)
        )
    )
    assert (info["user"], info["password"], info["host"], info["port"], info["dbname"]) == (
        "tapeflow_readonly",
        "ro-pw",
        "db.example",
        "5433",
        "tapeflow",
    )
