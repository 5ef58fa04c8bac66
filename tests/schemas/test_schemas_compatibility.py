"""The backward-compatibility rule (new schema reads data written with the old one).

Each case is decided twice: by the hand-written Avro resolution rules, and empirically by writing
random records of the old schema and reading them with fastavro's resolver. The expected verdicts
come from the Avro specification; the two implementations must agree with them and with each other.
"""

from __future__ import annotations

import copy
import random

import pytest

from schemas.avsc import avsc_stems, load_avsc
from schemas.compatibility import (
    backward_incompatibilities,
    check_backward,
    sample_backward_failures,
)
from schemas.errors import IncompatibleSchemaError


def _field(schema: dict, name: str) -> dict:
    return next(f for f in schema["fields"] if f["name"] == name)


def _edit(stem: str, change) -> tuple[dict, dict]:
    old = load_avsc(stem)
    new = copy.deepcopy(old)
    change(new)
    return new, old


def _add_field(field):
    return lambda s: s["fields"].append(field)


def _set_type(name, new_type):
    return lambda s: _field(s, name).update(type=new_type)


def _drop_field(name):
    return lambda s: s["fields"].remove(_field(s, name))


def _enum_symbols(name, symbols, default=None):
    def change(s):
        t = _field(s, name)["type"]
        t = next(b for b in t if isinstance(b, dict)) if isinstance(t, list) else t
        t["symbols"] = symbols
        if default:
            t["default"] = default

    return change


def _price_level_price_type(new_type):
    return lambda s: _field(s, "bids")["type"]["items"]["fields"][0].update(type=new_type)


# (case id, avsc stem, change, compatible?, path expected in the rule report)
CASES = [
    ("added field without default", "trade", _add_field({"name": "source", "type": "string"}), False, "Trade.source"),
    (
        "added field with default",
        "trade",
        _add_field({"name": "source", "type": "string", "default": "ws"}),
        True,
        None,
    ),
    (
        "added nullable field with null default",
        "signal",
        _add_field({"name": "note", "type": ["null", "string"], "default": None}),
        True,
        None,
    ),
    ("removed field", "trade", _drop_field("first_trade_id"), True, None),
    ("removed enum symbol", "trade", _enum_symbols("taker_side", ["BUY"]), False, "Trade.taker_side"),
    (
        "removed enum symbol, enum has default",
        "trade",
        _enum_symbols("taker_side", ["BUY", "UNKNOWN"], default="UNKNOWN"),
        True,
        None,
    ),
    (
        "added enum symbol",
        "order_event",
        _enum_symbols(
            "state",
            ["PENDING_NEW", "NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED", "EXPIRED_IN_MATCH"],
        ),
        True,
        None,
    ),
    (
        "removed symbol of a nullable enum",
        "position_event",
        _enum_symbols(
            "exit_reason", ["tp", "sl", "timeout", "signal_flip", "risk_flatten", "kill_switch", "reconcile"]
        ),
        False,
        "PositionEvent.exit_reason",
    ),
    ("string -> long", "trade", _set_type("symbol", "long"), False, "Trade.symbol"),
    ("int -> long (nullable)", "risk_event", _set_type("consecutive_losses", ["null", "long"]), True, None),
    ("long -> int", "bar", _set_type("trade_count", "int"), False, "Bar.trade_count"),
    ("long -> double", "bar", _set_type("trade_count", "double"), True, None),
    ("string -> bytes", "trade", _set_type("exchange", "bytes"), True, None),
    # The spec allows bytes -> string, but the samples show arbitrary bytes are not UTF-8 (a dead
    # letter's raw frame could be anything), so tapeflow's rule refuses it on purpose.
    ("bytes -> string", "dead_letter", _set_type("value", "string"), False, "DeadLetter.value"),
    ("double -> float", "trade", _set_type("price", "float"), False, "Trade.price"),
    ("required -> nullable", "trade", _set_type("qty", ["null", "double"]), True, None),
    (
        "nullable -> required",
        "order_event",
        lambda s: (_field(s, "price").update(type="double"), _field(s, "price").pop("default")),
        False,
        "OrderEvent.price",
    ),
    ("nested array item type", "depth_diff", _price_level_price_type("string"), False, "DepthDiff.bids[].price"),
    (
        "map values double -> string",
        "signal",
        _set_type("factors", {"type": "map", "values": "string"}),
        False,
        "Signal.factors{}",
    ),
    ("map values int -> double", "market_indicator", None, True, None),  # built below
    ("record renamed", "trade", lambda s: s.update(name="AggTrade"), False, "AggTrade"),
    ("record renamed with alias", "trade", lambda s: s.update(name="AggTrade", aliases=["Trade"]), True, None),
    (
        "field renamed with alias",
        "trade",
        lambda s: _field(s, "qty").update(name="quantity", aliases=["qty"]),
        True,
        None,
    ),
    (
        "field renamed without alias",
        "trade",
        lambda s: _field(s, "qty").update(name="quantity"),
        False,
        "Trade.quantity",
    ),
]


def _build(case):
    name, stem, change, compatible, path = case
    if name == "map values int -> double":
        old = load_avsc(stem)
        _field(old, "extra")["type"] = {"type": "map", "values": "int"}
        new = load_avsc(stem)
        return new, old
    return _edit(stem, change)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_rules_and_samples_agree_with_the_spec(case):
    _, _, _, compatible, path = case
    new, old = _build(case)
    problems = backward_incompatibilities(new, old)
    failures = sample_backward_failures(new, old, samples=200)
    assert (problems == []) is compatible, problems
    assert (failures == []) is compatible, failures
    if path:
        assert path in [p.path for p in problems]


def test_check_backward_raises_with_subject_and_path():
    new, old = _edit("trade", _add_field({"name": "source", "type": "string"}))
    with pytest.raises(
        IncompatibleSchemaError, match=r"^md\.trades-value: .*Trade\.source: field added without a default"
    ):
        check_backward(new, old, subject="md.trades-value")
    check_backward(*_edit("trade", _add_field({"name": "source", "type": "string", "default": "ws"})))


@pytest.mark.parametrize("stem", avsc_stems())
def test_every_committed_schema_reads_itself(stem):
    schema = load_avsc(stem)
    assert backward_incompatibilities(schema, schema) == []
    assert sample_backward_failures(schema, schema, samples=50) == []


def test_recursive_schema_terminates():
    node = {
        "type": "record",
        "name": "Node",
        "namespace": "t",
        "fields": [{"name": "value", "type": "long"}, {"name": "next", "type": ["null", "Node"], "default": None}],
    }
    grown = copy.deepcopy(node)
    grown["fields"].append({"name": "label", "type": "string", "default": ""})
    assert backward_incompatibilities(grown, node) == []
    broken = copy.deepcopy(node)
    broken["fields"][0]["type"] = "string"
    assert [p.path for p in backward_incompatibilities(broken, node)] == ["Node.value"]


def test_sampling_is_deterministic_and_leaves_global_random_alone():
    new, old = _edit("trade", _enum_symbols("taker_side", ["BUY"]))
    random.seed(1234)
    expected_next = random.random()
    random.seed(1234)
    first = sample_backward_failures(new, old, samples=30, seed=7)
    assert random.random() == expected_next
    assert sample_backward_failures(new, old, samples=30, seed=7) == first
