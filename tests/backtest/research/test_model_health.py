"""Confidence-model health: the rolling AUC and Brier score by hand, the verdict, the stored feature rows
rebuilt in the model's order, and (real PostgreSQL) a degraded model, whose trades' outcomes were shuffled
relative to their features, judged unhealthy by the labels service's job (rows, gauges), refused by the
promotion gate and rolled back by the guardrail controller, while the healthy model passes."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import psycopg
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from backtest.research.cli import ResearchError
from backtest.research.model_health import (
    HealthThresholds,
    ModelCache,
    ModelHealthError,
    ModelRef,
    feature_vector,
    file_digests,
    model_ref,
    read_samples,
    rolling_health,
)
from review.narrative import model_sentence
from tests.backtest.research.model_health_planted import HOUR as HOUR_MS
from tests.backtest.research.model_health_planted import T0 as T0_MS
from tests.backtest.research.model_health_planted import plant_trades, strategy_text, train_model

T4 = HealthThresholds(min_samples=4, window=100)


# -- the measure, by hand ------------------------------------------------------------------------------------


def test_auc_and_brier_equal_a_hand_computation():
    # positives at 0.9 and 0.3, negatives at 0.8 and 0.1: of the 4 (pos, neg) pairs the positive ranks
    # higher in 3 (0.9 > 0.8, 0.9 > 0.1, 0.3 > 0.1; not 0.3 > 0.8): AUC 3/4.
    # Brier: ((1 - 0.9)^2 + 0.8^2 + (1 - 0.3)^2 + 0.1^2) / 4 = (0.01 + 0.64 + 0.49 + 0.01) / 4 = 0.2875
    h = rolling_health([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1], T4)
    assert (h.samples, h.positives) == (4, 2)
    assert h.auc == pytest.approx(0.75) and h.brier == pytest.approx(0.2875)
    assert h.log_loss == pytest.approx(-(math.log(0.9) + math.log(0.2) + math.log(0.3) + math.log(0.9)) / 4)
    assert (h.status, h.reason) == ("unhealthy", "Brier 0.2875 > 0.25 over the last 4 trades")
    # a tie between a positive and a negative counts one half: pairs (0.6 vs 0.6) 0.5 and (0.6 vs 0.2) 1
    assert rolling_health([1, 0, 0], [0.6, 0.6, 0.2], HealthThresholds(min_samples=3)).auc == pytest.approx(0.75)


def test_only_the_last_window_of_trades_counts():
    # 3 old trades the model got exactly wrong, then 4 it ranks perfectly: a window of 4 sees only those
    y = [1, 0, 1] + [0, 1, 0, 1]
    p = [0.1, 0.9, 0.1] + [0.2, 0.7, 0.3, 0.8]
    h = rolling_health(y, p, HealthThresholds(min_samples=4, window=4))
    assert h.samples == 4 and h.auc == 1.0
    assert h.brier == pytest.approx((0.04 + 0.09 + 0.09 + 0.04) / 4)
    assert h.status == "healthy"
    assert rolling_health(y, p, HealthThresholds(min_samples=4, window=7)).auc < 0.5


def test_the_verdict_waits_for_enough_trades_and_both_outcomes():
    t = HealthThresholds(min_samples=5)
    assert rolling_health([], [], t).status == "insufficient"
    few = rolling_health([1, 0, 1, 0], [0.1, 0.9, 0.1, 0.9], t)  # awful, but only 4 trades
    assert (few.status, few.reason) == ("insufficient", "4 labelled trades < 5 needed to judge")
    one = rolling_health([1] * 6, [0.9] * 6, t)
    assert one.status == "insufficient" and one.auc is None and "one outcome only" in one.reason
    # the one winner ranked below every loser: AUC 0; Brier (5 x 0.2^2 + 0.9^2) / 6 = 1.01 / 6, fine alone
    low = rolling_health([0, 0, 0, 0, 1, 0], [0.2, 0.2, 0.2, 0.2, 0.1, 0.2], t)
    assert low.auc == 0.0 and low.brier == pytest.approx(1.01 / 6)
    assert (low.status, low.reason) == ("unhealthy", "AUC 0.000 < 0.55 over the last 6 trades")
    with pytest.raises(ModelHealthError):
        rolling_health([1, 0], [0.5], t)


@pytest.mark.parametrize(
    "bad",
    [{"min_auc": 1.5}, {"max_brier": 0.0}, {"min_samples": 0}, {"min_samples": 200}, {"window": 0}, {"horizon_h": 0}],
)
def test_thresholds_refuse_nonsense(bad):
    with pytest.raises(ModelHealthError):
        HealthThresholds(**bad)


def test_a_stored_evaluation_is_rebuilt_in_the_models_feature_order():
    names = ["score", "raw_score", "layer_flow", "layer_whale", "in_obi", "in_vpin", "in_gone", "direction_sign"]
    x = feature_vector(names, {"obi": 0.25, "vpin": None}, {"flow": 30.0, "whale": 12.5}, 42.5, "SHORT")
    assert x[:5].tolist() == [42.5, 42.5, 30.0, 12.5, 0.25]  # raw_score: the layers' sum before gates
    assert math.isnan(x[5]) and math.isnan(x[6])  # null and absent inputs are missing, as in training
    assert x[7] == -1.0
    assert math.isnan(feature_vector(["raw_score"], {}, {}, 0.0, "LONG")[0])


def test_a_strategy_file_names_its_model():
    assert model_ref("name: v53\n") is None
    assert model_ref("name: v53\nmodel:\n  file: m.json\n  sha256: ab\n") == ModelRef("m.json", "ab")
    assert model_ref({"model": "m.json"}) == ModelRef("m.json")
    with pytest.raises(ModelHealthError):
        model_ref("model: {sha256: ab}\n")
    with pytest.raises(ModelHealthError):
        model_ref("model: [unclosed\n")


def test_the_narrative_names_the_largest_contributions():
    told = model_sentence(
        {
            "learner": "logistic",
            "p_win": 0.734,
            "p_source": "model file",
            "contributions": [
                {"feature": "in_obi", "value": 1.25, "shap": 0.912},
                {"feature": "direction_sign", "value": -1.0, "shap": -0.2},
                {"feature": "in_vpin", "value": None, "shap": 0.01},
            ],
        }
    )
    assert told == (
        "The confidence model (logistic) gave p(win) 0.73; its largest SHAP contributions (log-odds): "
        "in_obi = 1.25 (+0.91), direction_sign = -1 (-0.20) and in_vpin = missing (+0.01)."
    )
    assert model_sentence(None) is None and model_sentence({"contributions": []}) is None


# -- in PostgreSQL ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return train_model(tmp_path_factory.mktemp("model"))


def test_a_model_file_must_be_the_one_the_revision_names(model_file, tmp_path):
    cache = ModelCache()
    loaded = cache.load(ModelRef(str(model_file)))
    assert loaded.digests == file_digests(model_file.read_bytes())
    # the name's digest (the text without its final newline) is accepted as well as the bytes'
    assert model_file.stem.removeprefix("model-") in {d[:16] for d in loaded.digests}
    with pytest.raises(ModelHealthError, match="SHA-256"):
        cache.load(ModelRef(str(model_file), "0" * 64))
    with pytest.raises(ModelHealthError, match="No such file"):
        cache.load(ModelRef(str(tmp_path / "missing.json")))
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ModelHealthError, match="not a tapeflow-confidence-model"):
        cache.load(ModelRef(str(tmp_path / "bad.json")))


def test_a_degraded_model_trips_the_health_job_the_gate_and_the_guardrail(
    migrated_database, model_file, tmp_path, kafka_bootstrap, topic_prefix
):
    from backtest.research.model_health_job import ModelHealthJob, judge

    healthy = plant_trades(migrated_database, "good", shuffled=False)
    degraded = plant_trades(migrated_database, "bad", shuffled=True, seed=5)
    model = ModelCache().load(ModelRef(str(model_file)))
    with psycopg.connect(migrated_database) as conn:
        samples = read_samples(conn, "bad", model.model.features, limit=100)
        # the stored rows give the model exactly the features it was planted with, oldest first
        assert samples.ids == degraded.ids and samples.missing_features == 0
        assert samples.x[:, 0].tolist() == pytest.approx(degraded.obi.tolist())
        p = model.model.predict(samples.x, samples.sign)
        by_hand = rolling_health(degraded.y, p, HealthThresholds())
        good = judge(conn, "good", model, HealthThresholds(), role="active")
        bad = judge(conn, "bad", model, HealthThresholds(), role="active")
    assert bad.health == by_hand
    assert good.health.status == "healthy" and good.health.samples == 100, good.health
    assert bad.health.status == "unhealthy", bad.health
    assert good.health.positives == int(healthy.y.sum()) and bad.health.positives == int(degraded.y.sum())

    # the labels service's job: both strategies run the model (files the stack started on)
    files = {}
    for name in ("good", "bad"):
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(strategy_text(model_file, model.sha256, name))
    registry = CollectorRegistry()
    job = ModelHealthJob(migrated_database, lambda: files, registry)
    summary = job(1_800_000_000_000)
    assert summary == "models judged 2 (1 unhealthy, 0 failed)"
    scrape = generate_latest(registry).decode()
    assert 'tapeflow_model_unhealthy{role="active",strategy="bad"} 1.0' in scrape
    assert 'tapeflow_model_unhealthy{role="active",strategy="good"} 0.0' in scrape
    assert f'tapeflow_model_auc{{role="active",strategy="bad"}} {bad.health.auc!r}' in scrape
    assert 'tapeflow_model_health_samples{role="active",strategy="good"} 100.0' in scrape
    with psycopg.connect(migrated_database) as conn:
        rows = conn.execute(
            "SELECT strategy, role, samples, auc, brier, status FROM model_health ORDER BY strategy"
        ).fetchall()
    assert rows == [
        ("bad", "active", 100, pytest.approx(bad.health.auc), pytest.approx(bad.health.brier), "unhealthy"),
        ("good", "active", 100, pytest.approx(good.health.auc), pytest.approx(good.health.brier), "healthy"),
    ]

    _promotion_gate(migrated_database, model_file, bad.health.reason)
    _guardrail(migrated_database, model_file, kafka_bootstrap, topic_prefix, bad.health.reason)


def _promotion_gate(conninfo, model_file, reason):
    from tapeflow.commands.rollout import _model_gate
    from tapeflow.rollout import RolloutError

    with psycopg.connect(conninfo) as conn:
        with pytest.raises(RolloutError) as refused:
            _model_gate(conn, "bad", strategy_text(model_file, name="bad"), HealthThresholds(), None)
        assert str(refused.value) == (
            f"bad: not promoted, its confidence model is unhealthy: {reason} (tapeflow model evaluate shows it on any window)"
        )
        _model_gate(conn, "good", strategy_text(model_file, name="good"), HealthThresholds(), None)  # passes
        _model_gate(conn, "bad", strategy_text(None, name="bad"), HealthThresholds(), None)  # no model: no gate
        # judged only from --model-min-samples on: 101 trades are never there
        lenient = HealthThresholds(min_samples=100, window=100, min_auc=0.0, max_brier=1.0)
        _model_gate(conn, "bad", strategy_text(model_file, name="bad"), lenient, None)
        candidates = conn.execute(
            "SELECT strategy, status FROM model_health WHERE role = 'candidate' ORDER BY time, strategy"
        ).fetchall()
    assert ("bad", "unhealthy") in candidates and ("good", "healthy") in candidates


def _guardrail(conninfo, model_file, kafka, prefix, reason):
    from schemas.catalogue import topic as topic_spec
    from schemas.registry import FileSchemaRegistry
    from schemas.serde import AvroSerde
    from stream_apps.core.rollout import Canary, Revision, RolloutState
    from tapeflow.rollout import CONTROL_TOPIC, Publisher, audit_rows, read_states
    from tapeflow.rollout_guard import canary_model_breach, check_once
    from tapeflow_runtime.kafka_client import ensure_topics

    ensure_topics(kafka, prefix=prefix, specs=[topic_spec(CONTROL_TOPIC)])
    serde = AvroSerde(FileSchemaRegistry())
    active = Revision(1, "h1", strategy_text(None, name="bad"))
    states = {
        name: RolloutState(
            name, 1, active, Canary(2, "h2", strategy_text(model_file, name=name), ("BTCUSDT",)), "canary", "ana", "", 0
        )
        for name in ("bad", "good")
    }
    with psycopg.connect(conninfo) as conn:
        result = check_once(conn, states, Publisher(kafka, prefix, serde), 1_800_000_000_000, canary_model_breach)
        audit = audit_rows(conn)
    expected = f"model health: {reason} (model {ModelCache().load(ModelRef(str(model_file))).sha256[:12]})"
    assert result.checked == ["bad", "good"] and result.rolled_back == {"bad": expected}
    assert [(a["strategy"], a["action"], a["actor"], a["from_rev"], a["to_rev"], a["reason"]) for a in audit] == [
        ("bad", "auto_rollback", "guardrail", 2, 1, expected)
    ]
    state = read_states(kafka, prefix, serde)["bad"]
    assert (state.action, state.canary, state.active.rev, state.reason) == ("auto_rollback", None, 1, expected)
    assert "good" not in read_states(kafka, prefix, serde)


def test_the_autopsy_explainer_gives_the_models_exact_shap_contributions(migrated_database, model_file, tmp_path):
    from backtest.research.model_health_explain import TradeExplainer

    planted = plant_trades(migrated_database, "v53", n=3, shuffled=False)
    path = tmp_path / "v53.yaml"
    path.write_text(strategy_text(model_file))
    explain = TradeExplainer(lambda: {"v53": path})
    decision = {"strategy": "v53", "config_rev": 0, "signal_id": "none", "inputs": {"obi": planted.obi[0]}}
    decision |= {"layer_scores": {"flow": 0.5}, "score": 60.0, "direction": "SHORT"}
    with psycopg.connect(migrated_database) as conn:
        told = explain(conn, decision)
        assert explain(conn, decision | {"strategy": "other"}) is None  # no file, no model
    params = ModelCache().load(ModelRef(str(model_file))).model.document["models"]["logistic"]
    # by hand: the linear model's SHAP value of a feature is coef x (standardised value - its training
    # mean) plus the same for its direction term (standardised value x sign)
    values = [planted.obi[0], 0.5, -1.0]
    phi = []
    for j, v in enumerate(values):
        z = max(min((v - params["mean"][j]) / params["scale"][j], 5.0), -5.0)
        k = len(values)
        phi.append(
            params["coef"][j] * (z - params["background"][j])
            + params["coef_sign"][j] * (-z - params["background"][k + j])
        )
    order = sorted(range(3), key=lambda j: -abs(phi[j]))
    names = ["in_obi", "layer_flow", "direction_sign"]
    assert [c["feature"] for c in told["contributions"]] == [names[j] for j in order]
    assert [c["shap"] for c in told["contributions"]] == pytest.approx([phi[j] for j in order])
    assert told["learner"] == "logistic" and told["p_source"] == "model file" and 0 < told["p_win"] < 1
    np.testing.assert_allclose(told["contributions"][0]["value"], values[order[0]])


def _evaluate(*args: str):
    """`tapeflow model evaluate` in this process (its errors as the exception the CLI prints as one line)."""
    from typer.testing import CliRunner

    from tapeflow.cli import app

    return CliRunner().invoke(app, ["model", "evaluate", *args])


def test_model_evaluate_judges_any_window_and_refuses_bad_input(migrated_database, model_file, tmp_path):
    import json

    from backtest.research.model import reliability

    degraded = plant_trades(migrated_database, "bad", shuffled=True)
    plant_trades(migrated_database, "good", shuffled=False, seed=9)
    db = ["--database", migrated_database]
    model = ModelCache().load(ModelRef(str(model_file))).model
    # the window: the 50 trades of the second half of the planted range (one an hour from T0)
    start = "2025-01-03T01:00:00Z"  # T0 + 49 h: trade 49's t0 is 1 s after T0 + 49 h
    res = _evaluate(
        "--model", str(model_file), "--strategy", "bad", "--from", start, "--to", "2025-02-01", "--json", *db
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    with psycopg.connect(migrated_database) as conn:
        x = read_samples(conn, "bad", model.features, from_ms=T0_MS + 49 * HOUR_MS).x
    p = model.predict(x, degraded.sign[49:])
    assert doc["metrics"]["rows"] == 51 and doc["metrics"]["positives"] == int(degraded.y[49:].sum())
    hand = rolling_health(degraded.y[49:], p, HealthThresholds(window=51))
    assert (doc["metrics"]["auc"], doc["metrics"]["brier"]) == pytest.approx((hand.auc, hand.brier))
    assert doc["health"]["status"] == "unhealthy" == hand.status
    assert doc["reliability"] == reliability(degraded.y[49:], p) and doc["p_from_signals"] == 0
    good = _evaluate(
        "--model", str(model_file), "--strategy", "good", "--from", "2025-01-01", "--to", "2025-02-01", *db
    )
    assert good.exit_code == 0, good.output
    assert "verdict: healthy (AUC " in good.output and "samples: 100 labelled trades" in good.output
    assert "reliability:" in good.output and "size bands:" in good.output

    cases = {
        ("--model", str(tmp_path / "none.json"), "--strategy", "bad"): "--model",
        ("--model", str(model_file), "--strategy", "nobody"): "no labelled trades of nobody",
        ("--model", str(model_file), "--strategy", "bad", "--sample", "fill"): "--sample 'fill'",
        ("--model", str(model_file), "--strategy", "bad", "--min-auc", "2"): "minimum AUC must be in [0, 1]",
    }
    for args, message in cases.items():
        res = _evaluate(*args, "--from", "2025-01-01", "--to", "2025-02-01", *db)
        assert isinstance(res.exception, ResearchError) and message in str(res.exception), (args, res.exception)
    # as the user sees it: one error line, no traceback
    proc = subprocess.run(
        [sys.executable, "-m", "tapeflow", "model", "evaluate", "--model", str(model_file), "--strategy", "bad"]
        + ["--from", "2025-02-01", "--to", "2025-01-01", *db],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: empty range: --to 2025-01-01 is not after --from 2025-02-01 (--to is excluded)"
    ]


def test_a_signals_own_p_win_is_used_only_when_its_revision_ran_this_model(migrated_database, model_file):
    from backtest.research.model_health import probabilities, revisions_running

    plant_trades(migrated_database, "pw", n=4, shuffled=False, config_rev=3)
    plant_trades(migrated_database, "pw2", n=4, shuffled=False, config_rev=4)
    model = ModelCache().load(ModelRef(str(model_file)))
    with psycopg.connect(migrated_database) as conn:
        conn.execute("ALTER TABLE signals ADD COLUMN IF NOT EXISTS p_win double precision")
        conn.execute("UPDATE signals SET p_win = 0.987")
        for name, rev, sha in (("pw", 3, model.sha256), ("pw2", 4, "f" * 64)):  # pw2's revision ran another model
            conn.execute(
                "INSERT INTO strategy_revisions (name, rev, config_hash, content, created_at, created_by, note)"
                " VALUES (%s, %s, 'h', %s, now(), 'ana', '')",
                (name, rev, strategy_text(model_file, sha, name)),
            )
        own = read_samples(conn, "pw", model.model.features, p_win_revs=revisions_running(conn, "pw", model.digests))
        other = read_samples(
            conn, "pw2", model.model.features, p_win_revs=revisions_running(conn, "pw2", model.digests)
        )
    assert np.all(own.stored_p == 0.987) and np.all(np.isnan(other.stored_p))
    assert probabilities(model.model, own).tolist() == [0.987] * 4
    assert probabilities(model.model, other).tolist() == model.model.predict(other.x, other.sign).tolist()
