"""What the warm start says while it works (pure): the one line for an exchange that cannot be reached
or refuses this machine, and the REST paging's progress with the time left at its rate (at
real rates a start late in the UTC day pages for half an hour, and `status` said only "rest N trades")."""

from __future__ import annotations

import time

from producers.binance.rest import RestRestricted, RestUnavailable
from producers.binance.warm_start import HOUR_MS, SymbolPriming, restricted_message, unreachable_message


def test_the_rest_phase_says_how_far_it_has_paged_and_how_long_is_left_at_its_rate():
    state = SymbolPriming(
        "BTCUSDT",
        phase="rest",
        trades=250_000,
        rest_span=(0, 10 * HOUR_MS),
        rest_at_ms=int(2.5 * HOUR_MS),
        rest_began=time.monotonic() - 60.0,
    )
    # a quarter in a minute: three more minutes
    assert state.describe() == "BTCUSDT rest 250,000 trades, 2.5 of 10.0 h paged, ~3 min left at this rate"
    assert SymbolPriming("BTCUSDT", phase="rest", trades=0).describe() == "BTCUSDT rest 0 trades"


def test_the_one_lines_name_the_status_word_the_cause_and_what_to_do():
    url = "https://fapi.binance.com"
    line = unreachable_message(RestUnavailable(f"{url}/fapi/v1/time: ClientConnectorDNSError: no name"), url, 5.0)
    assert line.startswith("unreachable: ") and "ClientConnectorDNSError" in line and "Retrying in 5 s." in line
    for status, cause in ((451, "HTTP 451"), (403, "HTTP 403")):
        line = restricted_message(RestRestricted(f"{url}/fapi/v1/time: HTTP {status}", status), url, 10.0)
        assert line.startswith("restricted: ") and cause in line and "Retrying in 10 s." in line
        for what_to_do in ("use a venue you may use", "--rest-url/--ws-url", "tapeflow up --source replay:DIR"):
            assert what_to_do in line
        assert "\n" not in line
