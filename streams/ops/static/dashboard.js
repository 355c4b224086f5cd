// crowdpulse operations room: tiles, alerts, schematic map and a detail view, kept live over
// server-sent events (/api/stream). Plain JavaScript, no libraries, no network beyond this
// server. Suppressed estimates (fewer than k devices) carry no numbers and none are derived.
"use strict";

const NS = "http://www.w3.org/2000/svg";
const HOUR_MS = 3600 * 1000;
const SERIES_MAX = 180;
const fmt = new Intl.NumberFormat("en-US");

const state = {
  map: null, // /api/map: cells, areas (with alert rules), windows
  window: null, // selected window_s
  latest: new Map(), // "area|window" -> estimate
  series: new Map(), // "area|window" -> [estimate] sorted by as_of
  alerts: new Map(), // id -> alert record
  token: null,
  lastUpdate: null, // wall ms of the last estimate received
  dirty: new Set(), // areas to re-render
  alertsDirty: false,
  detail: null, // area id shown in the detail view
  source: null,
  usual: new Map(), // area -> the usual people for this hour of the week (history window only)
};

// --- small helpers -------------------------------------------------------------------------
const $ = (id) => document.getElementById(id);
const key = (area, w) => `${area}|${w}`;
const n = (x) => fmt.format(x);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function utc(ms, withDate = false) {
  const d = new Date(ms);
  const hm = d.toISOString().slice(11, 16);
  return withDate ? `${d.toISOString().slice(0, 10)} ${hm}` : hm;
}

function windowLabel(w) {
  return w % 3600 === 0 ? `${w / 3600} h` : `${w / 60} min`;
}

function areaSpec(id) {
  return state.map.areas.find((a) => a.id === id);
}

// --- access token (when the API asks for one) -------------------------------------------------
function loadToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("crowdpulse-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
  state.token = sessionStorage.getItem("crowdpulse-token");
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401 || response.status === 403) {
    const body = await response.json().catch(() => ({}));
    showAuth(body.error || `HTTP ${response.status}`);
    throw new Error(body.error || `${path}: HTTP ${response.status}`);
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.error || `${path}: HTTP ${response.status}`);
  }
  return response.json();
}

function showAuth(message) {
  $("auth-message").textContent = `Access refused (${message}). Enter an access token:`;
  $("auth").hidden = false;
}

// --- data in ---------------------------------------------------------------------------------
function acceptEstimate(e) {
  const k = key(e.area, e.window_s);
  const current = state.latest.get(k);
  if (!current || e.as_of >= current.as_of) state.latest.set(k, e);
  const list = state.series.get(k) || [];
  const i = list.findIndex((p) => p.as_of === e.as_of);
  if (i >= 0) list[i] = e;
  else {
    list.push(e);
    list.sort((a, b) => a.as_of - b.as_of);
    if (list.length > SERIES_MAX) list.splice(0, list.length - SERIES_MAX);
  }
  state.series.set(k, list);
  state.lastUpdate = Date.now();
  state.dirty.add(e.area);
  schedule();
}

function acceptAlert(a) {
  state.alerts.set(a.id, a);
  state.alertsDirty = true;
  state.dirty.add(a.area);
  schedule();
}

let scheduled = false;
function schedule() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    render();
  });
}

// --- rendering -------------------------------------------------------------------------------
function render() {
  for (const area of state.dirty) renderTile(area);
  if (state.dirty.size) renderMap();
  if (state.alertsDirty) renderAlerts();
  else if (state.dirty.size) refreshAlertsNow();
  if (state.detail && (state.dirty.has(state.detail) || state.alertsDirty)) renderDetail();
  state.dirty.clear();
  state.alertsDirty = false;
  renderHeader();
}

function renderHeader() {
  let newest = null;
  for (const e of state.latest.values()) if (e.window_s === state.window && (newest === null || e.as_of > newest)) newest = e.as_of;
  $("stream-time").textContent = newest === null ? "—" : utc(newest, true);
  $("stream-time").dataset.asOf = newest === null ? "" : String(newest);
}

function tickAge() {
  const age = $("age");
  if (state.lastUpdate === null) return;
  const s = Math.round((Date.now() - state.lastUpdate) / 1000);
  age.textContent = s < 2 ? "updated just now" : `updated ${s} s ago`;
  age.classList.toggle("stale", s > 30);
}

// Why a tile's numbers are withheld (the estimate's suppressed_reason; docs/privacy.md).
const WITHHELD = {
  below_min_count: "fewer phones than the privacy threshold",
  differencing: "too close to a containing area's count",
  privacy_budget: "the day's privacy budget is spent",
};

function activeAlertsOf(area) {
  return [...state.alerts.values()].filter((a) => a.area === area && a.state !== "resolved");
}

function buildTile(spec) {
  const tile = el("article", { class: "tile nodata", "data-area": spec.id, tabindex: "0" });
  tile.append(
    el("header", {}, el("h3", { text: spec.name, title: spec.name }), el("span", { class: "kind", text: spec.kind }), el("span", { class: "badge", "data-field": "badge", hidden: "" })),
    el("div", { class: "people", "data-field": "people", text: "waiting" }),
    el("div", { class: "range", "data-field": "range" }),
    el("div", { class: "phones", "data-field": "phones" }),
    el("div", { class: "usual", "data-field": "usual" }),
    el("div", { class: "capacity" }, el("div", { class: "capbar" }, el("div", { class: "fill" })), el("span", { class: "pct", "data-field": "pct", text: "—" })),
    el("div", { class: "levelword", "data-field": "level" }),
  );
  const spark = svg("svg", { class: "spark", viewBox: "0 0 200 40", preserveAspectRatio: "none", "aria-hidden": "true" });
  tile.append(spark);
  tile.append(el("footer", {}, el("span", { text: `capacity ${n(spec.capacity)}` }), el("span", { "data-field": "window" })));
  // Threshold marks on the capacity bar (warn and critical triggers of the capacity rule).
  const bar = tile.querySelector(".capbar");
  for (const c of spec.alerts.checks.filter((c) => c.rule === "capacity")) {
    const mark = el("div", { class: "mark", title: `${c.level} at ${Math.round(c.trigger * 100)}%` });
    mark.style.left = `${Math.min(100, c.trigger * 100)}%`;
    bar.append(mark);
  }
  tile.addEventListener("click", () => openDetail(spec.id));
  tile.addEventListener("keydown", (ev) => { if (ev.key === "Enter") openDetail(spec.id); });
  return tile;
}

function renderTile(area) {
  const tile = document.querySelector(`.tile[data-area="${CSS.escape(area)}"]`);
  if (!tile) return;
  const spec = areaSpec(area);
  const e = state.latest.get(key(area, state.window));
  const f = (name) => tile.querySelector(`[data-field="${name}"]`);
  tile.className = "tile";
  tile.dataset.window = String(state.window);
  f("window").textContent = `${windowLabel(state.window)} window`;
  const alerts = activeAlertsOf(area);
  const badge = f("badge");
  badge.hidden = alerts.length === 0;
  // The badge says which level is alerting: a tile below its line can still have an alert that
  // has not cleared (an alert clears only below its clear level, held: hysteresis).
  const worst = alerts.some((a) => a.level === "critical") ? "critical" : "warn";
  badge.className = `badge level-${worst}`;
  badge.textContent = alerts.length === 1 ? `${worst} alert` : `${worst} · ${alerts.length} alerts`;
  badge.title = alerts.map((a) => `${a.level} ${a.rule.replace(/_/g, " ")} alert since ${utc(a.started_at)} UTC; ${clearText(a)}`).join("\n");
  f("phones").textContent = e && !e.suppressed ? `${n(e.devices)} phones seen in ${windowLabel(state.window)}` : "";
  if (!e) {
    tile.classList.add("nodata");
    // Nothing published yet for this area and window (a start, or a new area): say so.
    f("people").textContent = "waiting";
    f("range").textContent = "waiting for the first estimate";
    f("pct").textContent = "—";
    tile.querySelector(".fill").style.width = "0";
    tile.dataset.asOf = "";
  } else if (e.suppressed) {
    tile.classList.add("suppressed");
    f("people").textContent = "suppressed";
    // Withheld by the privacy rules: a count under k, or too close to a containing one.
    f("range").textContent = "withheld for privacy";
    // While the windows fill after a start they are often too alike to publish: it passes.
    f("phones").textContent = (WITHHELD[e.suppressed_reason] || "") + (e.warming_up ? " · windows still filling" : "");
    f("pct").textContent = "—";
    tile.querySelector(".fill").style.width = "0";
    tile.dataset.asOf = String(e.as_of);
  } else {
    tile.classList.add(`level-${e.level}`);
    const pct = e.people / e.capacity;
    f("people").textContent = n(e.people);
    // Warming up: the stream behind this window is shorter than the estimate needs (a cold
    // start): the number stands, but it is still settling and no trend is drawn from it.
    f("range").textContent = `${n(e.people_low)} – ${n(e.people_high)} (90%)` + (e.warming_up ? " · warming up" : "");
    f("pct").textContent = `${Math.round(pct * 100)}%`;
    tile.querySelector(".fill").style.width = `${Math.min(100, pct * 100)}%`;
    tile.dataset.asOf = String(e.as_of);
  }
  tile.dataset.level = e && !e.suppressed ? e.level : "none";
  // The level in words too: colour alone fails colour-blind readers and washed-out projectors.
  f("level").textContent = e && !e.suppressed && e.level !== "ok" ? e.level : "";
  // Uncertain: the range spans ok to critical; the reason says so on hover.
  f("level").title = e && !e.suppressed && e.level_reason ? e.level_reason : "";
  f("usual").textContent = e && !e.suppressed ? usualText(e, state.usual.get(area)) : "";
  drawSpark(tile.querySelector(".spark"), spec, state.series.get(key(area, state.window)) || []);
}

// "Busier than usual": the estimate beside the same hour of the week on earlier weeks (at
// least three, from the footfall history), in people with that hour's usual spread.
function usualText(e, u) {
  if (!u || e.window_s !== state.map.history_window_s) return "";
  const change = Math.round((100 * (e.people - u.people)) / Math.max(1, u.people));
  const word = e.people > u.high ? `busier than usual (${change > 0 ? "+" : ""}${change}%)`
    : e.people < u.low ? `quieter than usual (${change}%)` : "as usual";
  return `${word} · usual ${n(Math.round(u.people))} (${n(Math.round(u.low))}–${n(Math.round(u.high))}, ${u.weeks} weeks)`;
}

function acceptUsual(list) {
  for (const e of list) {
    if (!("usual" in e)) continue;
    if (e.usual) state.usual.set(e.area, e.usual);
    else state.usual.delete(e.area);
    state.dirty.add(e.area);
  }
  schedule();
}

function drawSpark(node, spec, series) {
  node.replaceChildren();
  if (!series.length) return;
  const end = series[series.length - 1].as_of;
  const pts = series.filter((p) => p.as_of > end - HOUR_MS);
  const values = pts.filter((p) => !p.suppressed);
  if (!values.length) return;
  const top = Math.max(...values.map((p) => p.people_high)) * 1.15 || 1;
  const x = (t) => ((t - (end - HOUR_MS)) / HOUR_MS) * 200;
  const y = (v) => 40 - (v / top) * 38;
  // Contiguous runs of unsuppressed points: a suppressed point breaks the line (no number).
  const runs = [];
  let run = [];
  for (const p of pts) {
    if (p.suppressed) { if (run.length) runs.push(run); run = []; } else run.push(p);
  }
  if (run.length) runs.push(run);
  for (const r of runs) {
    const upper = r.map((p) => `${x(p.as_of).toFixed(1)},${y(p.people_high).toFixed(1)}`);
    const lower = r.slice().reverse().map((p) => `${x(p.as_of).toFixed(1)},${y(p.people_low).toFixed(1)}`);
    node.append(svg("polygon", { class: "band", points: upper.concat(lower).join(" ") }));
    node.append(svg("polyline", { class: "line", points: r.map((p) => `${x(p.as_of).toFixed(1)},${y(p.people).toFixed(1)}`).join(" ") }));
  }
  const warn = spec.alerts.checks.find((c) => c.rule === "capacity" && c.level === "warn");
  if (warn && warn.trigger_people < top) {
    node.append(svg("line", { class: "warnline", x1: 0, x2: 200, y1: y(warn.trigger_people), y2: y(warn.trigger_people) }));
  }
}

function alertItem(a, withAck = true) {
  const li = el("li", { class: `alert level-${a.level} state-${a.state}`, "data-alert-id": a.id });
  const rule = a.rule.replace(/_/g, " ");
  li.append(el("div", { class: "what" }, `${a.name} · ${rule}`, el("span", { class: "lvl", text: a.level })));
  if (a.state === "firing" && withAck) {
    const button = el("button", { class: "ack", type: "button", text: "Acknowledge", "data-ack": a.id });
    button.addEventListener("click", () => acknowledge(a.id, button));
    li.append(button);
  } else if (a.state === "acknowledged") {
    li.append(el("span", { class: "acked", text: `acknowledged by ${a.acknowledged_by}` }));
  } else if (a.state === "resolved") {
    li.append(el("span", { class: "acked", text: `resolved ${utc(a.resolved_at)}` }));
  }
  li.append(el("div", { class: "msg", text: `${a.message} (when it fired)` }));
  if (a.state !== "resolved") li.append(el("div", { class: "now", "data-field": "now", text: nowText(a) }));
  li.append(el("div", { class: "when", text: `since ${utc(a.started_at)} · fired ${utc(a.fired_at)} UTC (stream time) · ${clearText(a)}` }));
  return li;
}

// What the alert's area reads now, on the window its rule watches: the alert's own message
// keeps the numbers of the moment it fired.
function nowText(a) {
  const e = state.latest.get(key(a.area, a.window_s));
  if (!e) return "now: no estimate yet";
  if (e.suppressed) return "now: withheld for privacy";
  const level = e.level === "ok" ? "below its warn level" : e.level;
  return `now: ${n(e.people)} people, ${Math.round((100 * e.people) / e.capacity)}% of capacity (${level})`;
}

// When an alert clears, in its rule's own terms (the clear level must then hold for the rules'
// clear hold: hysteresis, docs/operations.md).
function clearText(a) {
  if (a.rule === "time_to_capacity") return `clears when capacity is over ${a.clear} min away`;
  const level = a.unit === "share_of_capacity" ? `${Math.round(a.clear * 100)}% of capacity` : `${a.clear} ${(a.unit || "").replace(/_/g, " ")}`;
  return `clears below ${level}`;
}

function sortAlerts(list) {
  const sev = { critical: 0, warn: 1 };
  const st = { firing: 0, acknowledged: 1, resolved: 2 };
  return list.sort((a, b) => (st[a.state] - st[b.state]) || (sev[a.level] - sev[b.level]) || (b.fired_at - a.fired_at));
}

function renderAlerts() {
  const active = sortAlerts([...state.alerts.values()].filter((a) => a.state !== "resolved"));
  $("alerts").replaceChildren(...active.map((a) => alertItem(a)));
  $("no-alerts").hidden = active.length > 0;
  const count = $("alert-count");
  count.textContent = String(active.length);
  count.classList.toggle("hot", active.some((a) => a.state === "firing"));
}

// New estimates: only each listed alert's "now" line changes (the list, and its buttons, stay).
function refreshAlertsNow() {
  for (const li of document.querySelectorAll("li.alert[data-alert-id]")) {
    const a = state.alerts.get(li.dataset.alertId);
    const now = li.querySelector('[data-field="now"]');
    if (a && now && state.dirty.has(a.area)) now.textContent = nowText(a);
  }
}

async function acknowledge(id, button) {
  button.disabled = true;
  const by = ($("acker").value || "operations room").trim().slice(0, 64);
  try {
    const record = await api(`/api/alerts/${encodeURIComponent(id)}/ack`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ by }),
    });
    acceptAlert(record);
  } catch (err) {
    button.disabled = false;
    button.textContent = "Retry ack";
    button.title = String(err.message || err);
  }
}

// --- schematic map ------------------------------------------------------------------------------
let mapShapes = null; // built once: cell circles and area outlines

function loadColour(share) {
  if (share === null || share === undefined) return "#3a4250";
  const t = Math.max(0, Math.min(1, share / 0.95));
  return `hsl(${Math.round(120 * (1 - t))} ${Math.round(60 + 15 * t)}% ${Math.round(40 + 8 * t)}%)`;
}

function hull(points) {
  // Andrew's monotone chain: the convex outline of an area's cells.
  const p = points.slice().sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const cross = (o, a, b) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
  const lower = [];
  for (const q of p) { while (lower.length >= 2 && cross(lower[lower.length - 2], lower[lower.length - 1], q) <= 0) lower.pop(); lower.push(q); }
  const upper = [];
  for (const q of p.reverse()) { while (upper.length >= 2 && cross(upper[upper.length - 2], upper[upper.length - 1], q) <= 0) upper.pop(); upper.push(q); }
  return lower.slice(0, -1).concat(upper.slice(0, -1));
}

function buildMap() {
  const node = $("map");
  const cells = state.map.cells;
  const minX = Math.min(...cells.map((c) => c.x_m - c.radius_m));
  const maxX = Math.max(...cells.map((c) => c.x_m + c.radius_m));
  const minY = Math.min(...cells.map((c) => c.y_m - c.radius_m));
  const maxY = Math.max(...cells.map((c) => c.y_m + c.radius_m));
  const pad = 150;
  node.setAttribute("viewBox", `${minX - pad} ${-(maxY + pad)} ${maxX - minX + 2 * pad} ${maxY - minY + 2 * pad}`);
  // North up: SVG y grows downwards, so y is drawn negated.
  const areasBySize = state.map.areas.slice().sort((a, b) => a.cells.length - b.cells.length);
  const owner = new Map(); // cell -> smallest area containing it (its colour on the map)
  for (const a of areasBySize) for (const c of a.cells) if (!owner.has(c)) owner.set(c, a.id);
  const circles = new Map();
  for (const c of cells) {
    const circle = svg("circle", { class: "cell", cx: c.x_m, cy: -c.y_m, r: c.radius_m * 0.93, fill: loadColour(null) });
    const title = svg("title");
    circle.append(title);
    circle.addEventListener("click", () => owner.has(c.id) && openDetail(owner.get(c.id)));
    node.append(circle);
    circles.set(c.id, { circle, title });
  }
  const byId = new Map(cells.map((c) => [c.id, c]));
  const hulls = new Map();
  const total = cells.length;
  for (const a of areasBySize.slice().reverse()) {
    if (a.cells.length === total) continue; // the whole map needs no outline
    const pts = [];
    for (const id of a.cells) {
      const c = byId.get(id);
      for (let k = 0; k < 12; k++) {
        const ang = (k / 12) * 2 * Math.PI;
        pts.push([c.x_m + c.radius_m * Math.cos(ang), -(c.y_m + c.radius_m * Math.sin(ang))]);
      }
    }
    const outline = svg("polygon", { class: "hull", points: hull(pts).map((q) => q.map((v) => v.toFixed(0)).join(",")).join(" ") });
    node.append(outline);
    hulls.set(a.id, outline);
  }
  for (const a of areasBySize) {
    if (a.cells.length > 4) continue; // label the venues and streets; districts are outlines
    const cs = a.cells.map((id) => byId.get(id));
    const cx = cs.reduce((s, c) => s + c.x_m, 0) / cs.length;
    const cy = cs.reduce((s, c) => s + c.y_m, 0) / cs.length;
    const label = svg("text", { x: cx.toFixed(0), y: (-cy + 50).toFixed(0) });
    label.textContent = a.name;
    node.append(label);
  }
  mapShapes = { circles, hulls, owner };
}

function renderMap() {
  if (!mapShapes) return;
  for (const [cellId, { circle, title }] of mapShapes.circles) {
    const area = mapShapes.owner.get(cellId);
    if (!area) { title.textContent = `cell ${cellId}: in no area`; continue; }
    const e = state.latest.get(key(area, state.window));
    const share = e && !e.suppressed ? e.people / e.capacity : null;
    circle.setAttribute("fill", loadColour(share));
    const spec = areaSpec(area);
    title.textContent = `cell ${cellId} · ${spec.name}: ` + (!e ? "no data" : e.suppressed ? "suppressed" : `${Math.round(share * 100)}% of capacity`);
  }
  for (const [area, outline] of mapShapes.hulls) {
    const e = state.latest.get(key(area, state.window));
    outline.setAttribute("class", `hull level-${e && !e.suppressed ? e.level : "none"}`);
  }
}

// --- detail view --------------------------------------------------------------------------------
function openDetail(area) {
  state.detail = area;
  renderDetail();
  loadHistory(area);
  const dialog = $("detail");
  if (!dialog.open) dialog.showModal();
}

function renderDetail() {
  const area = state.detail;
  const spec = areaSpec(area);
  $("detail-title").textContent = spec.name;
  $("detail-kind").textContent = spec.kind;
  const size = spec.size_m2 ? ` · ${n(spec.size_m2)} m²` : "";
  $("detail-meta").textContent = `capacity ${n(spec.capacity)}${size} · ${spec.cells.length} cells`;
  const rows = [el("tr", {}, ...["window", "people", "range (90%)", "% capacity", "level", "as of"].map((h) => el("th", { text: h })))];
  for (const w of state.map.windows_s) {
    const e = state.latest.get(key(area, w));
    const cells = !e ? [windowLabel(w), "no data", "", "", "", ""]
      : e.suppressed ? [windowLabel(w), "suppressed", "", "", "", utc(e.as_of)]
      : [windowLabel(w), n(e.people), `${n(e.people_low)} – ${n(e.people_high)}`, `${Math.round((100 * e.people) / e.capacity)}%`, e.level, utc(e.as_of)];
    rows.push(el("tr", {}, ...cells.map((c) => el("td", { text: c }))));
  }
  $("detail-windows").replaceChildren(...rows);
  const series = state.series.get(key(area, state.window)) || [];
  $("chart-caption").textContent = `${windowLabel(state.window)} window, last ${Math.round((series.length ? series[series.length - 1].as_of - series[0].as_of : 0) / 60000)} min (range = 90% interval)`;
  drawChart($("chart"), spec, series, $("fit-data").checked);
  const r = spec.alerts;
  $("detail-rules").textContent = `Alert rules on the ${BOUND_NAMES[r.bound]} of the ${windowLabel(r.window_s)} window; ` +
    `an alert fires after ${r.fire_hold_s} s over its level and clears after ${r.clear_hold_s} s below its clear level. ` +
    (r.checks.map(checkText).join("; ") || "No rules.");
  const mine = sortAlerts([...state.alerts.values()].filter((a) => a.area === area));
  $("detail-alerts").replaceChildren(...(mine.length ? mine.slice(0, 20).map((a) => alertItem(a)) : [el("li", { class: "empty", text: "No alerts." })]));
}

function niceStep(range, count) {
  // 1, 2, 2.5 or 5 times a power of ten: axis labels a person can read at a glance.
  const raw = range / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

function timeStep(spanMs) {
  // Whole minutes (or hours), so an "HH:MM" label sits exactly where that time is.
  for (const m of [1, 2, 5, 10, 15, 30, 60, 120, 180, 360]) if (spanMs / (m * 60000) <= 8) return m * 60000;
  return 720 * 60000;
}

const BOUND_NAMES = { people_high: "upper bound of the range", people: "central estimate", people_low: "lower bound of the range" };

function checkText(c) {
  const v = (x) => c.unit === "share_of_capacity" ? `${Math.round(x * 100)}%`
    : c.unit === "people_per_m2" ? `${x} people/m²`
    : c.unit === "people_per_min" ? `${n(Math.round(x))} people/min`
    : `${x} min`;
  const rule = c.rule.replace(/_/g, " ");
  return c.rule === "time_to_capacity"
    ? `${rule} ${c.level}: within ${v(c.trigger)} (clears beyond ${v(c.clear)})`
    : `${rule} ${c.level}: ${v(c.trigger)} (clears below ${v(c.clear)})`;
}

// Horizontal grid lines from 0 to `top` every `step`, labelled on the left of x = `left`.
function drawValueGrid(node, top, step, y, left, right) {
  for (let v = 0; v <= top + step / 2; v += step) {
    node.append(svg("line", { class: "grid", x1: left, x2: right, y1: y(v), y2: y(v) }));
    const lab = svg("text", { class: "axis", x: left - 6, y: y(v) + 4, "text-anchor": "end" });
    lab.textContent = n(Math.round(v));
    node.append(lab);
  }
}

function drawChart(node, spec, series, fitData) {
  node.replaceChildren();
  const W = 900, H = 320, L = 64, R = 120, T = 12, B = 28;
  if (!series.length) {
    const t = svg("text", { x: W / 2, y: H / 2, class: "axis", "text-anchor": "middle" });
    t.textContent = "no data yet";
    node.append(t);
    return;
  }
  const values = series.filter((p) => !p.suppressed);
  const thresholds = [];
  for (const c of spec.alerts.checks) {
    if (c.trigger_people !== null && c.trigger_people !== undefined) thresholds.push({ v: c.trigger_people, cls: c.level, label: c.rule === "capacity" ? c.level : `${c.rule} ${c.level}` });
  }
  thresholds.push({ v: spec.capacity, cls: "capacity", label: "capacity" });
  const dataTop = values.length ? Math.max(...values.map((p) => p.people_high)) : 0;
  const wanted = fitData ? Math.max(dataTop * 1.15, 1) : Math.max(dataTop * 1.1, spec.capacity * 1.05);
  const step = niceStep(wanted, 4);
  const top = Math.ceil(wanted / step) * step;
  const bucket = state.map.bucket_s * 1000;
  // A point at as_of covers the bucket before it: the axis starts one bucket before the first.
  const t0 = series[0].as_of - bucket, t1 = series[series.length - 1].as_of;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => H - B - (v / top) * (H - T - B);
  drawValueGrid(node, top, step, y, L, W - R);
  const tstep = timeStep(t1 - t0);
  for (let t = Math.ceil(t0 / tstep) * tstep; t <= t1; t += tstep) {
    node.append(svg("line", { class: "grid", x1: x(t), x2: x(t), y1: T, y2: H - B }));
    const lab = svg("text", { class: "axis", x: x(t), y: H - 8, "text-anchor": "middle" });
    lab.textContent = utc(t);
    node.append(lab);
  }
  // Suppressed stretches are shaded: there is no number to draw there.
  for (const p of series.filter((p) => p.suppressed)) {
    node.append(svg("rect", { class: "gap", x: x(p.as_of - bucket), y: T, width: Math.max(2, x(p.as_of) - x(p.as_of - bucket)), height: H - T - B }));
  }
  let run = [];
  const flush = () => {
    if (!run.length) return;
    const upper = run.map((p) => `${x(p.as_of).toFixed(1)},${y(p.people_high).toFixed(1)}`);
    const lower = run.slice().reverse().map((p) => `${x(p.as_of).toFixed(1)},${y(p.people_low).toFixed(1)}`);
    node.append(svg("polygon", { class: "band", points: upper.concat(lower).join(" ") }));
    node.append(svg("polyline", { class: "line", points: run.map((p) => `${x(p.as_of).toFixed(1)},${y(p.people).toFixed(1)}`).join(" ") }));
    run = [];
  };
  for (const p of series) { if (p.suppressed) flush(); else run.push(p); }
  flush();
  // Threshold lines, labelled on the right; labels closer than a line of text are pushed apart.
  let lastY = Infinity;
  for (const th of thresholds.filter((t) => t.v <= top).sort((a, b) => a.v - b.v)) {
    node.append(svg("line", { class: `thr ${th.cls}`, x1: L, x2: W - R, y1: y(th.v), y2: y(th.v) }));
    const ly = Math.min(y(th.v) + 4, lastY - 14);
    lastY = ly;
    const lab = svg("text", { class: `thr-label ${th.cls}`, x: W - R + 6, y: ly });
    lab.textContent = `${th.label} ${n(th.v)}`;
    node.append(lab);
  }
}

// --- footfall history (detail view) ------------------------------------------------------------
async function loadHistory(area) {
  const note = $("history-note");
  for (const id of ["history-day", "history-week", "history-days"]) $(id).replaceChildren();
  if (!state.map.history) {
    note.textContent = "No history is kept by this deployment (CROWDPULSE_HISTORY_DB is not set).";
    return;
  }
  // Up to the newest window end the pipeline has reached (stream time), not the wall clock.
  const newest = Math.max(0, ...[...state.latest.values()].map((e) => e.as_of)) || Date.now();
  const to = Math.ceil(newest / HOUR_MS) * HOUR_MS;
  const iso = (ms) => new Date(ms).toISOString().slice(0, 19) + "Z";
  const path = (step, days) => `/api/areas/${encodeURIComponent(area)}/history?step=${step}&from=${iso(to - days * 24 * HOUR_MS)}&to=${iso(to)}`;
  note.textContent = "loading…";
  try {
    const [hours, days] = await Promise.all([api(path("hour", 7)), api(path("day", 8))]);
    if (state.detail !== area) return;
    note.textContent = hours.rows.length ? "" : "No history for this area yet: hours are stored once the stream has passed them.";
    drawHistory($("history-day"), hours.rows, to - 24 * HOUR_MS, to);
    drawHistory($("history-week"), hours.rows, to - 7 * 24 * HOUR_MS, to);
    renderHistoryDays(days.rows);
  } catch (err) {
    note.textContent = `History unavailable: ${err.message || err}`;
  }
}

function drawHistory(node, rows, t0, t1) {
  node.replaceChildren();
  const W = 900, H = 200, L = 64, R = 16, T = 10, B = 24;
  const shown = rows.filter((r) => Date.parse(r.start) >= t0 && Date.parse(r.start) < t1);
  const values = shown.filter((r) => r.people_mean !== null);
  const top0 = Math.max(1, ...values.map((r) => r.people_mean_high));
  const step = niceStep(top0 * 1.1, 3);
  const top = Math.ceil((top0 * 1.1) / step) * step;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => H - B - (v / top) * (H - T - B);
  drawValueGrid(node, top, step, y, L, W - R);
  const days = t1 - t0 > 2 * 24 * HOUR_MS;
  const tstep = days ? 24 * HOUR_MS : 3 * HOUR_MS;
  for (let t = Math.ceil(t0 / tstep) * tstep; t <= t1; t += tstep) {
    const lab = svg("text", { class: "axis", x: x(t), y: H - 6, "text-anchor": "middle" });
    lab.textContent = days ? new Date(t).toISOString().slice(5, 10) : utc(t);
    node.append(lab);
  }
  const slot = HOUR_MS;
  for (const r of shown) {
    const t = Date.parse(r.start);
    if (r.people_mean === null) {
      // Withheld by the privacy rules (as it was live): shaded, no number.
      node.append(svg("rect", { class: "gap", x: x(t), y: T, width: Math.max(1, x(t + slot) - x(t)), height: H - T - B }));
      continue;
    }
    const bar = svg("rect", { class: "hist-range", x: x(t), y: y(r.people_mean_high), width: Math.max(1, x(t + slot) - x(t) - 0.5),
      height: Math.max(1, y(r.people_mean_low) - y(r.people_mean_high)) });
    node.append(bar);
    node.append(svg("line", { class: "hist-mean", x1: x(t), x2: x(t + slot), y1: y(r.people_mean), y2: y(r.people_mean) }));
  }
  node.dataset.hours = String(values.length);
}

function renderHistoryDays(rows) {
  const head = el("tr", {}, ...["day (from 04:00 UTC)", "visitors", "range (90%)", "mean people", "peak", "mean stay"].map((h) => el("th", { text: h })));
  const body = rows.slice().reverse().map((d) => el("tr", { "data-day": d.day }, ...(d.visitors === null
    ? [d.day, `withheld (${d.withheld})`, "", "", "", ""]
    : [d.day, n(d.visitors), `${n(d.visitors_low)} – ${n(d.visitors_high)}`, d.people_mean === null ? "partial day" : n(Math.round(d.people_mean)),
      d.people_peak === null ? "" : n(d.people_peak), d.dwell_min === null ? "" : `${Math.round(d.dwell_min)} min`]
  ).map((c) => el("td", { text: c }))));
  // A day is stored a little over an hour after it ends (04:00 UTC): say so rather than show nothing.
  if (!body.length) body.push(el("tr", {}, el("td", { colspan: "6", class: "empty", text: "No whole visitor day stored yet (a day runs 04:00 to 04:00 UTC and is stored about an hour after it ends)." })));
  $("history-days").replaceChildren(head, ...body);
}

// --- start-up -----------------------------------------------------------------------------------
function connect() {
  if (state.source) state.source.close();
  const url = state.token ? `/api/stream?access_token=${encodeURIComponent(state.token)}` : "/api/stream";
  const source = new EventSource(url);
  state.source = source;
  const conn = $("conn");
  source.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
  source.onerror = () => {
    conn.textContent = "reconnecting…";
    conn.className = "conn down";
    // EventSource retries a dropped connection itself, but gives up for good after an error
    // status (a worker restarting, Redis away): then start a new one a little later.
    if (source.readyState === EventSource.CLOSED) setTimeout(() => state.source === source && connect(), 5000);
  };
  source.addEventListener("estimate", (ev) => acceptEstimate(JSON.parse(ev.data)));
  source.addEventListener("alert", (ev) => acceptAlert(JSON.parse(ev.data)));
}

async function start() {
  loadToken();
  state.map = await api("/api/map");
  $("city-name").textContent = state.map.name;
  // Show by default the window the alert rules read (most areas'), so the tiles and the
  // alerts speak of the same numbers; the operator's own choice is remembered.
  const counts = new Map();
  for (const a of state.map.areas) counts.set(a.alerts.window_s, (counts.get(a.alerts.window_s) || 0) + 1);
  const alertWindow = [...counts.entries()].sort((a, b) => b[1] - a[1])[0][0];
  state.window = Number(localStorage.getItem("crowdpulse-window")) || alertWindow;
  if (!state.map.windows_s.includes(state.window)) state.window = alertWindow;
  const select = $("window");
  for (const w of state.map.windows_s) select.append(el("option", { value: String(w), text: windowLabel(w) }));
  select.value = String(state.window);
  select.addEventListener("change", () => {
    state.window = Number(select.value);
    localStorage.setItem("crowdpulse-window", select.value);
    for (const a of state.map.areas) state.dirty.add(a.id);
    schedule();
  });
  $("acker").value = localStorage.getItem("crowdpulse-acker") || "";
  $("acker").addEventListener("change", () => localStorage.setItem("crowdpulse-acker", $("acker").value));
  $("tiles").replaceChildren(...state.map.areas.map(buildTile));
  buildMap();
  $("detail-close").addEventListener("click", () => { $("detail").close(); });
  $("detail").addEventListener("close", () => { state.detail = null; });
  $("fit-data").addEventListener("change", () => state.detail && renderDetail());
  $("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("crowdpulse-token", $("auth-token").value.trim());
    location.reload();
  });

  // A token may see estimates without alerts: the estimates still show, the panel says why.
  const noAlerts = (err) => {
    $("no-alerts").textContent = `Alerts unavailable: ${err.message || err}`;
    return { active: [], recent: [] };
  };
  const [latest, alerts] = await Promise.all([api("/api/areas"), api("/api/alerts").catch(noAlerts)]);
  for (const e of latest) acceptEstimate(e);
  acceptUsual(latest);
  for (const a of alerts.active.concat(alerts.recent)) acceptAlert(a);
  state.lastUpdate = latest.length ? Date.now() : null;
  connect();
  // Recent series for sparklines and the detail chart (the stream only brings new points).
  await Promise.all(state.map.areas.map(async (a) => {
    const detail = await api(`/api/areas/${encodeURIComponent(a.id)}`);
    for (const [w, points] of Object.entries(detail.series)) {
      const k = key(a.id, Number(w));
      const merged = new Map((state.series.get(k) || []).map((p) => [p.as_of, p]));
      for (const p of points) if (!merged.has(p.as_of)) merged.set(p.as_of, p);
      state.series.set(k, [...merged.values()].sort((p, q) => p.as_of - q.as_of).slice(-SERIES_MAX));
    }
    state.dirty.add(a.id);
  }));
  schedule();
  tickAge();  // at once: the header must not say "no data yet" for a second after the tiles filled
  setInterval(tickAge, 1000);
  // The usual levels change with the hour: read them again every minute (the live stream
  // carries the estimates only).
  if (state.map.history) setInterval(() => api("/api/areas").then(acceptUsual).catch(() => {}), 60_000);
  document.body.dataset.ready = "true";
}

start().catch((err) => {
  console.error(err);
  $("conn").textContent = `error: ${err.message || err}`;
  $("conn").className = "conn down";
});
