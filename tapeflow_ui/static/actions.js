// The desk's manual actions: review, then confirm. Each form carries a nonce made when it was opened;
// the server derives the action id from it, so a double click (or a retried request) is one action.
"use strict";
(function () {
  const UI = window.tapeflowUI;
  UI.actions = { sent: 0, results: [] };

  function nonce() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function post(url, body) {
    UI.actions.sent += 1;
    const resp = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": TF.csrf }, body: JSON.stringify(body),
    });
    const text = await resp.text();
    let data;
    try { data = JSON.parse(text); } catch (e) { data = { status: "refused", detail: text }; }
    data.http = resp.status;
    UI.actions.results.push(data);
    return data;
  }

  async function refresh() {
    const data = await TF.get("/api/actions");
    const state = Object.entries(data.kill_switch);
    document.getElementById("switch-state").textContent = state.length
      ? state.map(([mode, s]) => `${mode}: ${s.decision === "resume" ? "off" : s.decision} since ${TF.time(s.time)}`).join(" · ")
      : "never set (entries allowed)";
    const body = document.querySelector("#actions tbody");
    body.replaceChildren();
    for (const a of data.actions) {
      const tr = body.insertRow();
      tr.dataset.actionId = a.action_id;
      TF.cell(tr, a.requested_time.slice(0, 19).replace("T", " ")); TF.cell(tr, a.kind);
      TF.cell(tr, JSON.stringify(a.params)); TF.cell(tr, a.who); TF.cell(tr, a.reason);
      TF.cell(tr, a.status, a.status === "failed" ? "sell" : ""); TF.cell(tr, a.detail || "");
      const ans = a.answer;
      TF.cell(tr, ans ? `${ans.status}: ${ans.detail}` : (a.kind.startsWith("pair_") ? "waiting for the trader" : ""),
        ans && ans.status === "rejected" ? "sell" : "");
      if (ans) tr.dataset.answer = ans.status;
    }
    UI.ready.actions = data.actions.length;
  }

  const form = document.getElementById("kill-switch");
  const confirmBox = document.getElementById("ks-confirm");
  let pending = null;
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const on = f.get("state") === "on";
    const mode = f.get("mode");
    pending = { nonce: nonce(), on, flatten: on && f.get("flatten") === "on", modes: mode ? [mode] : null,
                reason: String(f.get("reason") || "").trim() };
    document.getElementById("ks-summary").textContent =
      `Set the kill switch ${on ? "ON" : "OFF"}${pending.flatten ? " and FLATTEN every position" : ""} for ` +
      `${mode || "all modes"}, because: ${pending.reason}`;
    confirmBox.hidden = false;
  });
  document.getElementById("ks-cancel").addEventListener("click", () => { pending = null; confirmBox.hidden = true; });
  document.getElementById("ks-go").addEventListener("click", async () => {
    if (!pending) return;
    const asked = pending;  // a second click before the answer sends the same nonce: one action
    const data = await post("/api/actions/kill-switch", asked);
    document.getElementById("ks-result").textContent = data.action_id
      ? `${data.duplicate ? "already done: " : ""}${data.status}: ${data.detail || ""}` : `refused: ${data.detail}`;
    if (data.status === "done" && pending === asked) { pending = null; confirmBox.hidden = true; form.reset(); }
    // a failed action stays failed under its id: confirming again is a new attempt with a new nonce
    if (data.status === "failed" && pending === asked) pending = { ...asked, nonce: nonce() };
    await refresh().catch(TF.fail);
  });

  // --- pair actions: review (the quote: spread, fees, net, break-even, size), then confirm -------------
  const bp = (v) => (v === null || v === undefined ? "–" : (v * 1e4).toFixed(2) + " bp");
  const openForm = document.getElementById("pair-open");
  const openBox = document.getElementById("po-confirm");
  let openPending = null;
  UI.actions.fillOpen = (coin, sell, buy) => {
    openForm.coin.value = coin; openForm.sell_venue.value = sell; openForm.buy_venue.value = buy;
  };
  openForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(openForm);
    const ask = { strategy: f.get("strategy"), coin: String(f.get("coin")).trim().toUpperCase(),
                  sell_venue: String(f.get("sell_venue")).trim(), buy_venue: String(f.get("buy_venue")).trim() };
    try {
      const q = await TF.get(`/api/desk/quote?${new URLSearchParams(ask)}`);
      UI.actions.quote = q;
      openPending = { ...ask, nonce: nonce(), shown_time: q.shown_time, reason: String(f.get("reason") || "").trim() };
      const body = document.querySelector("#po-quote tbody");
      body.replaceChildren();
      const rows = [
        ["Swept spread shown", `${bp(q.spread_sweep)} (top of book ${bp(q.spread_top)}) at ${TF.time(q.shown_time / 1000)} UTC`],
        ["Four taker fees", `${bp(q.four_fees)} ≈ ${TF.num(q.fees_usd)} USD`],
        ["Net of fees", bp(q.net_spread)],
        ["Sweep cost (both legs)", bp(q.sweep_cost)],
        ["Funding 8 h (forecast)", q.funding_diff_8h === null ? "unknown (a venue's funding interval or rate is missing)"
          : `${bp(q.funding_diff_8h)} ≈ ${TF.num(q.expected_carry_8h_usd)} USD received`],
        ["Break-even", q.break_even_hours === null ? "never from funding (the hedge does not receive funding)"
          : `${q.break_even_hours.toFixed(1)} h of funding`],
        ["Size", `${TF.num(q.notional_usd, 0)} USD per leg ≈ ${q.qty === null ? "–" : TF.num(q.qty, 4)} ${q.coin}`],
      ];
      for (const [k, v] of rows) { const tr = body.insertRow(); TF.cell(tr, k); TF.cell(tr, v).dataset.field = k; }
      document.getElementById("po-summary").textContent =
        `Open a ${q.strategy} pair: short ${q.coin} on ${q.sell_venue} (${q.sell_symbol}), long on ${q.buy_venue} ` +
        `(${q.buy_symbol}), at the trader's newest books, because: ${openPending.reason}`;
      openBox.hidden = false;
    } catch (err) { document.getElementById("po-result").textContent = `refused: ${err.message}`; }
  });
  document.getElementById("po-cancel").addEventListener("click", () => { openPending = null; openBox.hidden = true; });
  document.getElementById("po-go").addEventListener("click", async () => {
    if (!openPending) return;
    const asked = openPending;  // a second click before the answer sends the same nonce: one action
    const data = await post("/api/actions/pair-open", asked);
    document.getElementById("po-result").textContent = data.action_id
      ? `${data.duplicate ? "already done: " : ""}${data.status}: ${data.detail || ""}` : `refused: ${data.detail}`;
    if (data.status === "done" && openPending === asked) { openPending = null; openBox.hidden = true; }
    if (data.status === "failed" && openPending === asked) openPending = { ...asked, nonce: nonce() };
    await refresh().catch(TF.fail);
  });

  const closeForm = document.getElementById("pair-close");
  const closeBox = document.getElementById("pc-confirm");
  let closePending = null;
  UI.actions.fillClose = (pair) => {
    closeForm.pair_id.value = pair.pair_id;
    closeForm.dataset.summary = `${pair.coin}: short ${pair.short_venue}, long ${pair.long_venue}, entered at ` +
      `${bp(pair.entry_spread)}, net ${TF.num(pair.net_usd)} USD so far`;
    closeForm.scrollIntoView({ block: "center" });
  };
  closeForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(closeForm);
    closePending = { nonce: nonce(), pair_id: String(f.get("pair_id")), reason: String(f.get("reason") || "").trim() };
    document.getElementById("pc-summary").textContent = `Close pair ${closePending.pair_id} (${closeForm.dataset.summary || ""}) ` +
      `at the trader's newest books, both legs at market (close reason manual), because: ${closePending.reason}`;
    closeBox.hidden = false;
  });
  document.getElementById("pc-cancel").addEventListener("click", () => { closePending = null; closeBox.hidden = true; });
  document.getElementById("pc-go").addEventListener("click", async () => {
    if (!closePending) return;
    const asked = closePending;
    const data = await post("/api/actions/pair-close", asked);
    document.getElementById("pc-result").textContent = data.action_id
      ? `${data.duplicate ? "already done: " : ""}${data.status}: ${data.detail || ""}` : `refused: ${data.detail}`;
    if (data.status === "done" && closePending === asked) { closePending = null; closeBox.hidden = true; }
    if (data.status === "failed" && closePending === asked) closePending = { ...asked, nonce: nonce() };
    await refresh().catch(TF.fail);
  });

  refresh().catch(TF.fail);
})();
