// One closed trade (/api/trade/<id>): its stored price path as candles with the entry, the exit and the
// levels it ran with, and its autopsy (review.autopsy_db, what `tapeflow autopsy` prints) beside it.
"use strict";
(function () {
  const UI = window.tapeflowUI;
  const id = document.body.dataset.position;
  const params = new URLSearchParams(location.search);

  const chartOptions = (height) => ({
    height, layout: { background: { color: "#0b0f14" }, textColor: "#d7dde5", attributionLogo: false },
    grid: { vertLines: { color: "#1c232c" }, horzLines: { color: "#1c232c" } },
    timeScale: { timeVisible: true, secondsVisible: true, borderColor: "#2a323d" },
    rightPriceScale: { borderColor: "#2a323d" }, crosshair: { mode: 0 },
  });
  const bp = (v) => (v === null || v === undefined ? "–" : TF.num(v, 1));

  function drawChart(data) {
    const a = data.autopsy, t = a.trade, c = data.candles;
    const chart = LightweightCharts.createChart(document.getElementById("trade-chart"), chartOptions(420));
    const series = chart.addCandlestickSeries({ upColor: "#26a69a", downColor: "#ef5350", borderVisible: false,
                                                wickUpColor: "#26a69a", wickDownColor: "#ef5350" });
    series.setData(c.time.map((s, i) => ({ time: s, open: c.open[i], high: c.high[i], low: c.low[i], close: c.close[i] })));
    const bucket = (ms) => Math.floor(ms / 1000 / data.candle_s) * data.candle_s;
    const long = t.direction === "LONG";
    const markers = [
      { time: bucket(t.entry_time), position: long ? "belowBar" : "aboveBar", color: "#4fc3f7",
        shape: long ? "arrowUp" : "arrowDown", text: `entry ${TF.num(t.entry_price, 2)}` },
      { time: bucket(t.exit_time), position: long ? "aboveBar" : "belowBar", color: "#f0c674",
        shape: "square", text: `${t.exit_reason} ${TF.num(t.exit_price, 2)}` },
    ].sort((x, y) => x.time - y.time);
    series.setMarkers(markers);
    const lines = [];
    for (const [name, color] of [["sl", "#ef5350"], ["tp1", "#26a69a"], ["tp2", "#26a69a"]]) {
      const price = data.levels[name];
      if (price === null || price === undefined) continue;
      series.createPriceLine({ price, color, lineWidth: 1, lineStyle: 2, axisLabelVisible: true, title: name });
      lines.push({ name, price });
    }
    document.getElementById("chart-note").textContent =
      `${data.candle_s} s candles of the stored trades, ${TF.time(data.from)} – ${TF.time(data.to)} UTC`;
    UI.trade = { candles: c.time.length, markers, lines, candle_s: data.candle_s };
    UI.ready.chart = c.time.length;
  }

  function fillTable(selector, rows) {
    const body = document.querySelector(`${selector} tbody`);
    body.replaceChildren();
    for (const cells of rows) {
      const tr = document.createElement("tr");
      for (const cell of cells) TF.cell(tr, ...(Array.isArray(cell) ? cell : [cell]));
      body.appendChild(tr);
    }
  }

  function drawAutopsy(a) {
    const t = a.trade, k = a.costs, p = a.peers, cf = a.counterfactuals;
    document.getElementById("trade-title").textContent =
      `${t.mode} ${t.strategy} ${t.symbol} ${t.direction} · ${t.exit_reason} · net ${TF.num(k.net_r, 2)} R`;
    document.getElementById("trade-summary").textContent =
      `Tier ${t.tier}, regime ${t.regime}; entered ${TF.time(t.entry_time / 1000)} at ${TF.num(t.entry_price, 2)}, ` +
      `out ${TF.time(t.exit_time / 1000)} at ${TF.num(t.exit_price, 2)} UTC; ROI ${TF.num(t.roi_pct, 2)} %.`;
    const list = document.getElementById("narrative");
    list.replaceChildren(...a.narrative.map((s) => Object.assign(document.createElement("li"), { textContent: s })));
    fillTable("#costs", [
      ["gross", [TF.num(k.gross_r, 3), k.gross_r > 0 ? "buy" : "sell"]],
      ["fees", TF.num(-k.fees_r, 3)], ["slippage", TF.num(-k.slippage_r, 3)], ["funding", TF.num(-k.funding_r, 3)],
      ["net", [TF.num(k.net_r, 3), k.net_r > 0 ? "buy" : "sell"]],
    ]);
    document.getElementById("peers").textContent = p.count
      ? `${p.count} peers (${p.group}${p.fallback ? "; " + p.fallback : ""}): win rate ${TF.pct(p.win_rate, 0)}, ` +
        `this trade's net R at the ${TF.num(p.net_r_percentile, 0)}th percentile, holding time at the ` +
        `${TF.num(p.holding_percentile, 0)}th.`
      : "No peers yet: the first closed trade of its group.";
    fillTable("#tca", a.tca.orders.map((o) => [o.leg, o.side, TF.num(o.mid_at_send, 2), o.mid_source || "–",
                                               TF.num(o.vwap, 2), bp(o.slip_bps), o.maker_qty > 0 ? "yes" : "no"]));
    document.getElementById("tca-note").textContent =
      `Maker share ${TF.pct(a.tca.maker_share, 0)}; fees and funding took ${TF.pct(a.tca.cost_share, 0)} of |gross|.`;
    fillTable("#counterfactuals", [
      ["as traded", "1", cf.baseline.exit_reason, TF.num(cf.baseline.net_r, 3), "–", "–"],
      ...cf.scenarios.map((s) => [s.knob, TF.num(s.scale, 2), s.exit_reason, TF.num(s.net_r, 3),
                                  [TF.num(s.delta_net_r, 3), s.delta_net_r > 0 ? "buy" : s.delta_net_r < 0 ? "sell" : ""],
                                  TF.num(s.delta_roi_pct, 2) + " %"]),
    ]);
    document.getElementById("cf-note").textContent = cf.replay_matches_actual
      ? "The replay as traded reproduces the stored trade."
      : "The replay as traded differs from the stored trade: the scenarios are indicative only.";
    UI.ready.autopsy = true;
  }

  async function load() {
    const q = new URLSearchParams();
    for (const k of ["mode", "run"]) if (params.get(k)) q.set(k, params.get(k));
    try {
      const data = await TF.get(`/api/trade/${encodeURIComponent(id)}?${q}`);
      UI.tradeData = data;
      drawChart(data);
      drawAutopsy(data.autopsy);
      UI.ready.all = true;
    } catch (err) { TF.fail(err); }
  }
  load();
})();
