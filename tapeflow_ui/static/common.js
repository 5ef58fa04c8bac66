// Shared by every page: JSON fetches (the session cookie goes along; actions add the CSRF header),
// number formats, canvas set-up, and `window.tapeflowUI`, which holds what each view drew (the
// browser tests read it next to the pixels and the DOM).
"use strict";
window.tapeflowUI = { ready: {}, errors: [] };

const TF = {
  csrf: document.querySelector('meta[name="csrf-token"]').content,

  async get(url) {
    const resp = await fetch(url, { credentials: "same-origin" });
    if (!resp.ok) throw new Error(`${url}: HTTP ${resp.status} ${await resp.text()}`);
    return resp.json();
  },

  async post(url, body) {
    const resp = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": TF.csrf },
      body: JSON.stringify(body),
    });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(data.error || `HTTP ${resp.status}`);
    return data;
  },

  num(v, digits = 2) {
    if (v === null || v === undefined) return "–";
    return Number(v).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  },
  compact(v) {
    if (v === null || v === undefined) return "–";
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(2) + "B";
    if (a >= 1e6) return (v / 1e6).toFixed(2) + "M";
    if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
    return Number(v).toFixed(a >= 10 ? 1 : 3);
  },
  pct(v, digits = 2) { return v === null || v === undefined ? "–" : (v * 100).toFixed(digits) + "%"; },
  time(s) { return new Date(s * 1000).toISOString().replace("T", " ").slice(0, 19); },
  hhmm(s) { return new Date(s * 1000).toISOString().slice(11, 16); },

  // a canvas sized to its CSS box at the device's pixel ratio; returns [ctx, width, height] in CSS px
  canvas(el) {
    const ratio = window.devicePixelRatio || 1;
    const w = el.clientWidth, h = el.height / (el.dataset.scaled ? ratio : 1);
    el.dataset.scaled = "1";
    el.width = Math.round(w * ratio); el.height = Math.round(h * ratio);
    el.style.height = h + "px";
    const ctx = el.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.fillStyle = "#0b0f14"; ctx.fillRect(0, 0, w, h);
    return [ctx, w, h];
  },

  cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  },

  // A page's live stream (tapeflow_ui.live): "live" says from where (the topics, or the database every
  // every_s), "changed" asks for a re-read. reread() runs one at a time, once more if asked meanwhile;
  // live.refreshes counts them; say() is called after each and on "live". Returns {source, refresh}.
  follow(url, live, reread, say) {
    const source = new EventSource(url);
    let busy = false, again = false;
    const refresh = async () => {
      if (busy) { again = true; return; }
      busy = true;
      try {
        do {
          again = false;
          await reread();
          live.refreshes += 1;
        } while (again);
        say();
      } catch (err) { TF.fail(err); } finally { busy = false; }
    };
    source.addEventListener("live", (ev) => {
      const d = JSON.parse(ev.data);
      live.source = d.source; live.every_s = d.every_s;
      say();
    });
    source.addEventListener("changed", () => { refresh(); });
    return { source, refresh };
  },
  liveText(live) {
    return live.source === "topics" ? "live" : live.source === "database"
      ? `polling the database every ${live.every_s} s` : "connecting";
  },

  status(text) { document.getElementById("status").textContent = text; },
  fail(err) {
    window.tapeflowUI.errors.push(String(err));
    TF.status("error: " + err.message);
    console.error(err);
  },
};
