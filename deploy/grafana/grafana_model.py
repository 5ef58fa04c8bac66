"""A small typed model of the Grafana dashboard JSON that tapeflow's dashboards use, and its rendering.

Why hand-written (about 200 lines) instead of a dashboard library:
- grafanalib (the usual Python choice) has been dormant since its 0.7.1 release in January 2024 and
  models Grafana's pre-10 JSON;
- grafana-foundation-sdk (Grafana's own, generated from the schemas) has no SQL query type, so the
  TimescaleDB panels, most of tapeflow's, would be raw dicts there anyway.
What the dashboards need is narrow: time series, bar charts, tables, stat and status-history panels
with SQL or PromQL targets, thresholds (per panel, or per table column as traffic lights) and template
variables (filled by a query, or a fixed list of choices). Frozen dataclasses keep the definitions
typed and reviewable, every panel must carry the question it answers (docs/reference/dashboards.md is generated
from it), and `render` emits plain JSON that Grafana 11 provisions as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TIMESCALEDB = {"type": "grafana-postgresql-datasource", "uid": "tapeflow-timescaledb"}
PROMETHEUS = {"type": "prometheus", "uid": "tapeflow-prometheus"}

PanelType = Literal["timeseries", "barchart", "table", "stat", "state-timeline", "status-history"]


@dataclass(frozen=True)
class Sql:
    """A query on the TimescaleDB datasource; `fmt` is Grafana's time_series or table result format."""

    sql: str
    fmt: Literal["time_series", "table"] = "time_series"

    def target(self, ref: str) -> dict[str, Any]:
        return {
            "refId": ref,
            "datasource": TIMESCALEDB,
            "editorMode": "code",
            "rawQuery": True,
            "format": self.fmt,
            "rawSql": self.sql.strip(),
        }


@dataclass(frozen=True)
class PromQL:
    expr: str
    legend: str = ""
    instant: bool = False

    def target(self, ref: str) -> dict[str, Any]:
        return {
            "refId": ref,
            "datasource": PROMETHEUS,
            "editorMode": "code",
            "expr": self.expr.strip(),
            "legendFormat": self.legend or "__auto",
            "range": not self.instant,
            "instant": self.instant,
        }


Query = Sql | PromQL


@dataclass(frozen=True)
class Threshold:
    """A colour change at `value` (the first step of a panel is green from minus infinity)."""

    value: float
    color: str
    meaning: str  # what crossing it means, for docs/reference/dashboards.md


@dataclass(frozen=True)
class ColumnThresholds:
    """Traffic lights for one column of a table: the cell's background takes the threshold colours
    (green from minus infinity, then each step), for tables whose columns have different scales."""

    column: str
    thresholds: tuple[Threshold, ...]


@dataclass(frozen=True)
class Panel:
    title: str
    kind: PanelType
    question: str  # the question the panel answers (panel description and docs)
    queries: tuple[Query, ...]
    width: int = 12
    height: int = 8
    unit: str = "short"
    thresholds: tuple[Threshold, ...] = ()
    decimals: int | None = None
    stack: bool = False
    points: tuple[str, ...] = ()  # series names drawn as points (markers), not lines
    options: dict[str, Any] = field(default_factory=dict)
    columns: tuple[ColumnThresholds, ...] = ()  # tables: traffic lights per column
    base_color: str = "green"  # the colour below the first threshold
    #: Grafana transformations applied to the query results, in order (e.g. groupingToMatrix: rows of
    #: (row, column, value) become a matrix whose columns are whatever values the data has)
    transformations: tuple[dict[str, Any], ...] = ()

    @property
    def datasource(self) -> dict[str, str]:
        kinds = {type(q) for q in self.queries}
        assert len(kinds) == 1, f"{self.title}: one datasource per panel"
        return TIMESCALEDB if kinds == {Sql} else PROMETHEUS


@dataclass(frozen=True)
class Variable:
    """A template variable filled by a SQL query, or by a fixed list of `choices` (Grafana's custom
    variable; then `sql` is empty). Grafana quotes the values of a multi-value variable for SQL
    ('a','b'), so panels write `IN ($name)`; a single-value one is inserted as it is ('$name').
    A multi-value variable whose default is `ALL` starts with every value selected."""

    name: str
    label: str
    sql: str = ""
    multi: bool = False
    default: str | None = None
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert bool(self.sql) != bool(self.choices), f"${self.name}: a query or choices, not both"
        assert not self.choices or self.default in self.choices, f"${self.name}: the default must be a choice"


ALL = "$__all"


@dataclass(frozen=True)
class Annotation:
    name: str
    sql: str  # columns: time, text, tags
    color: str = "red"


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    time_from: str = "now-6h"
    refresh: str = "30s"


def _steps(thresholds: tuple[Threshold, ...], base: str = "green") -> list[dict[str, Any]]:
    return [{"color": base, "value": None}] + [{"color": t.color, "value": t.value} for t in thresholds]


def _field_config(p: Panel) -> dict[str, Any]:
    steps = _steps(p.thresholds, p.base_color)
    defaults: dict[str, Any] = {"unit": p.unit, "thresholds": {"mode": "absolute", "steps": steps}}
    if p.decimals is not None:
        defaults["decimals"] = p.decimals
    if p.kind in ("timeseries", "barchart"):
        defaults["custom"] = {
            "drawStyle": "bars" if p.kind == "barchart" else "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if p.stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "line" if p.thresholds else "off"},
        }
    if p.kind in ("stat", "status-history", "state-timeline") and p.thresholds:
        defaults["color"] = {"mode": "thresholds"}
    overrides = [
        {
            "matcher": {"id": "byName", "options": name},
            "properties": [{"id": "custom.drawStyle", "value": "points"}, {"id": "custom.pointSize", "value": 8}],
        }
        for name in p.points
    ]
    overrides += [
        {
            "matcher": {"id": "byName", "options": c.column},
            "properties": [
                {"id": "thresholds", "value": {"mode": "absolute", "steps": _steps(c.thresholds)}},
                {"id": "color", "value": {"mode": "thresholds"}},
                {"id": "custom.cellOptions", "value": {"type": "color-background"}},
            ],
        }
        for c in p.columns
    ]
    return {"defaults": defaults, "overrides": overrides}


def _panel_json(p: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    kind = "timeseries" if p.kind == "barchart" else p.kind  # bars over time: a time series drawn as bars
    options: dict[str, Any] = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    if p.kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "auto",
        }
    elif p.kind == "table":
        options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    options.update(p.options)
    out = {
        "id": panel_id,
        "type": kind,
        "title": p.title,
        "description": p.question,
        "gridPos": {"x": x, "y": y, "w": p.width, "h": p.height},
        "datasource": p.datasource,
        "targets": [q.target(chr(ord("A") + i)) for i, q in enumerate(p.queries)],
        "fieldConfig": _field_config(p),
        "options": options,
    }
    if p.transformations:
        out["transformations"] = [dict(t) for t in p.transformations]
    return out


def _variable_json(v: Variable) -> dict[str, Any]:
    if v.default == ALL:
        current: dict[str, Any] = {"text": ["All"], "value": [ALL]}
    else:
        current = {"text": v.default, "value": v.default} if v.default else {}
    if v.choices:
        return {
            "name": v.name,
            "label": v.label,
            "type": "custom",
            "query": ",".join(v.choices),
            "options": [{"text": c, "value": c, "selected": c == v.default} for c in v.choices],
            "multi": v.multi,
            "includeAll": False,
            "current": current,
            "hide": 0,
        }
    return {
        "name": v.name,
        "label": v.label,
        "type": "query",
        "datasource": TIMESCALEDB,
        "query": v.sql.strip(),
        "definition": v.sql.strip(),
        "refresh": 2,
        "multi": v.multi,
        "includeAll": v.multi,
        "current": current,
        "sort": 1,
        "hide": 0,
    }


def _annotation_json(a: Annotation) -> dict[str, Any]:
    return {
        "name": a.name,
        "datasource": TIMESCALEDB,
        "enable": True,
        "iconColor": a.color,
        "target": {"refId": "Anno", "editorMode": "code", "rawQuery": True, "format": "table", "rawSql": a.sql.strip()},
    }


def render(d: Dashboard) -> dict[str, Any]:
    """The dashboard JSON: panels laid out left to right, wrapping at Grafana's 24 columns."""
    panels, x, y, row_height = [], 0, 0, 0
    for i, p in enumerate(d.panels, start=1):
        if x + p.width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(_panel_json(p, i, x, y))
        x, row_height = x + p.width, max(row_height, p.height)
    builtin = {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }
    return {
        "uid": d.uid,
        "title": d.title,
        "description": d.description,
        "tags": ["tapeflow"],
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": d.refresh,
        "time": {"from": d.time_from, "to": "now"},
        "templating": {"list": [_variable_json(v) for v in d.variables]},
        "annotations": {"list": [builtin] + [_annotation_json(a) for a in d.annotations]},
        "panels": panels,
    }
