"""A strategy's own label threshold from its file (``labels: {roi_threshold: ...}``): the labels service
and a backfill label each strategy by its active revision's threshold (the file the stack started on,
then the revision a promote made active), the operator's ``--strategy-threshold`` overriding it. On the
hand-computed samples of ``test_label_job``: signal A earns +6.9 % at 12 h, signal B -3.5 %, trade A
+55 % (net ROI on their basis), so thresholds of 5 %, 10 % and 3 % move B and A between the labels."""

from __future__ import annotations

import psycopg
import yaml

from execution.config import ExecutorConfig
from review.label_job import config_thresholds, label_range, strategy_thresholds, with_strategy_thresholds
from review.label_service import LabelService
from review.labels import LabelParams
from stream_apps.core.strategy import load_strategy, parse_strategy
from tapeflow.rollout import audit, register
from tests.review.test_label_job import NOW, POS_A, SIG_A, SIG_B, T0, H, expected, plant, rows


def _text(threshold: float | None) -> str:
    data = {**load_strategy("v53").model_dump(mode="json"), "name": "s"}
    if threshold is not None:
        data["labels"] = {"roi_threshold": threshold}
    return yaml.safe_dump(data, sort_keys=False)


def _labels(conninfo: str) -> dict[str, str]:
    return {r["sample_id"]: r["label"] for r in rows(conninfo)}


def test_a_strategy_is_labelled_by_its_active_revisions_threshold(migrated_database, tmp_path):
    want = expected()
    roi = {sid: w["net"] / w["basis"] for (_, sid), w in want.items()}
    assert 0.05 < roi[SIG_A] < 0.10 and -0.05 < roi[SIG_B] < -0.03 and roi[POS_A] > 0.10  # the planted ROIs
    started = tmp_path / "s.yaml"
    started.write_text(_text(0.05), encoding="utf-8")
    with psycopg.connect(migrated_database, autocommit=True) as conn:
        plant(conn)
        assert strategy_thresholds(conn, {"s": started}) == {"s": 0.05}

    # the service's pass: the file the stack started on sets 5 %: B's -3.5 % is neutral (0.5 %: neg)
    service = LabelService(
        migrated_database, ["paper"], LabelParams(), ExecutorConfig(), strategy_files=lambda: {"s": started}
    )
    service.run_once(NOW)
    assert service.status == "running", service.detail
    assert _labels(migrated_database) == {SIG_A: "pos", SIG_B: "neutral", POS_A: "pos"}
    assert {r["threshold"] for r in rows(migrated_database)} == {0.05}

    # a promote makes rev 2 (10 %) active: a backfill labels by it; A's +6.9 % is neutral now
    with psycopg.connect(migrated_database, autocommit=True) as conn:
        register(conn, parse_strategy(yaml.safe_load(_text(0.05))), _text(0.05), "t", NOW, "running file")
        ten = _text(0.10)
        register(conn, parse_strategy(yaml.safe_load(ten)), ten, "t", NOW, "wider")
        audit(conn, NOW, "t", "promote", "s", 1, 2, "", "wider", 1)

    def backfill(params: LabelParams) -> dict[str, str]:
        params = with_strategy_thresholds(migrated_database, params, {"s": started})
        label_range(migrated_database, ["paper"], T0, T0 + 3 * H, params=params, config=ExecutorConfig(), now_ms=NOW)
        return _labels(migrated_database)

    assert backfill(LabelParams()) == {SIG_A: "neutral", SIG_B: "neutral", POS_A: "pos"}
    # the operator's --strategy-threshold s=3 wins over the file; --threshold applies to the others only
    assert backfill(LabelParams(default_threshold=0.5, thresholds={"s": 0.03})) == {
        SIG_A: "pos",
        SIG_B: "neg",
        POS_A: "pos",
    }
    # a file without labels: the default threshold
    plain = tmp_path / "plain.yaml"
    plain.write_text(_text(None), encoding="utf-8")
    with psycopg.connect(migrated_database) as conn:
        assert strategy_thresholds(conn, {"s": started, "other": plain}) == {"s": 0.10}


def test_a_backtest_labels_its_strategies_by_their_files():
    with_own = parse_strategy(yaml.safe_load(_text(0.02)))
    without = parse_strategy(yaml.safe_load(_text(None).replace("name: s", "name: t")))
    assert config_thresholds([with_own, without]) == {"s": 0.02}
    assert LabelParams(thresholds=config_thresholds([with_own])).threshold("s") == 0.02
    assert LabelParams(thresholds=config_thresholds([with_own])).threshold("t") == 0.005  # the default
