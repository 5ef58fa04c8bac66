// The execution degradations (/api/execution/degradation): each SLO rule's state per mode, then the
// newest changes, each with the SLI value and the threshold it passed.
"use strict";
(function () {
  const UI = window.tapeflowUI;
  const params = new URLSearchParams(location.search);

  function value(v) { return v === null || v === undefined ? "–" : Number(v).toPrecision(4).replace(/\.?0+$/, ""); }

  function render(data) {
    const state = document.querySelector("#degradation tbody");
    state.replaceChildren();
    for (const r of data.state) {
      const tr = document.createElement("tr");
      tr.dataset.rule = r.rule;
      tr.dataset.mode = r.mode;
      TF.cell(tr, r.mode); TF.cell(tr, r.rule);
      TF.cell(tr, r.active ? "in force" : "clear", r.active ? "sell" : "buy");
      TF.cell(tr, r.changed_time === null ? "–" : TF.time(r.changed_time));
      TF.cell(tr, r.sli); TF.cell(tr, value(r.value)); TF.cell(tr, value(r.threshold)); TF.cell(tr, String(r.samples));
      state.appendChild(tr);
    }
    const changes = document.querySelector("#degradation-changes tbody");
    changes.replaceChildren();
    for (const c of data.changes) {
      const tr = document.createElement("tr");
      TF.cell(tr, TF.time(c.changed_time)); TF.cell(tr, c.mode); TF.cell(tr, c.rule);
      TF.cell(tr, c.active ? "set" : "cleared", c.active ? "sell" : "buy");
      TF.cell(tr, value(c.value)); TF.cell(tr, value(c.threshold)); TF.cell(tr, c.detail);
      changes.appendChild(tr);
    }
    const on = data.state.filter((r) => r.active).length;
    document.getElementById("degradation-note").textContent = data.state.length
      ? `${on} rule(s) in force` : "no executor has recorded a degradation yet";
    UI.degradation = data;
    UI.ready.degradation = data.state.length;
  }

  async function load() {
    const q = new URLSearchParams();
    if (params.get("mode")) q.set("mode", params.get("mode"));
    try { render(await TF.get(`/api/execution/degradation?${q}`)); } catch (err) { TF.fail(err); }
  }
  load();
})();
