// The order-flow page: candles/VWAP/CVD/markers with Lightweight Charts, and three views it has no
// series for, drawn on canvases: the footprint (bought x sold per price level per bar), the volume
// profile and the liquidity heatmap. Every number comes aggregated from the server (/api/*).
"use strict";
(function () {
  const symbol = document.body.dataset.symbol;
  const params = new URLSearchParams(location.search);
  const tf = params.get("tf") || "1m";
  const form = document.getElementById("controls");
  form.tf.value = tf;
  if (params.get("step")) form.step.value = params.get("step");
  const UI = window.tapeflowUI;

  function query(extra) {
    const q = new URLSearchParams({ symbol, tf });
    for (const k of ["from", "to", "step"]) if (params.get(k)) q.set(k, params.get(k));
    for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
    return q.toString();
  }

  const chartOptions = (height) => ({
    height, layout: { background: { color: "#0b0f14" }, textColor: "#d7dde5", attributionLogo: false },
    grid: { vertLines: { color: "#1c232c" }, horzLines: { color: "#1c232c" } },
    timeScale: { timeVisible: true, secondsVisible: false, borderColor: "#2a323d" },
    rightPriceScale: { borderColor: "#2a323d" }, crosshair: { mode: 0 },
  });

  function drawCandles(data) {
    const c = data.candles;
    const main = LightweightCharts.createChart(document.getElementById("candles"), chartOptions(360));
    const candles = main.addCandlestickSeries({ upColor: "#26a69a", downColor: "#ef5350", borderVisible: false,
                                                wickUpColor: "#26a69a", wickDownColor: "#ef5350" });
    candles.setData(c.time.map((t, i) => ({ time: t, open: c.open[i], high: c.high[i], low: c.low[i], close: c.close[i] })));
    const vwap = main.addLineSeries({ color: "#f0c674", lineWidth: 1, priceLineVisible: false, lastValueVisible: false });
    vwap.setData(c.time.map((t, i) => ({ time: t, value: c.vwap[i] })).filter((p) => p.value !== null));
    const seconds = { "1m": 60, "5m": 300, "15m": 900, "1h": 3600 }[tf];
    const barOf = (s) => Math.floor(s / seconds) * seconds;
    const markers = [];
    for (const s of data.signals) {
      const long = s.direction === "LONG";
      markers.push({ time: barOf(s.time), position: long ? "belowBar" : "aboveBar", color: long ? "#26a69a" : "#ef5350",
                     shape: long ? "arrowUp" : "arrowDown", text: `${s.direction} ${s.score.toFixed(0)}` });
    }
    const liqs = new Map();  // one marker per bar and side: the bar's liquidated USD (a lower bound)
    for (const l of data.liquidations.items) {
      const key = `${barOf(l.time)} ${l.side}`;
      liqs.set(key, (liqs.get(key) || 0) + l.usd);
    }
    for (const [key, usd] of liqs) {
      const [t, side] = key.split(" ");
      markers.push({ time: Number(t), position: side === "BUY" ? "belowBar" : "aboveBar", color: "#b388ff",
                     shape: "circle", size: 0.5, text: usd >= 50000 ? `liq ${TF.compact(usd)}` : "" });
    }
    markers.sort((a, b) => a.time - b.time);
    candles.setMarkers(markers);
    const cvdChart = LightweightCharts.createChart(document.getElementById("cvd"), chartOptions(160));
    const cvd = cvdChart.addBaselineSeries({ baseValue: { type: "price", price: 0 }, lineWidth: 1 });
    cvd.setData(c.time.map((t, i) => ({ time: t, value: c.cvd[i] })));
    main.timeScale().subscribeVisibleLogicalRangeChange((r) => r && cvdChart.timeScale().setVisibleLogicalRange(r));
    main.timeScale().fitContent();
    document.getElementById("liq-note").textContent =
      `${data.liquidations.items.length} liquidations marked (purple). ${data.liquidations.note}`;
    document.getElementById("range").textContent = `${TF.time(data.from)} – ${TF.time(data.to)} UTC · step ${data.step}`;
    if (!form.step.value) form.step.value = data.step;
    UI.chart = data;
    UI.ready.candles = c.time.length;
    if (!params.get("to")) follow(candles, cvd, c, markers, barOf, new Set(data.signals.map((s) => s.signal_id)));
  }

  // The newest bar (and new signals) pushed by the server: from the live topics, or polled from the
  // database when the broker cannot be read (the "live" event says which)
  function follow(series, cvdSeries, c, markers, barOf, shown) {
    const source = new EventSource(`/api/stream?${new URLSearchParams({ symbol, tf })}`);
    const n = c.time.length;
    let last = n ? c.time[n - 1] : 0;
    // the CVD before the newest bar, and that bar's delta: a pushed bar's CVD is the one plus its delta
    let cvdBefore = n ? c.cvd[n - 1] - c.delta[n - 1] : 0, lastDelta = n ? c.delta[n - 1] : 0;
    let from = "";
    UI.live = { source: null, bars: 0, signals: 0 };
    source.addEventListener("live", (ev) => {
      UI.live.source = JSON.parse(ev.data).source;
      from = UI.live.source === "topics" ? "" : " (polling the database)";
    });
    source.addEventListener("bar", (ev) => {
      const b = JSON.parse(ev.data);
      if (b.time >= last) {
        if (b.time > last) cvdBefore += lastDelta;  // a new bar: the previous one's delta is final
        last = b.time;
        lastDelta = b.delta;
        series.update({ time: b.time, open: b.open, high: b.high, low: b.low, close: b.close });
        cvdSeries.update({ time: b.time, value: cvdBefore + b.delta });
        UI.live.cvd = cvdBefore + b.delta;
        UI.live.bars += 1;
        UI.live.bar = b;
        TF.status(`live: ${TF.time(b.time)}${from}`);
      }
    });
    source.addEventListener("signal", (ev) => {
      const s = JSON.parse(ev.data);
      if (shown.has(s.signal_id)) return;
      shown.add(s.signal_id);
      const long = s.direction === "LONG";
      markers.push({ time: barOf(s.time), position: long ? "belowBar" : "aboveBar", color: long ? "#26a69a" : "#ef5350",
                     shape: long ? "arrowUp" : "arrowDown", text: `${s.direction} ${s.score.toFixed(0)}` });
      markers.sort((a, b) => a.time - b.time);
      series.setMarkers(markers);
      UI.live.signals += 1;
    });
  }

  // --- footprint --------------------------------------------------------------------------------
  const fpCanvas = document.getElementById("footprint");
  const COL_W = 96;

  function drawFootprint(data) {
    const [ctx, w, h] = TF.canvas(fpCanvas);
    const cols = Math.max(1, Math.floor((w - 60) / COL_W));
    const chosen = data.bars.findIndex((b) => b.time === UI.selectedBar);  // keep the chosen bar in view
    const first = chosen < 0 ? Math.max(0, data.bars.length - cols)
      : Math.max(0, Math.min(chosen - Math.floor(cols / 2), data.bars.length - cols));
    const visible = data.bars.slice(first, first + cols);
    UI.footprint = data;
    UI.footprintVisible = visible.map((b) => b.time);
    if (!visible.length) return;
    let lo = Infinity, hi = -Infinity, maxVol = 0;
    for (const b of visible) for (const [lv, bought, sold] of b.levels) {
      lo = Math.min(lo, lv); hi = Math.max(hi, lv); maxVol = Math.max(maxVol, bought + sold);
    }
    const rows = hi - lo + 1, top = 18, bottom = 18;
    const rowH = (h - top - bottom) / rows;
    const y = (lv) => top + (hi - lv) * rowH;
    ctx.font = `${Math.max(8, Math.min(11, rowH - 1))}px system-ui`;
    ctx.textBaseline = "middle";
    visible.forEach((b, k) => {
      const x0 = 60 + k * COL_W;
      for (const [lv, bought, sold, imb] of b.levels) {
        const alpha = 0.15 + 0.6 * (bought + sold) / maxVol;
        ctx.fillStyle = bought >= sold ? `rgba(38,166,154,${alpha})` : `rgba(239,83,80,${alpha})`;
        ctx.fillRect(x0 + 2, y(lv), COL_W - 4, Math.max(rowH - 1, 1));
        if (lv === b.poc) { ctx.strokeStyle = "#f0c674"; ctx.strokeRect(x0 + 2, y(lv), COL_W - 4, Math.max(rowH - 1, 1)); }
        if (rowH >= 9) {
          ctx.fillStyle = imb === "sell" ? "#ff8a80" : "#d7dde5";
          ctx.textAlign = "right"; ctx.fillText(TF.compact(sold), x0 + COL_W / 2 - 4, y(lv) + rowH / 2);
          ctx.fillStyle = imb === "buy" ? "#69f0ae" : "#d7dde5";
          ctx.textAlign = "left"; ctx.fillText(TF.compact(bought), x0 + COL_W / 2 + 4, y(lv) + rowH / 2);
        }
      }
      ctx.fillStyle = b.time === UI.selectedBar ? "#f0c674" : "#7d8896";
      ctx.textAlign = "center";
      ctx.fillText(TF.hhmm(b.time), x0 + COL_W / 2, 9);
      ctx.fillStyle = b.delta >= 0 ? "#26a69a" : "#ef5350";
      ctx.fillText(`Δ ${TF.compact(b.delta)}`, x0 + COL_W / 2, h - 9);
    });
    ctx.fillStyle = "#7d8896"; ctx.textAlign = "left";
    const every = Math.max(1, Math.ceil(14 / rowH));
    for (let lv = hi; lv >= lo; lv -= every) ctx.fillText(TF.num(lv * data.step, decimals(data.step)), 2, y(lv) + rowH / 2);
    UI.ready.footprint = visible.length;
  }

  function decimals(step) { return Math.max(0, Math.min(8, -Math.floor(Math.log10(step) + 1e-9))); }

  function selectBar(time) {
    const data = UI.footprint;
    const bar = data.bars.find((b) => b.time === time) || data.bars[data.bars.length - 1];
    if (!bar) return;
    UI.selectedBar = bar.time;
    const box = document.getElementById("bar-detail");
    box.replaceChildren();
    const title = document.createElement("h3");
    title.textContent = `Bar ${TF.time(bar.time)} UTC · delta ${TF.num(bar.delta, 4)} · POC ${TF.num(bar.poc * data.step, decimals(data.step))}`;
    const table = document.createElement("table");
    table.id = "bar-table";
    table.dataset.time = bar.time;
    table.dataset.step = data.step;
    const head = table.createTHead().insertRow();
    for (const t of ["Price", "Bought", "Sold", "Delta", ""]) { const th = document.createElement("th"); th.textContent = t; head.appendChild(th); }
    const body = table.createTBody();
    for (const [lv, bought, sold, imb] of [...bar.levels].reverse()) {
      const tr = body.insertRow();
      tr.dataset.level = lv; tr.dataset.bought = bought; tr.dataset.sold = sold;
      tr.className = (imb ? `imb-${imb} ` : "") + (lv === bar.poc ? "poc" : "");
      TF.cell(tr, TF.num(lv * data.step, decimals(data.step)));
      TF.cell(tr, TF.num(bought, 4), "buy");
      TF.cell(tr, TF.num(sold, 4), "sell");
      TF.cell(tr, TF.num(bought - sold, 4), bought >= sold ? "buy" : "sell");
      TF.cell(tr, (lv === bar.poc ? "POC " : "") + (imb ? `${imb} imbalance` : ""));
    }
    box.append(title, table);
    drawFootprint(data);
  }

  fpCanvas.addEventListener("click", (ev) => {
    const rect = fpCanvas.getBoundingClientRect();
    const k = Math.floor((ev.clientX - rect.left - 60) / COL_W);
    const times = UI.footprintVisible || [];
    if (k >= 0 && k < times.length) selectBar(times[k]);
  });

  // --- volume profile ---------------------------------------------------------------------------
  function drawProfile(data) {
    const [ctx, w, h] = TF.canvas(document.getElementById("profile"));
    UI.profile = data;
    const summary = document.getElementById("profile-summary");
    if (data.poc === null) { summary.textContent = "no trades in range"; return; }
    const d = decimals(data.step);
    summary.dataset.pocLevel = data.poc;
    summary.dataset.vaLow = data.value_area[0];
    summary.dataset.vaHigh = data.value_area[1];
    summary.textContent = `POC ${TF.num(data.poc * data.step, d)} · value area ${TF.num(data.value_area[0] * data.step, d)}` +
      ` – ${TF.num((data.value_area[1] + 1) * data.step, d)} (70 %) · ${TF.compact(data.total)} traded · step ${data.step}`;
    const levels = data.levels;
    const lo = levels[0][0], hi = levels[levels.length - 1][0];
    const rowH = (h - 4) / (hi - lo + 1);
    const maxVol = Math.max(...levels.map(([, b, s]) => b + s));
    for (const [lv, bought, sold] of levels) {
      const yy = 2 + (hi - lv) * rowH, inVA = lv >= data.value_area[0] && lv <= data.value_area[1];
      const wb = (w - 70) * bought / maxVol, ws = (w - 70) * sold / maxVol;
      ctx.fillStyle = inVA ? "rgba(38,166,154,.85)" : "rgba(38,166,154,.4)";
      ctx.fillRect(70, yy, wb, Math.max(rowH - 0.5, 1));
      ctx.fillStyle = inVA ? "rgba(239,83,80,.85)" : "rgba(239,83,80,.4)";
      ctx.fillRect(70 + wb, yy, ws, Math.max(rowH - 0.5, 1));
    }
    const pocY = 2 + (hi - data.poc) * rowH + rowH / 2;
    ctx.strokeStyle = "#f0c674"; ctx.beginPath(); ctx.moveTo(70, pocY); ctx.lineTo(w, pocY); ctx.stroke();
    ctx.fillStyle = "#7d8896"; ctx.font = "10px system-ui"; ctx.textBaseline = "middle";
    const every = Math.max(1, Math.ceil(14 / rowH));
    for (let lv = hi; lv >= lo; lv -= every) ctx.fillText(TF.num(lv * data.step, d), 2, 2 + (hi - lv) * rowH + rowH / 2);
    UI.ready.profile = levels.length;
  }

  // --- liquidity heatmap ------------------------------------------------------------------------
  function drawHeatmap(data) {
    const [ctx, w, h] = TF.canvas(document.getElementById("heatmap"));
    UI.heatmap = data;
    const cells = data.cells;
    if (!cells.length) { document.getElementById("heatmap-summary").textContent = "no stored books in range"; return; }
    let lo = Infinity, hi = -Infinity, maxQ = 0;
    for (const [, , , lv, q] of cells) { lo = Math.min(lo, lv); hi = Math.max(hi, lv); maxQ = Math.max(maxQ, q); }
    const left = 70, cols = Math.ceil((data.to - data.from) / data.column_s);
    const colW = (w - left) / cols, rowH = h / (hi - lo + 1);
    const x = (t) => left + (t - data.from) / data.column_s * colW;
    const y = (lv) => (hi - lv) * rowH;
    for (const [col, , side, lv, q] of cells) {
      const v = Math.sqrt(q / maxQ);
      ctx.fillStyle = side === "bid" ? `rgba(64,196,255,${0.08 + 0.92 * v})` : `rgba(255,171,64,${0.08 + 0.92 * v})`;
      ctx.fillRect(x(col), y(lv), Math.max(colW, 1), Math.max(rowH, 1));
    }
    // the detectors' walls: a bar across the column at the wall's level, white-edged, bid green / ask red
    UI.wallsDrawn = [];
    // (a wall's price is mid × (1 ∓ bps / 10,000): a book price up to a last-digit rounding, hence the
    // 1e-6 of a step before flooring, so a wall on a level's edge lands on that level)
    for (const [col, , side, price, usd, age, strategy] of data.walls || []) {
      const lv = Math.floor(price / data.step + 1e-6);
      if (lv < lo || lv > hi) continue;
      const wy = y(lv) + rowH / 2;
      ctx.strokeStyle = "#ffffff"; ctx.lineWidth = 4;
      ctx.beginPath(); ctx.moveTo(x(col), wy); ctx.lineTo(x(col) + Math.max(colW, 3), wy); ctx.stroke();
      ctx.strokeStyle = side === "bid" ? "#00e676" : "#ff1744"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.moveTo(x(col), wy); ctx.lineTo(x(col) + Math.max(colW, 3), wy); ctx.stroke();
      UI.wallsDrawn.push({ col, side, level: lv, price, usd, age, strategy });
    }
    ctx.lineWidth = 1;
    const maxTrade = Math.max(1e-12, ...data.large_trades.map((t) => t.qty));
    for (const t of data.large_trades) {
      const lv = Math.floor(t.price / data.step);
      if (lv < lo || lv > hi) continue;
      ctx.beginPath();
      ctx.arc(x(t.time), y(lv) + rowH / 2, 2 + 10 * Math.sqrt(t.qty / maxTrade), 0, 2 * Math.PI);
      ctx.strokeStyle = t.side === "BUY" ? "#69f0ae" : "#ff8a80"; ctx.lineWidth = 1.5; ctx.stroke();
    }
    ctx.strokeStyle = "#b388ff";
    for (const l of data.liquidations.items) {
      const cx = x(l.time), cy = y(Math.floor(l.price / data.step)) + rowH / 2;
      ctx.beginPath(); ctx.moveTo(cx - 4, cy - 4); ctx.lineTo(cx + 4, cy + 4); ctx.moveTo(cx + 4, cy - 4); ctx.lineTo(cx - 4, cy + 4); ctx.stroke();
    }
    ctx.fillStyle = "#7d8896"; ctx.font = "10px system-ui"; ctx.textBaseline = "middle";
    const every = Math.max(1, Math.ceil(14 / rowH)), d = decimals(data.step);
    for (let lv = hi; lv >= lo; lv -= every) ctx.fillText(TF.num(lv * data.step, d), 2, y(lv) + rowH / 2);
    document.getElementById("heatmap-summary").textContent =
      `${cols} columns of ${data.column_s} s (the last stored book of each), ${hi - lo + 1} levels of ${data.step}; ` +
      `largest resting size ${TF.compact(maxQ)}; ${UI.wallsDrawn.length} wall marks from the detectors; ` +
      (data.to - data.from > 12 * 3600 ? "large trades shown for ranges up to 12 h; " : `${data.large_trades.length} largest trades; `) +
      `${data.liquidations.items.length} liquidations (lower bound: Binance sends at most one per second per symbol).`;
    UI.ready.heatmap = cells.length;
  }

  async function load() {
    try {
      TF.status("loading…");
      const chart = await TF.get(`/api/chart?${query()}`);
      drawCandles(chart);
      const step = { step: chart.step };
      const [fp, profile, heat] = await Promise.all([
        TF.get(`/api/footprint?${query(params.get("bar") ? { ...step, bar: params.get("bar") } : step)}`), TF.get(`/api/profile?${query(step)}`), TF.get(`/api/heatmap?${query(step)}`)]);
      drawFootprint(fp);
      selectBar(params.get("bar") ? Number(params.get("bar")) : null);
      drawProfile(profile);
      drawHeatmap(heat);
      UI.ready.all = true;
      TF.status(`as of ${TF.time(chart.to)} UTC`);
    } catch (err) { TF.fail(err); }
  }
  load();
})();
