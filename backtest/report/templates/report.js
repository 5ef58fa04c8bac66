/* tapeflow backtest report: equity/drawdown charts (uPlot, inlined) and sortable tables.
   Reads its data from <script type="application/json" id="report-data">; makes no network request. */
(function () {
  "use strict";
  var errors = [];
  window.addEventListener("error", function (e) {
    errors.push(String(e.message || e));
    document.body.setAttribute("data-errors", errors.join(" | "));
  });

  var data = JSON.parse(document.getElementById("report-data").textContent);
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

  function utcDate(ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); }
  var fmtTick = uPlot.fmtDate("{MM}-{DD}\n{HH}:{mm}");
  function fmtR(v) { return v == null ? "—" : (v >= 0 ? "+" : "") + v.toFixed(3) + " R"; }

  /* One x axis for every strategy: the union of their exit times; each series holds its last value. */
  function columns(key) {
    var seen = {}, xs = [];
    data.strategies.forEach(function (s) {
      s.time_ms.forEach(function (t) { if (!seen[t]) { seen[t] = true; xs.push(t); } });
    });
    if (!seen[data.end_ms]) xs.push(data.end_ms);
    xs.sort(function (a, b) { return a - b; });
    var cols = [xs.map(function (t) { return t / 1000; })];
    data.strategies.forEach(function (s) {
      var out = [], j = 0, cur = null;
      xs.forEach(function (x) {
        while (j < s.time_ms.length && s.time_ms[j] <= x) { cur = s[key][j]; j++; }
        out.push(cur);
      });
      cols.push(out);
    });
    return cols;
  }

  var charts = [];
  window.reportCharts = charts;  /* for the browser's console and the report tests */
  var syncing = false;
  function makeChart(el, key, title, height) {
    var series = [{ label: "time (UTC)", value: "{YYYY}-{MM}-{DD} {HH}:{mm}" }];
    data.strategies.forEach(function (s, i) {
      series.push({
        label: s.name, stroke: COLORS[i % COLORS.length], width: 1.5,
        fill: key === "drawdown_r" ? COLORS[i % COLORS.length] + "22" : undefined,
        paths: uPlot.paths.stepped({ align: 1 }), points: { show: false },
        value: function (u, v) { return fmtR(v); }
      });
    });
    var opts = {
      title: title, width: Math.max(el.clientWidth, 400), height: height, tzDate: utcDate,
      cursor: { sync: { key: "equity-drawdown", setSeries: true }, drag: { x: true, y: false } },
      scales: { x: { time: true } },
      axes: [{ space: 70, size: 50, values: function (u, splits) { return splits.map(function (v) { return fmtTick(utcDate(v)); }); } }, { label: "R", values: function (u, vals) { return vals.map(function (v) { return v.toFixed(1); }); } }],
      series: series,
      hooks: {
        setScale: [function (u, scaleKey) {
          if (scaleKey !== "x" || syncing) return;
          syncing = true;
          var min = u.scales.x.min, max = u.scales.x.max;
          charts.forEach(function (other) {
            if (other !== u) other.setScale("x", { min: min, max: max });
          });
          syncing = false;
        }]
      }
    };
    var chart = new uPlot(opts, columns(key), el);
    charts.push(chart);
    return chart;
  }

  makeChart(document.getElementById("chart-equity"), "equity_r", "Equity (cumulative net R)", 320);
  makeChart(document.getElementById("chart-drawdown"), "drawdown_r", "Drawdown (R below the running peak)", 180);

  document.getElementById("reset-zoom").addEventListener("click", function () {
    var all = columns("equity_r")[0];
    charts[0].setScale("x", { min: all[0], max: all[all.length - 1] });
  });
  window.addEventListener("resize", function () {
    charts.forEach(function (c) { c.setSize({ width: Math.max(c.root.parentNode.clientWidth, 400), height: c.height }); });
  });

  /* Sortable tables: click (or Enter on) a header; numbers sort by their data-v value. */
  function cellKey(cell, numeric) {
    var v = cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent;
    if (!numeric) return v;
    var n = parseFloat(v);
    return isNaN(n) ? null : n;
  }
  function sortTable(table, index, th) {
    var numeric = th.getAttribute("data-type") === "num";
    var asc = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (r, i) {
      return { row: r, key: cellKey(r.cells[index], numeric), i: i };
    });
    rows.sort(function (a, b) {
      if (a.key === b.key) return a.i - b.i;
      if (a.key === null) return 1;  /* undefined values last, either way */
      if (b.key === null) return -1;
      var c = numeric ? a.key - b.key : String(a.key).localeCompare(String(b.key));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, index) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortTable(table, index, th); });
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") sortTable(table, index, th); });
    });
  });

  document.body.setAttribute("data-charts", String(charts.length));
  document.body.setAttribute("data-rendered", "yes");
})();
