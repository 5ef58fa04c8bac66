"""The consumer-lag light (``tapeflow_ui.overview.lag_light``) from hand-made lag snapshots: the states
at the documented limits, a figure that stopped refreshing, a broker that does not answer."""

from __future__ import annotations

from tapeflow_ui.overview import LAG_BAD, LAG_STALE_S, LAG_WARN, LagWatch, lag_light


def group(name: str, lag: int, state: str = "stable", members: int = 1) -> dict:
    return {"group": name, "state": state, "members": members, "total_lag": lag, "partitions": []}


def snap(groups, at: float = 1000.0, error: str | None = None) -> dict:
    return {"groups": groups, "fetched_at": at, "error": error, "warn": LAG_WARN, "bad": LAG_BAD}


def test_the_worst_group_sets_the_light_at_the_documented_limits():
    assert lag_light(snap([group("a", 0), group("b", LAG_WARN)]), 1000.0)["state"] == "ok"
    warn = lag_light(snap([group("a", LAG_WARN + 1), group("b", 3)]), 1000.0)
    assert warn["state"] == "warn" and warn["detail"] == f"a: {LAG_WARN + 1:,} behind (stable, 1 members)"
    bad = lag_light(snap([group("a", LAG_WARN + 1), group("sink", LAG_BAD + 1, "empty", 0)]), 1000.0)
    assert bad["state"] == "bad" and bad["detail"].startswith(f"sink: {LAG_BAD + 1:,} behind (empty, 0 members); a: ")
    assert bad["link"] == "/api/quality/lag"
    assert lag_light(snap([]), 1000.0) | {"link": None} == {
        "check": "consumer lag", "state": "ok", "detail": "0 groups, at most 0 records behind", "link": None}


def test_an_old_figure_or_a_silent_broker_is_not_ok():
    stale = lag_light(snap([group("a", 0)]), 1000.0 + LAG_STALE_S + 1)
    assert stale["state"] == "warn" and stale["detail"].endswith(f"figure {LAG_STALE_S + 1:.0f} s old")
    assert lag_light(snap([group("a", LAG_BAD + 1)]), 1000.0 + LAG_STALE_S + 1)["state"] == "bad"
    never = lag_light({"groups": None, "fetched_at": None, "error": "KafkaException: timed out"}, 1000.0)
    assert never["state"] == "bad" and "timed out" in never["detail"]
    assert lag_light(None, 1000.0)["state"] == "info"


def test_the_watch_keeps_the_last_answer_and_says_when_the_broker_fails():
    answers = [[group("a", 7)], RuntimeError("no broker")]

    def fetch():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    watch = LagWatch(fetch, clock=lambda: 50.0)
    watch.refresh()
    assert watch.snapshot()["groups"] == [group("a", 7)] and watch.snapshot()["fetched_at"] == 50.0
    watch.refresh()
    snapshot = watch.snapshot()
    assert snapshot["groups"] == [group("a", 7)] and snapshot["error"] == "RuntimeError: no broker"
    assert lag_light(snapshot, 55.0)["state"] == "warn"  # the last figure, not trusted any more


def test_the_lag_watch_asks_the_broker_only_while_a_page_shows_the_light():
    """Each lag figure costs the embedded broker a listing of every batch: nobody looking, no asking."""
    import threading

    from tapeflow_ui.overview import LAG_ACTIVE_S

    now = [1_000.0]
    asked = threading.Event()
    calls = []

    def fetch():
        calls.append(now[0])
        asked.set()
        return []

    watch = LagWatch(fetch, refresh_s=0.05, clock=lambda: now[0])
    watch.start()
    try:
        assert not asked.wait(0.5) and calls == []  # started, never looked at: silent
        watch.snapshot()  # a page shows the light: asked at once, then every period
        assert asked.wait(5)
        asked.clear()
        assert asked.wait(5)
        now[0] += LAG_ACTIVE_S + 1  # nobody looked since
        while asked.wait(0.3):  # the period in flight may still ask once
            asked.clear()
        assert not asked.wait(0.5)
        watch.snapshot()
        assert asked.wait(5)  # woken by the next look
    finally:
        watch.stop()
