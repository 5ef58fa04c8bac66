// The watchlist desk: the live ranking, one ordered venue pair's spread history with entries and exits,
// and the hedged pairs with their legs, P&L and funding (/api/desk, /api/desk/spread); kept live by
// /api/desk/stream: a re-read when the watchlist's topics (xv.features, xv.pairs, xv.orders,
// xv.funding) say something changed, or every 10 s without them.
"use strict";
(function () {
  const UI = window.tapeflowUI;
  const bp = (v) => (v === null || v === undefined ? "–" : (v * 1e4).toFixed(2));
  let chart = null, shown = null, swept = null, top = null;

  // one ordered pair's history; the same pair again (a live re-read) keeps the chart and its zoom
  async function spread(coin, sell, buy) {
    const data = await TF.get(`/api/desk/spread?${new URLSearchParams({ coin, sell, buy })}`);
    UI.spread = data;
    const key = `${coin} ${sell} ${buy}`;
    if (chart && shown === key) { draw(data, false); return; }
    shown = key;
    document.getElementById("spread-title").textContent = `${coin}: sell ${sell}, buy ${buy}`;
    const box = document.getElementById("spread");
    if (chart) chart.remove();
    chart = LightweightCharts.createChart(box, {
      height: 300, layout: { background: { color: "#0b0f14" }, textColor: "#d7dde5", attributionLogo: false },
      grid: { vertLines: { color: "#1c232c" }, horzLines: { color: "#1c232c" } },
      timeScale: { timeVisible: true, secondsVisible: true }, localization: { priceFormatter: (v) => v.toFixed(2) + " bp" },
    });
    swept = chart.addLineSeries({ color: "#40c4ff", lineWidth: 2 });
    top = chart.addLineSeries({ color: "#7d8896", lineWidth: 1, lineStyle: 1 });
    draw(data, true);
  }

  function draw(data, fit) {
    swept.setData(data.points.filter((p) => p[1] !== null).map((p) => ({ time: p[0], value: p[1] * 1e4 })));
    top.setData(data.points.filter((p) => p[2] !== null).map((p) => ({ time: p[0], value: p[2] * 1e4 })));
    const times = data.points.map((p) => p[0]);
    const snap = (t) => times.reduce((best, x) => (Math.abs(x - t) < Math.abs(best - t) ? x : best), times[0]);
    swept.setMarkers(data.marks.map((m) => ({
      time: snap(m.time), position: m.kind === "entry" ? "belowBar" : "aboveBar", shape: m.kind === "entry" ? "arrowUp" : "arrowDown",
      color: m.kind === "entry" ? "#69f0ae" : "#ffab40", text: `${m.kind} ${bp(m.spread)}`,
    })).sort((a, b) => a.time - b.time));
    if (fit) chart.timeScale().fitContent();
    UI.ready.spread = data.points.length;
  }

  function ranking(rows) {
    const body = document.querySelector("#ranking tbody");
    body.replaceChildren();
    const ready = rows.filter((r) => r.spread_sweep !== null);
    ready.forEach((r, i) => {
      const tr = body.insertRow();
      Object.assign(tr.dataset, { coin: r.coin, sell: r.sell_venue, buy: r.buy_venue });
      TF.cell(tr, String(i + 1)); TF.cell(tr, r.coin); TF.cell(tr, `${r.sell_venue} → ${r.buy_venue}`);
      TF.cell(tr, bp(r.spread_sweep), r.spread_sweep >= 0 ? "buy" : "sell"); TF.cell(tr, bp(r.spread_top));
      TF.cell(tr, r.z_1h === null ? "–" : r.z_1h.toFixed(1)); TF.cell(tr, bp(r.funding_diff_8h));
      TF.cell(tr, r.eval_time.slice(11, 19));
      tr.addEventListener("click", () => {
        if (UI.actions && UI.actions.fillOpen) UI.actions.fillOpen(r.coin, r.sell_venue, r.buy_venue);
        spread(r.coin, r.sell_venue, r.buy_venue).catch(TF.fail);
      });
    });
    const missing = rows.filter((r) => r.spread_sweep === null);
    document.getElementById("missing").textContent = missing.length
      ? `missing: ${missing.map((r) => `${r.coin} ${r.sell_venue}→${r.buy_venue} (${r.missing || "unknown"})`).join("; ")}` : "";
    UI.ready.ranking = ready.length;
    return ready;
  }

  function pairs(rows) {
    const body = document.querySelector("#pairs tbody");
    body.replaceChildren();
    for (const p of rows) {
      const tr = body.insertRow();
      tr.dataset.pairId = p.pair_id;
      TF.cell(tr, p.pair_id.slice(0, 14)); TF.cell(tr, p.coin);
      TF.cell(tr, `${p.short_venue} ${p.short_symbol}`); TF.cell(tr, `${p.long_venue} ${p.long_symbol}`);
      TF.cell(tr, p.status + (p.close_reason ? ` (${p.close_reason})` : ""));
      TF.cell(tr, TF.time(p.opened_time).slice(5));
      TF.cell(tr, bp(p.entry_spread)); TF.cell(tr, bp(p.exit_spread));
      TF.cell(tr, TF.num(p.gross_usd)); TF.cell(tr, TF.num(p.fees_usd)); TF.cell(tr, TF.num(p.slippage_usd));
      TF.cell(tr, TF.num(p.funding_usd)); TF.cell(tr, TF.num(p.net_usd), p.net_usd >= 0 ? "buy" : "sell");
      const act = TF.cell(tr, "");
      if (p.status === "open" && document.getElementById("pair-close")) {
        const b = document.createElement("button");
        b.type = "button"; b.textContent = "Close…"; b.className = "close-pair";
        b.addEventListener("click", (ev) => { ev.stopPropagation(); UI.actions.fillClose(p); });
        act.appendChild(b);
      }
      const legs = body.insertRow();
      legs.className = "legs";
      const td = TF.cell(legs, p.orders.map((o) => `${o.action} ${o.leg} ${o.side} ${TF.num(o.qty, 4)} ${o.symbol}@${o.venue} ` +
        `${o.avg_price === null ? "–" : TF.num(o.avg_price, 4)} fee ${TF.num(o.fee, 4)} ${o.status}`).join(" · ") +
        (p.funding_paid ? ` · funding paid ${TF.num(p.funding_paid, 4)}` : ""));
      td.colSpan = 14; td.className = "note";
    }
    UI.ready.pairs = rows.length;
  }

  function render(data) {
    UI.desk = data;
    const ready = ranking(data.ranking);
    pairs(data.pairs);
    if (ready.length) document.getElementById("asof").textContent = `at ${ready[0].eval_time.slice(0, 19).replace("T", " ")} UTC`;
    return ready;
  }

  function say() {
    const how = TF.liveText(UI.live);
    const at = UI.live.refreshed ? ` · updated ${new Date(UI.live.refreshed).toISOString().slice(11, 19)} UTC` : "";
    TF.status(`watchlist desk · ${how}${at}`);
  }

  // "changed": re-read the ranking and pairs (and the shown pair's history); "live": from where
  function follow() {
    UI.live = { source: null, refreshes: 0, refreshed: null };
    TF.follow("/api/desk/stream", UI.live, async () => {
      const ready = render(await TF.get("/api/desk"));
      if (shown) { const [coin, sell, buy] = shown.split(" "); await spread(coin, sell, buy); }
      else if (ready.length) await spread(ready[0].coin, ready[0].sell_venue, ready[0].buy_venue);
      UI.live.refreshed = Date.now();
    }, say);
  }

  (async () => {
    try {
      const ready = render(await TF.get("/api/desk"));
      if (ready.length) await spread(ready[0].coin, ready[0].sell_venue, ready[0].buy_venue);
      UI.ready.all = true;
      follow();
      say();
    } catch (err) { TF.fail(err); }
  })();
})();
