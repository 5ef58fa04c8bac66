"""The operator's commands to one watchlist trader (``xv.commands``, ``execution.watchlist_trader``'s
module docstring has the rules): each ``command_id`` acts once; a command stamped with a time the
trader's inputs have not reached yet waits for them; ``open`` and ``close`` act at the trader's clock on
its books, through its own pair models; every command gets one answer.

The command ids seen and the commands waiting are part of the trader's state (``to_dict``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from execution.client_ids import pair_id
from execution.hedged import HedgedPairs, PairEntry
from stream_apps.cross_venue.events import BookEvent
from stream_apps.watchlist.signals import expected_carry, recheck
from stream_apps.watchlist.strategy import WatchlistStrategy

if TYPE_CHECKING:
    from execution.watchlist_trader import WatchlistTrader

#: an open command is refused when the spread the desk showed is older than this at the trader's clock
MAX_COMMAND_AGE_MS = 120_000


def manual_signal_id(strategy: WatchlistStrategy, command_id: str) -> str:
    """The signal id of a pair opened by hand: the strategy's prefix, then the command's id."""
    return f"xv:{strategy.version_hash}:manual:{command_id}"


class CommandDesk:
    """The commands of one trader: ``receive`` each, ``release`` those whose time came."""

    def __init__(self, trader: WatchlistTrader) -> None:
        self.trader = trader
        self.seen: set[str] = set()  # command ids acted on or refused: a command acts once
        self.pending: list[dict[str, Any]] = []  # commands waiting for the clock to reach their shown_time

    def receive(self, record: Mapping[str, Any]) -> None:
        """Apply one command (a request for another strategy, or an answer, is not for this trader; a
        command seen before does nothing)."""
        trader = self.trader
        if record.get("status") != "requested" or record.get("strategy") != trader.strategy.name:
            return
        cid = record["command_id"]
        if cid in self.seen:
            trader.counters["command_duplicate"] = trader.counters.get("command_duplicate", 0) + 1
            return
        self.seen.add(cid)
        shown = record.get("shown_time")
        if shown is not None and (trader.clock is None or shown > trader.clock):
            self.pending.append(dict(record))  # acts once the inputs reach what the desk showed
            self.pending.sort(key=lambda r: r["shown_time"])  # stable: same time, order of arrival
            return
        self._act(record)

    def release(self) -> None:
        """Act on every waiting command whose time has come, in time order."""
        clock = self.trader.clock
        while self.pending and clock is not None and self.pending[0]["shown_time"] <= clock:
            self._act(self.pending.pop(0))

    def _act(self, record: Mapping[str, Any]) -> None:
        trader = self.trader
        coin, now = record["coin"], trader.clock
        if now is None:
            return self._answer(record, None, "rejected", "the trader has seen no input yet")
        books = trader.books.get(coin, {})
        model = trader._model(coin)
        if getattr(model, "pending", None):  # leg steps due by now happen before the command
            trader._collect(coin, now, model.run_due(now, books))
        if record["action"] == "open":
            self._manual_open(record, coin, now, books, model)
        elif record["action"] == "close":
            self._manual_close(record, coin, now, books, model)
        else:
            self._answer(record, now, "rejected", f"unknown action {record['action']!r}: open or close")

    def _open_problem(
        self, record: Mapping[str, Any], coin: str, now: int, books: Mapping[str, BookEvent]
    ) -> tuple[str | None, dict[Any, str]]:
        """Why an open command cannot act (None: it can), and the symbol of each of its venues."""
        s = self.trader.strategy
        sell, buy = record.get("sell_venue"), record.get("buy_venue")
        shown = record.get("shown_time")
        problem = None
        if sell not in s.venues or buy not in s.venues or sell == buy:
            problem = f"sell {sell} and buy {buy}: two of the strategy's venues ({', '.join(s.venues)})"
        elif shown is not None and now - shown > MAX_COMMAND_AGE_MS:
            problem = (
                f"the spread shown ({shown} ms) is {(now - shown) / 1000:.0f} s older than the trader's books "
                f"({now} ms), limit {MAX_COMMAND_AGE_MS // 1000} s: review it again"
            )
        symbols: dict[Any, str] = {}  # venue -> symbol: the command's, else that of the venue's book
        for venue, key in ((sell, "sell_symbol"), (buy, "buy_symbol")):
            book = books.get(venue) if venue is not None else None
            symbol = record.get(key) or (book.symbol if book is not None else None)
            if symbol is not None:
                symbols[venue] = symbol
            elif problem is None:
                problem = f"no book of {coin} on {venue} seen yet"
        return problem, symbols

    def _manual_open(
        self, record: Mapping[str, Any], coin: str, now: int, books: Mapping[str, BookEvent], model: HedgedPairs
    ) -> None:
        problem, symbols = self._open_problem(record, coin, now, books)
        if problem is not None:
            return self._answer(record, now, "rejected", problem)
        s = self.trader.strategy
        sell, buy = record["sell_venue"], record["buy_venue"]
        sid = manual_signal_id(s, record["command_id"])
        notional = record.get("notional_usd") or s.notional_usd
        self.trader._emit("signal", coin, self._manual_signal(record, sid, coin, now, books, symbols, notional))
        events = model.open(PairEntry(sid, sell, symbols[sell], buy, symbols[buy], notional), now, books)
        self.trader._collect(coin, now, events)
        pid = pair_id(sid)
        pair = model.pairs[pid]
        if events.duplicate:  # the same signal id applied before (the command ids guard this first)
            return self._answer(record, now, "rejected", f"pair {pid} exists already", pid)
        status = "rejected" if pair.status == "rejected" else "done"
        detail = f"pair {pid} {pair.status}" + (f": {pair.reason}" if pair.reason else "")
        self._answer(record, now, status, detail, pid)

    def _manual_signal(
        self,
        record: Mapping[str, Any],
        sid: str,
        coin: str,
        now: int,
        books: Mapping[str, BookEvent],
        symbols: Mapping[Any, str],
        notional: float,
    ) -> dict[str, Any]:
        """The xv.signals record of an open command: status ``signal``, reason ``manual``, the entry
        re-checked on the books (``signals.recheck``)."""
        s = self.trader.strategy
        sell, buy = record["sell_venue"], record["buy_venue"]
        entry = recheck(s, sell, buy, books, now)
        shown_spread = record.get("shown_spread")
        return {
            "signal_id": sid,
            "strategy": s.name,
            "strategy_version": s.version,
            "config_hash": s.config_hash,
            "coin": coin,
            "eval_time": now,
            "sell_venue": sell,
            "buy_venue": buy,
            "sell_symbol": symbols[sell],
            "buy_symbol": symbols[buy],
            "notional_usd": notional,
            "status": "signal",
            "reason": "manual",
            "z_1h": None,
            "spread_sweep": shown_spread,
            "net_spread": None if shown_spread is None else shown_spread - s.four_fees(sell, buy),
            "funding_diff_8h": None,
            "entry_spread": entry.spread,
            "entry_net_spread": entry.net_spread,
            "entry_sell_vwap": entry.sell_vwap,
            "entry_buy_vwap": entry.buy_vwap,
            "expected_pnl": None,
            "win_prob": None,
            "imputed": {},
            "feature_id": None,
            **expected_carry(s, sell, buy, None, entry.sweep_cost),
        }

    def _manual_close(
        self, record: Mapping[str, Any], coin: str, now: int, books: Mapping[str, BookEvent], model: HedgedPairs
    ) -> None:
        pid = record.get("pair_id")
        pair = model.pairs.get(pid) if pid else None
        if pid is None or pair is None:
            return self._answer(
                record, now, "rejected", f"no pair {pid} of {coin} in strategy {self.trader.strategy.name}", pid
            )
        if pair.status != "open":
            return self._answer(record, now, "rejected", f"pair {pid} is {pair.status}, not open", pid)
        events = model.close(pid, "manual", now, books)
        self.trader._collect(coin, now, events)
        if events.blocked:
            return self._answer(
                record,
                now,
                "rejected",
                "close blocked, the pair stays open: " + "; ".join(b["reason"] for b in events.blocked),
                pid,
            )
        self._answer(record, now, "done", f"pair {pid} {model.pairs[pid].status} (manual)", pid)

    def _answer(
        self, record: Mapping[str, Any], now: int | None, status: str, detail: str, pid: str | None = None
    ) -> None:
        pair = None if pid is None else self.trader.models.get(record["coin"], HedgedPairs()).pairs.get(pid)
        legs = (
            {}
            if pair is None
            else {
                "sell_venue": pair.legs["short"].venue,
                "sell_symbol": pair.legs["short"].symbol,
                "buy_venue": pair.legs["long"].venue,
                "buy_symbol": pair.legs["long"].symbol,
            }
        )
        self.trader._emit(
            "command",
            record["coin"],
            {
                **record,
                **legs,
                "status": status,
                "acted_time": now,
                "detail": detail,
                "pair_id": pid if pid is not None else record.get("pair_id"),
            },
        )
