// The market overview: symbols by 24 h volume, funding heatmap, signal timeline, whale radar and the
// data-quality lights, from one /api/overview call; kept live by /api/overview/stream (new signals
// pushed onto the timeline, a re-read of /api/overview when the bars change, or every 10 s without
// the broker's topics).
"use strict";
(function () {
  const UI = window.tapeflowUI;

  function market(rows) {
    const body = document.querySelector("#market tbody");
    body.replaceChildren();
    for (const r of rows) {
      const tr = body.insertRow();
      tr.dataset.symbol = r.symbol;
      const td = TF.cell(tr, "");
      const a = document.createElement("a");
      a.href = `/symbol/${encodeURIComponent(r.symbol)}`; a.textContent = r.symbol;
      td.appendChild(a);
      TF.cell(tr, TF.num(r.price, r.price < 10 ? 4 : 2));
      TF.cell(tr, TF.pct(r.change), r.change >= 0 ? "buy" : "sell");
      TF.cell(tr, TF.compact(r.volume_usd));
      TF.cell(tr, TF.pct(r.funding, 4), r.funding > 0 ? "sell" : "buy");
      TF.cell(tr, TF.pct(r.oi_change));
      TF.cell(tr, TF.compact(r.cvd), r.cvd >= 0 ? "buy" : "sell");
    }
    const links = document.getElementById("symbol-links");
    links.replaceChildren(...rows.slice(0, 6).map((r) => {
      const a = document.createElement("a"); a.href = `/symbol/${r.symbol}`; a.textContent = r.symbol; return a;
    }));
  }

  function funding(data) {
    const [ctx, w, h] = TF.canvas(document.getElementById("funding"));
    const symbols = [...new Set(data.cells.map((c) => c[0]))];
    const hours = [...new Set(data.cells.map((c) => c[1]))].sort((a, b) => a - b);
    if (!symbols.length) return;
    const left = 80, top = 14, cw = (w - left) / hours.length, ch = (h - top) / symbols.length;
    const maxAbs = Math.max(1e-9, ...data.cells.map((c) => Math.abs(c[2])));
    ctx.font = "10px system-ui"; ctx.textBaseline = "middle";
    for (const [sym, hour, rate] of data.cells) {
      const v = Math.min(1, Math.abs(rate) / maxAbs);
      ctx.fillStyle = rate >= 0 ? `rgba(239,83,80,${0.15 + 0.85 * v})` : `rgba(38,166,154,${0.15 + 0.85 * v})`;
      ctx.fillRect(left + hours.indexOf(hour) * cw, top + symbols.indexOf(sym) * ch, cw - 1, ch - 1);
    }
    ctx.fillStyle = "#d7dde5";
    symbols.forEach((s, i) => ctx.fillText(s, 2, top + i * ch + ch / 2));
    hours.forEach((t, i) => { if (i % 3 === 0) ctx.fillText(TF.hhmm(t), left + i * cw, 6); });
    UI.ready.funding = data.cells.length;
  }

  function timeline(signals, now) {
    const [ctx, w, h] = TF.canvas(document.getElementById("timeline"));
    const symbols = [...new Set(signals.map((s) => s.symbol))].sort();
    const start = now - 86400, left = 80, lane = (h - 10) / Math.max(1, symbols.length);
    ctx.font = "10px system-ui"; ctx.textBaseline = "middle"; ctx.fillStyle = "#d7dde5";
    symbols.forEach((s, i) => ctx.fillText(s, 2, 5 + i * lane + lane / 2));
    for (const s of signals) {
      const x = left + (s.time - start) / 86400 * (w - left - 6), yy = 5 + symbols.indexOf(s.symbol) * lane + lane / 2;
      ctx.fillStyle = s.direction === "LONG" ? "#26a69a" : "#ef5350";
      ctx.beginPath(); ctx.arc(x, yy, 3 + s.score / 25, 0, 2 * Math.PI); ctx.fill();
    }
    const body = document.querySelector("#signals tbody");
    body.replaceChildren();
    for (const s of signals.slice(0, 30)) {
      const tr = body.insertRow();
      TF.cell(tr, TF.time(s.time)); TF.cell(tr, s.symbol);
      TF.cell(tr, s.direction, s.direction === "LONG" ? "buy" : "sell");
      TF.cell(tr, s.tier); TF.cell(tr, TF.num(s.score, 1)); TF.cell(tr, TF.num(s.price, 2));
    }
    UI.ready.signals = signals.length;
  }

  function whales(rows) {
    const body = document.querySelector("#whales tbody");
    body.replaceChildren();
    for (const r of rows) {
      const tr = body.insertRow();
      TF.cell(tr, TF.time(r.time)); TF.cell(tr, r.symbol);
      TF.cell(tr, r.side, r.side === "BUY" ? "buy" : "sell");
      TF.cell(tr, TF.num(r.price, 2)); TF.cell(tr, TF.num(r.qty, 3)); TF.cell(tr, TF.compact(r.usd));
    }
    UI.ready.whales = rows.length;
  }

  function quality(lights) {
    const list = document.getElementById("quality");
    list.replaceChildren();
    for (const l of lights) {
      const li = document.createElement("li");
      li.className = l.state;
      li.dataset.check = l.check;
      const name = l.link ? Object.assign(document.createElement("a"), { href: l.link }) : document.createElement("strong");
      name.textContent = l.check;
      li.append(name, ` — ${l.detail}`);
      list.appendChild(li);
    }
    UI.ready.quality = lights.length;
  }

  // signals pushed by the stream, kept until a re-read has them (the sink stores them a moment later)
  const pushed = new Map();
  let data = null;

  function drawSignals() {
    const ids = new Set(data.signals.map((s) => s.signal_id));
    for (const id of [...pushed.keys()]) if (ids.has(id)) pushed.delete(id);
    const all = [...pushed.values(), ...data.signals].sort((a, b) => b.time - a.time);
    const now = Math.max(data.now, all.length ? all[0].time : data.now);
    timeline(all.filter((s) => s.time > now - 86400), now);
  }

  function render(fresh) {
    data = fresh;
    UI.overview = data;
    if (data.now === null) { TF.status("no bars stored yet"); return false; }
    document.getElementById("asof").textContent = `24 h to ${TF.time(data.now)} UTC (newest stored bar)`;
    market(data.market); funding(data.funding); drawSignals(); whales(data.whales);
    quality(data.quality);
    return true;
  }

  function say() {
    const at = data && data.now !== null ? `as of ${TF.time(data.now)} UTC` : "no bars stored yet";
    const how = TF.liveText(UI.live);
    TF.status(`${at} · ${how}`);
  }

  // updates: "signal" (a new one, for the timeline), "changed" (re-read the view), "live" (from where)
  function follow() {
    UI.live = { source: null, signals: 0, refreshes: 0 };
    const { source, refresh } = TF.follow("/api/overview/stream", UI.live, async () => {
      render(await TF.get("/api/overview"));
      UI.ready.all = true;
    }, say);
    source.addEventListener("signal", (ev) => {
      const s = JSON.parse(ev.data);
      if (pushed.has(s.signal_id) || (data && data.signals.some((x) => x.signal_id === s.signal_id))) return;
      pushed.set(s.signal_id, s);
      UI.live.signals += 1;
      if (data && data.now !== null) drawSignals(); else refresh();
    });
  }

  (async () => {
    try {
      const ok = render(await TF.get("/api/overview"));
      follow();
      if (!ok) return;
      UI.ready.all = true;
      say();
    } catch (err) { TF.fail(err); }
  })();
})();
