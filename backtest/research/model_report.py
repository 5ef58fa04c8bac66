"""The confidence model's report: one self-contained HTML page (and the text summary the CLI prints).

Like the backtest's report (``backtest.report.html``): everything inline, a Content-Security-Policy that
forbids every fetch, text through Jinja2 with autoescaping. It needs no script: the charts (reliability
curves, importances, SHAP) are inline SVG drawn here, so the page reads the same with scripts off, and the
tables hold every number the charts show.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

TOP = 20  # features drawn in the importance and SHAP charts (the tables list all)
COLOURS = {"raw": "#9aa5b1", "calibrated": "#1f77b4", "pos": "#d62728", "neg": "#1f77b4", "none": "#7f7f7f"}

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'">
<title>Confidence model {{ strategy.name }} ({{ doc.target }})</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#1d2329;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #dde1e5}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{padding:3px 10px;border-bottom:1px solid #eceff1;text-align:right}
th{background:#f5f7f9}td.t,th.t{text-align:left}.chosen{font-weight:600}.note{color:#59636e}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{color:#59636e}dd{margin:0}
.charts{display:flex;flex-wrap:wrap;gap:24px}svg text{font:11px system-ui,sans-serif;fill:#1d2329}
code{font-size:13px}
</style></head>
<body>
<h1>Confidence model: {{ strategy.name }} &mdash; P({{ doc.target }} = 1 | features)</h1>
<dl id="run">
<dt>strategy</dt><dd>{{ strategy.name }} (config_hash <code>{{ strategy.config_hash }}</code>)</dd>
<dt>data</dt><dd>{{ day(doc.data.from_ms) }} .. {{ day(doc.data.to_ms) }}, {{ doc.data.symbols | join(", ") }}</dd>
<dt>rows</dt><dd id="rows">{{ "{:,}".format(doc.data.rows) }} ({{ "{:,}".format(doc.data.positives) }} wins, {{ pct(doc.data.positives / doc.data.rows) }})</dd>
<dt>label window</dt><dd>{{ minutes(doc.horizon_ms) }}</dd>
<dt>validation</dt><dd>purged {{ doc.validation.folds }}-fold, embargo {{ minutes(doc.validation.embargo_ms) }}{% if doc.validation.walk_forward %}; walk-forward {{ doc.validation.walk_forward }}{% endif %}; {{ doc.validation.calibration }} calibration</dd>
<dt>features</dt><dd>{{ doc.features | length }} ({{ doc.detector_features | length }} from the detectors){% if doc.dropped_features %}; left out (no value or one value in the window): {{ doc.dropped_features | join(", ") }}{% endif %}</dd>
<dt>data SHA-256</dt><dd><code>{{ doc.data.sha256 }}</code></dd>
<dt>model file</dt><dd><code>{{ model_file }}</code> (learner used: <span id="chosen">{{ doc.chosen }}</span>)</dd>
</dl>

<h2>Out-of-fold quality</h2>
<p class="note">Every row predicted by a model that never saw its label window (purged K-fold). Calibrated: each fold mapped by a calibration fitted on the other folds only. The chosen learner has the lower calibrated log loss.</p>
<table id="summary"><thead><tr><th class="t">learner</th><th>AUC</th><th>Brier</th><th>log loss</th><th>AUC calibrated</th><th>Brier calibrated</th><th>log loss calibrated</th><th>AUC without detectors</th><th>AUC added by detectors</th></tr></thead><tbody>
{% for name, r in learners %}{% set d = r.get("detectors") or {} %}<tr class="{{ 'chosen' if name == doc.chosen else '' }}" data-learner="{{ name }}"><td class="t">{{ name }}</td><td>{{ f3(r.pooled.auc) }}</td><td>{{ f4(r.pooled.brier) }}</td><td>{{ f4(r.pooled.log_loss) }}</td><td>{{ f3(r.calibrated.auc) }}</td><td>{{ f4(r.calibrated.brier) }}</td><td>{{ f4(r.calibrated.log_loss) }}</td><td>{{ f3(d.get("auc_without")) }}</td><td>{{ signed(d.get("auc_difference")) }}</td></tr>
{% endfor %}</tbody></table>

{% for name, r in learners %}
<h2 id="learner-{{ name }}">{{ name }}</h2>
<h3>Purged K-fold</h3>
<table id="folds-{{ name }}"><thead><tr><th>fold</th><th class="t">test from</th><th class="t">test to</th><th>training rows</th><th>purged + embargoed</th><th>test rows</th><th>wins</th><th>AUC</th><th>Brier</th><th>log loss</th></tr></thead><tbody>
{% for f in r.folds %}<tr><td>{{ f.fold }}</td><td class="t">{{ when(f.test_from_ms) }}</td><td class="t">{{ when(f.test_to_ms) }}</td><td>{{ "{:,}".format(f.train_rows) }}</td><td>{{ "{:,}".format(f.purged_rows) }}</td><td>{{ "{:,}".format(f.rows) }}</td><td>{{ "{:,}".format(f.positives) }}</td><td>{{ f3(f.auc) }}</td><td>{{ f4(f.brier) }}</td><td>{{ f4(f.log_loss) }}</td></tr>
{% endfor %}</tbody></table>
{% if "walk_forward" in r %}<h3>Walk-forward</h3>
<table id="walk-forward-{{ name }}"><thead><tr><th>window</th><th class="t">train</th><th class="t">test</th><th>training rows</th><th>test rows</th><th>AUC</th><th>Brier</th><th>log loss</th></tr></thead><tbody>
{% for w in r.walk_forward %}<tr><td>{{ w.window }}</td><td class="t">{{ when(w.train_from_ms) }} .. {{ when(w.train_to_ms) }}</td><td class="t">{{ when(w.test_from_ms) }} .. {{ when(w.test_to_ms) }}</td><td>{{ "{:,}".format(w.train_rows) }}</td><td>{{ "{:,}".format(w.rows) }}</td><td>{{ f3(w.auc) }}</td><td>{{ f4(w.brier) }}</td><td>{{ f4(w.log_loss) }}</td></tr>
{% else %}<tr><td colspan="8" class="t">no window fits the range</td></tr>{% endfor %}</tbody></table>{% endif %}
<h3>Reliability</h3>
<div class="charts"><div id="reliability-chart-{{ name }}">{{ reliability_svg(r) }}</div>
<table id="reliability-{{ name }}"><thead><tr><th class="t">predicted</th><th>rows</th><th>mean calibrated p</th><th>observed win rate</th></tr></thead><tbody>
{% for b in r.reliability_calibrated %}<tr><td class="t">{{ "%.1f" % b.low }} .. {{ "%.1f" % b.high }}</td><td>{{ "{:,}".format(b.rows) }}</td><td>{{ f3(b.predicted) }}</td><td>{{ f3(b.observed) }}</td></tr>
{% endfor %}</tbody></table></div>
<h3>Size map on the out-of-fold predictions</h3>
<table id="size-{{ name }}"><thead><tr><th class="t">calibrated p</th><th>size</th><th>rows</th><th>win rate</th><th>mean p</th></tr></thead><tbody>
{% for b in r.size_bands %}<tr><td class="t">{{ b.band }}</td><td>{{ "x%.1f" % b.multiplier if b.multiplier else "skip" }}</td><td>{{ "{:,}".format(b.rows) }}</td><td>{{ f3(b.win_rate) }}</td><td>{{ f3(b.mean_p) }}</td></tr>
{% endfor %}</tbody></table>
<h3>Importance and SHAP contributions</h3>
<p class="note">Importance: {{ r.importance_kind }}. SHAP: mean |contribution| to the log-odds over {{ "{:,}".format(r.shap.rows) }} rows (exact: {{ "tree SHAP from LightGBM" if name == "lightgbm" else "coefficient x (value - mean) of the linear model" }}); colour: red when a higher value raises p, blue when it lowers it, grey when it depends (e.g. on the direction).</p>
<div class="charts"><div id="importance-chart-{{ name }}">{{ bars_svg(r.importances, "importance", None) }}</div><div id="shap-chart-{{ name }}">{{ bars_svg(r.shap.features, "mean_abs", "trend") }}</div></div>
<table id="shap-{{ name }}"><thead><tr><th class="t">feature</th><th>mean |SHAP|</th><th>trend</th><th>importance</th></tr></thead><tbody>
{% for s in r.shap.features %}<tr><td class="t">{{ s.feature }}</td><td>{{ f4(s.mean_abs) }}</td><td>{{ signed(s.trend) }}</td><td>{{ f4(importance(r, s.feature)) }}</td></tr>
{% endfor %}</tbody></table>
{% endfor %}
</body></html>
"""


def _f(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _signed(value: Any) -> str:
    return "-" if value is None else f"{value:+.3f}"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _minutes(ms: int) -> str:
    return f"{ms / 60_000:g} min"


def reliability_svg(report: dict[str, Any], size: int = 300) -> Markup:
    """Predicted (x) against observed (y) win rate, raw and calibrated, over the diagonal."""
    pad = 36
    span = size - 2 * pad

    def xy(p: float, q: float) -> tuple[float, float]:
        return pad + p * span, size - pad - q * span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" role="img" '
        'aria-label="reliability curve">',
        f'<rect x="{pad}" y="{pad}" width="{span}" height="{span}" fill="none" stroke="#ccd2d8"/>',
        f'<line x1="{pad}" y1="{size - pad}" x2="{size - pad}" y2="{pad}" stroke="#ccd2d8" stroke-dasharray="4 3"/>',
        f'<text x="{size / 2}" y="{size - 8}" text-anchor="middle">predicted p</text>',
        f'<text x="12" y="{size / 2}" transform="rotate(-90 12 {size / 2})" text-anchor="middle">observed win rate</text>',
    ]
    for t in (0.0, 0.5, 1.0):
        x, y = xy(t, t)
        parts.append(f'<text x="{x}" y="{size - pad + 14}" text-anchor="middle">{t:g}</text>')
        parts.append(f'<text x="{pad - 6}" y="{y + 4}" text-anchor="end">{t:g}</text>')
    for kind in ("raw", "calibrated"):
        points = [xy(b["predicted"], b["observed"]) for b in report[f"reliability_{kind}"]]
        colour = COLOURS[kind]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        parts += [f'<circle class="{kind}" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in points]
    parts.append(f'<text x="{pad + 6}" y="{pad + 14}" fill="{COLOURS["calibrated"]}">calibrated</text>')
    parts.append(f'<text x="{pad + 6}" y="{pad + 28}" fill="{COLOURS["raw"]}">raw</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # nosec B704 # numbers formatted here; no text from the data


def bars_svg(rows: list[dict[str, Any]], value: str, trend: str | None, width: int = 460) -> Markup:
    """Horizontal bars of the first ``TOP`` rows' ``value``, labelled with their (escaped) feature names."""
    shown = rows[:TOP]
    label_w, row_h = 190, 18
    height = row_h * len(shown) + 24
    top = max((float(r[value]) for r in shown), default=0.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(value)}">'
    ]
    for i, r in enumerate(shown):
        y = 4 + i * row_h
        length = (width - label_w - 60) * float(r[value]) / top
        t = r.get(trend) if trend else None
        colour = COLOURS["none"] if t is None or abs(t) < 0.3 else COLOURS["pos"] if t > 0 else COLOURS["neg"]
        if trend is None:
            colour = COLOURS["calibrated"]
        parts.append(f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">{escape(r["feature"])}</text>')
        parts.append(
            f'<rect class="bar" x="{label_w}" y="{y}" width="{length:.1f}" height="{row_h - 4}" fill="{colour}"/>'
        )
        parts.append(f'<text x="{label_w + length + 4:.1f}" y="{y + 12}">{float(r[value]):.4f}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # nosec B704 # feature names escaped above; the rest are numbers


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_TEMPLATE)


def render(doc: dict[str, Any], model_file: str) -> str:
    def importance(report: dict[str, Any], feature: str) -> float | None:
        return next((r["importance"] for r in report["importances"] if r["feature"] == feature), None)

    return _template().render(
        doc=doc,
        strategy=doc["strategy"],
        learners=list(doc["learners"].items()),
        model_file=model_file,
        day=_when,
        when=_when,
        minutes=_minutes,
        pct=lambda v: f"{100 * v:.1f} %",
        f3=lambda v: _f(v, 3),
        f4=lambda v: _f(v, 4),
        signed=_signed,
        importance=importance,
        reliability_svg=reliability_svg,
        bars_svg=bars_svg,
    )


def write_html(doc: dict[str, Any], model_file: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(doc, str(model_file)), encoding="utf-8")
    return path


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """The text summary the CLI prints: one line per learner, the detectors' AUC difference, the choice."""
    lines = []
    for name, r in doc["learners"].items():
        p, c = r["pooled"], r["calibrated"]
        folds = ", ".join(_f(f["auc"], 3) for f in r["folds"])
        lines.append(
            f"{name}: out-of-fold AUC {_f(p['auc'], 3)} pooled (folds {folds}), Brier {_f(c['brier'], 4)}, "
            f"log loss {_f(c['log_loss'], 4)} calibrated"
        )
        d = r.get("detectors")
        if d and d["detector_features"]:
            lines.append(
                f"  detectors ({len(d['detector_features'])} columns): AUC {_f(d['auc_with'], 3)} with, "
                f"{_f(d['auc_without'], 3)} without ({_signed(d['auc_difference'])})"
            )
        elif d is not None:
            lines.append("  detectors: no detector column has values in this window")
        wf = r.get("walk_forward")
        if wf:
            lines.append(f"  walk-forward: {len(wf)} windows, AUC " + ", ".join(_f(w["auc"], 3) for w in wf))
        top = ", ".join(s["feature"] for s in r["shap"]["features"][:5])
        lines.append(f"  top SHAP: {top}")
    lines.append(f"chosen: {doc['chosen']} (lower calibrated log loss)")
    return lines
