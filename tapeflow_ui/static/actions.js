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

  refresh().catch(TF.fail);
})();
