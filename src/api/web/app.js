// wanda-ipfs page: reads the JSON API, shows stills by CID through /ipfs/, follows /api/events.
// Every name from the API is free text: it only ever goes into textContent or attributes.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  const token = localStorage.getItem("wanda-token");
  if (token) headers["Authorization"] = "Bearer " + token;
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  let body;
  try { body = await r.json(); } catch (e) { body = { success: false, error: r.status + " " + r.statusText }; }
  if (r.status === 401) $("token-label").hidden = false;
  if (!body.success) throw new Error(body.error || "request failed");
  return body.data;
}

const bytes = (n) => {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
};
const short = (s) => (s && s.length > 16 ? s.slice(0, 6) + "…" + s.slice(-6) : s || "");

async function refreshNode() {
  try {
    const n = await api("/api/node");
    const facts = $("node-facts");
    facts.replaceChildren();
    const fact = (k, v) => facts.append(el("dt", { text: k }), el("dd", { text: v }));
    fact("peer id", n.peer_id);
    fact("version", n.agent);
    fact("repo", bytes(n.repo.bytes) + " in " + n.repo.blocks + " blocks, " + bytes(n.repo.free_bytes) + " free");
    fact("pipeline", n.pipeline.outbox + " to send, " + n.pipeline.pinning + " pinning, " + n.pipeline.to_free + " to free");
    fact("cluster", n.cluster ? n.cluster.api + " (replicas " + n.cluster.replication_min + "–" + n.cluster.replication_max + ")" : "none");
    $("peer-count").textContent = n.peers.length;
    const tb = $("peers").tBodies[0];
    tb.replaceChildren(...n.peers.map((p) => el("tr", {}, el("td", { text: short(p.peer), title: p.peer }), el("td", { text: p.agent || "" }), el("td", { text: p.addr }), el("td", { text: p.latency || "" }))));
    $("mdns").textContent = n.mdns.length ? n.mdns.map((m) => short(m.peer) + (m.connected ? " (connected)" : "")).join(", ") : "none";
    showCapture(n.capture);
  } catch (e) {
    $("node-facts").replaceChildren(el("dd", { text: "node status unavailable: " + e.message }));
  }
}

function showCapture(c) {
  $("start").disabled = c.running || !c.available;
  $("stop").disabled = !c.running;
  let s = "source " + c.source + ": ";
  if (!c.available) s += "no captures folder configured";
  else if (c.running) s += "capturing into “" + c.session + "”";
  else s += "idle" + (c.last_captured != null ? ", last session took " + c.last_captured + " stills" : "");
  if (c.last_error) s += " — last error: " + c.last_error;
  $("capture-status").textContent = s;
}

const openSessions = new Set();

function imageFigure(img) {
  const state = img.pinned ? "pinned" : img.state || "imported";
  const src = "/ipfs/" + encodeURIComponent(img.cid);
  const pic = el("img", { src, alt: "still " + img.number + " " + img.cid, loading: "lazy", "data-cid": img.cid });
  // Marks what rendered, for people (a broken still stands out) and for the browser test.
  pic.addEventListener("load", () => { pic.dataset.loaded = String(pic.naturalWidth); });
  pic.addEventListener("error", () => { pic.dataset.failed = "1"; });
  return el("figure", { "data-number": String(img.number) },
    el("a", { href: src, target: "_blank", rel: "noopener" }, pic),
    el("figcaption", {},
      el("span", { text: "#" + String(img.number).padStart(4, "0") }),
      el("span", { class: "state-" + state, text: state + (img.replicas ? " ×" + img.replicas : "") }),
      el("span", { class: "muted", text: img.local ? "local" : "freed" })));
}

async function renderSession(box, name) {
  const grid = box.querySelector(".grid");
  try {
    const doc = await api("/api/session/" + encodeURIComponent(name) + "/ipfs");
    const imgs = (doc.images || []).filter((i) => i.cid);
    grid.replaceChildren(...imgs.map(imageFigure));
  } catch (e) {
    grid.replaceChildren(el("p", { class: "muted", text: e.message }));
  }
}

let firstList = true;
async function refreshSessions() {
  let list;
  try { list = await api("/api/sessions"); } catch (e) { return; }
  // The newest session starts open: tonight's stills are what people come to see.
  if (firstList && list.length) openSessions.add(list[0].name);
  firstList = false;
  $("no-sessions").hidden = list.length > 0;
  const host = $("session-list");
  const boxes = list.map((s) => {
    const states = Object.entries(s.states).map(([k, v]) => v + " " + k).join(", ");
    const d = el("details", { class: "session", "data-session": s.name });
    if (openSessions.has(s.name)) d.open = true;
    const sum = el("summary", {}, el("strong", { text: s.name }), " ",
      el("span", { class: "muted", text: s.images + " stills (" + (states || "none") + "), " + s.local + " local" + (s.capturing ? ", capturing" : "") + (s.cid ? ", directory " + short(s.cid) + (s.pinned ? " pinned" : "") : "") }));
    d.append(sum, el("div", { class: "grid" }));
    d.addEventListener("toggle", () => {
      if (d.open) { openSessions.add(s.name); renderSession(d, s.name); } else openSessions.delete(s.name);
    });
    if (d.open) renderSession(d, s.name);
    return d;
  });
  host.replaceChildren(...boxes);
}

// Event bursts (a still every 0.5 s) are folded into one refresh.
let pending = null;
function soon() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; refreshSessions(); refreshNode(); }, 700);
}

function listen() {
  const es = new EventSource("/api/events");
  es.onopen = () => { $("live").textContent = "live"; $("live").className = "pill on"; };
  es.onerror = () => { $("live").textContent = "reconnecting…"; $("live").className = "pill off"; };
  for (const kind of ["imported", "pinning", "replicas", "pinned", "freed", "failed", "capture_started", "capture_stopped", "lagged"]) {
    es.addEventListener(kind, soon);
  }
}

$("capture-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const t = $("token").value.trim();
  if (t) localStorage.setItem("wanda-token", t);
  try {
    const c = await api("/api/session/start", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ session: $("session-name").value, count: Number($("count").value), interval_secs: Number($("interval").value) }),
    });
    showCapture(c);
  } catch (e) { $("capture-status").textContent = e.message; }
});
$("stop").addEventListener("click", async () => {
  try { showCapture(await api("/api/session/stop", { method: "POST" })); } catch (e) { $("capture-status").textContent = e.message; }
});

refreshNode();
refreshSessions();
listen();
setInterval(refreshNode, 10000);
