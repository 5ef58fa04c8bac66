// The closed trades (/api/trades), newest first, each a link to its trade page (autopsy).
"use strict";
(function () {
  const UI = window.tapeflowUI;
  const params = new URLSearchParams(location.search);
  const form = document.getElementById("filters");
  form.mode.value = params.get("mode") || "";
  form.strategy.value = params.get("strategy") || "";

  function render(data) {
    const body = document.querySelector("#trades tbody");
    body.replaceChildren();
    for (const t of data.trades) {
      const tr = document.createElement("tr");
      const link = document.createElement("a");
      link.href = `/trade/${encodeURIComponent(t.position_id)}?mode=${t.mode}`;
      link.textContent = TF.time(t.exit_time);
      tr.appendChild(document.createElement("td")).appendChild(link);
      for (const v of [t.mode, t.strategy, t.symbol, t.direction, t.tier, t.exit_reason]) TF.cell(tr, v);
      for (const v of [t.gross_r, -t.fees_r, -t.funding_r, -t.slippage_r]) TF.cell(tr, TF.num(v, 2));
      TF.cell(tr, TF.num(t.net_r, 2), t.net_r > 0 ? "buy" : "sell");
      body.appendChild(tr);
    }
    document.getElementById("trades-note").textContent = data.trades.length
      ? `${data.trades.length} trades (costs shown as what they took from the trade)` : "no closed trade stored yet";
    UI.ready.trades = data.trades.length;
  }

  async function load() {
    const q = new URLSearchParams();
    for (const k of ["mode", "strategy"]) if (params.get(k)) q.set(k, params.get(k));
    try { render(await TF.get(`/api/trades?${q}`)); } catch (err) { TF.fail(err); }
  }
  load();
})();
