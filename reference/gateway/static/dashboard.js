// Mini FaaS dashboard: plain JavaScript over the gateway's JSON API (no framework, no build step).
"use strict";

const POLL_MS = 2000;          // workers, live charts, the open function's invocations
const FUNCTIONS_EVERY = 3;     // the functions table every 3rd poll: it costs one request per function
const WINDOW_S = 120;          // the live charts show the last two minutes
const SHOWN_INVOCATIONS = 20;  // rows of the function panel's invocations table
const SHOWN_ERRORS = 10;       // and of its errors table

const $ = (id) => document.getElementById(id);

// -- talking to the API ---------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : "HTTP " + status);
    this.status = status;
    this.body = body || {};
  }
}

// The answer's JSON; a failure (ok: false, or not JSON) throws ApiError carrying the API's sentence.
// With the key typed in the form: a gateway with an API key asks it to deploy and to read code,
// and to invoke when it has no invoke key of its own.
function withKey(headers = {}) {
  const key = $("api-key").value.trim();
  return key ? {...headers, Authorization: "Bearer " + key} : headers;
}

async function api(method, path, body, headers = {}) {
  let res;
  try {
    res = await fetch(path, {method, body, headers: withKey(headers)});
  } catch (err) {
    throw new ApiError(0, {error: "the gateway does not answer (" + err.message + ")"});
  }
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch (_) { json = null; }
  if (!res.ok || !json || json.ok === false) throw new ApiError(res.status, json);
  return json;
}

// An endpoint the gateway may not have (older gateways): null instead of an error when absent.
async function optional(path) {
  try {
    const res = await fetch(path, {headers: withKey()});
    return res.ok ? res : null;
  } catch (_) {
    return null;
  }
}

// -- small helpers --------------------------------------------------------------------------

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function fmt(value, digits = 1) {
  return value === null || value === undefined || Number.isNaN(value) ? "–" : Number(value).toFixed(digits);
}

function enc(name) {
  return encodeURIComponent(name);
}

// A record's or version's time (Unix seconds) as the clock shows it.
function clock(seconds) {
  return seconds == null ? "–" : new Date(seconds * 1000).toLocaleTimeString([], {hour12: false});
}

function dateTime(seconds) {
  return seconds == null ? "–" : new Date(seconds * 1000).toLocaleString([], {hour12: false});
}

function bytes(n) {
  if (n === undefined || n === null) return "–";
  return n < 1024 ? n + " B" : (n / 1024).toFixed(1) + " KiB";
}

// Nearest-rank percentile of a list of numbers (q in 0..100).
function percentile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q / 100 * sorted.length) - 1)];
}

// Prometheus text exposition -> [{name, labels, value}]; enough for our own /metrics.
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const pair of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    samples.push({name: m[1], labels, value: parseFloat(m[4])});
  }
  return samples;
}

// -- functions table ------------------------------------------------------------------------

let invocationsMissing = false;   // set when this gateway has no /function/NAME/invocations

async function functionFigures(name, metricCounts) {
  const figures = {count: metricCounts ? metricCounts[name] || 0 : null, p50: null, p99: null};
  if (invocationsMissing) return figures;
  const res = await optional("/function/" + encodeURIComponent(name) + "/invocations");
  if (!res) {
    // A 404 "no such endpoint" means the feature is absent; a 404 for the function means it just went.
    const check = await optional("/function/" + encodeURIComponent(name));
    if (check) invocationsMissing = true;
    return figures;
  }
  const body = await res.json();
  const times = body.invocations.filter((r) => r.status === 200 && r.total_ms != null).map((r) => r.total_ms);
  figures.p50 = percentile(times, 50);
  figures.p99 = percentile(times, 99);
  if (figures.count === null) figures.count = body.count;
  return figures;
}

let functionsLoaded = false;   // until the first answer the table says "loading", never "none"

function tableMessage(body, text, cls, columns) {
  const row = el("tr", null, cls);
  const cell = el("td", text);
  cell.colSpan = columns;
  row.append(cell);
  body.replaceChildren(row);
}

async function refreshFunctions() {
  let list;
  try {
    list = (await api("GET", "/functions")).functions;
  } catch (err) {
    if (!functionsLoaded) tableMessage($("functions").tBodies[0], "could not load the functions: " + err.message, "empty", 8);
    $("functions-note").textContent = err.message;
    return;
  }
  functionsLoaded = true;
  list.sort((a, b) => a.name.localeCompare(b.name));
  const metricCounts = lastMetrics ? countsByFunction(lastMetrics) : null;
  const figures = await Promise.all(list.map((f) => functionFigures(f.name, metricCounts)));

  const body = $("functions").tBodies[0];
  body.replaceChildren();
  if (!list.length) tableMessage(body, "no function deployed yet", "empty", 8);
  list.forEach((f, i) => {
    const row = el("tr", null, f.name === openName ? "selected" : null);
    row.dataset.name = f.name;
    const name = el("td");
    const link = el("a", f.name, "fn-link");
    link.href = "#fn=" + enc(f.name);
    name.append(link);
    row.append(name, el("td", f.lang), el("td", bytes(f.size), "num"),
      el("td", f.version || 1, "num"), el("td", f.id, "muted"),
      el("td", figures[i].count === null ? "–" : figures[i].count, "num"),
      el("td", fmt(figures[i].p50), "num"), el("td", fmt(figures[i].p99), "num"));
    body.append(row);
  });
  $("functions-note").textContent = invocationsMissing
    ? "This gateway keeps no invocation records: latencies are not shown."
    : "Click a function's name for its versions, invocations and errors, to update or delete it. " +
      "p50 and p99: total time of the successful ones among its last 100 invocations.";
  fillInvokeChoices(list);
}

function fillInvokeChoices(list) {
  const select = $("invoke-fn");
  const chosen = select.value;
  const names = list.map((f) => f.name);
  if (names.join("\n") === [...select.options].map((o) => o.value).join("\n")) return;
  select.replaceChildren(...names.map((n) => { const o = el("option", n); o.value = n; return o; }));
  if (names.includes(chosen)) select.value = chosen;
}

// -- deploy form ----------------------------------------------------------------------------

const EXTENSIONS = {c: "c", rs: "rust", go: "go", js: "js", mjs: "js", py: "python", php: "php", html: "html", htm: "html"};

async function loadLanguages() {
  const select = $("deploy-lang");
  let langs;
  try {
    langs = (await api("GET", "/languages")).languages;
  } catch (err) {
    langs = ["c", "rust", "go", "js", "python", "php", "html"].map((lang) => ({lang, ok: true}));
  }
  select.replaceChildren(...langs.map((l) => {
    const o = el("option", l.ok ? l.lang : l.lang + " (no toolchain)");
    o.value = l.lang;
    o.disabled = !l.ok;
    o.title = l.ok ? (l.version || l.toolchain || "") : (l.install || l.missing || "");
    return o;
  }));
  select.value = langs.some((l) => l.lang === "python" && l.ok) ? "python" : (langs.find((l) => l.ok) || {}).lang;
}

function showResult(box, ok, nodes) {
  box.hidden = false;
  box.className = "result " + (ok ? "ok" : "bad");
  box.replaceChildren(...nodes);
}

async function deploySubmit(event) {
  event.preventDefault();
  const button = $("deploy-button");
  const box = $("deploy-result");
  const doc = {name: $("deploy-name").value.trim(), lang: $("deploy-lang").value, code: $("deploy-code").value};
  button.disabled = true;
  try {
    const answer = await api("POST", "/deploy", JSON.stringify(doc), {"Content-Type": "application/json"});
    const extra = answer.compile_ms != null ? ", compiled in " + answer.compile_ms + " ms" : "";
    showResult(box, true, [el("span", "Deployed " + answer.name + " (id " + answer.id + extra + ").")]);
    await refreshFunctions();
    $("invoke-fn").value = answer.name;
    if (answer.name === openName) await refreshFunctionPanel(true);
  } catch (err) {
    const nodes = [el("p", err.message, "error")];
    if (err.body.details) nodes.push(el("pre", err.body.details));
    if (err.body.install) nodes.push(el("p", err.body.install));
    showResult(box, false, nodes);
  } finally {
    button.disabled = false;
  }
}

// A chosen file fills the code box, and the name and language when they are still empty.
function fileChosen() {
  const file = $("deploy-file").files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    $("deploy-code").value = reader.result;
    const [stem, ext] = [file.name.replace(/\.[^.]*$/, ""), file.name.split(".").pop().toLowerCase()];
    if (!$("deploy-name").value) $("deploy-name").value = stem.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 64);
    const lang = EXTENSIONS[ext];
    const option = [...$("deploy-lang").options].find((o) => o.value === lang && !o.disabled);
    if (option) $("deploy-lang").value = lang;
  };
  reader.readAsText(file);
}

// -- invoke panel ---------------------------------------------------------------------------

const FACTS = [["HTTP status", "status"], ["exit code", "exit_code"], ["total ms", "duration_ms"],
  ["queue ms", "queue_ms"], ["exec ms", "exec_ms"], ["init ms", "init_ms"], ["worker", "worker"], ["cold", "cold"]];

function showInvocation(status, body, message) {
  $("invoke-result").hidden = false;
  $("invoke-result").className = "result " + (message ? "bad" : "ok");
  $("invoke-error").hidden = !message;
  $("invoke-error").textContent = message || "";
  const facts = Object.assign({status}, body);
  $("invoke-facts").replaceChildren(...FACTS.filter(([, key]) => facts[key] !== undefined).map(([label, key]) => {
    const pair = el("div");
    const value = typeof facts[key] === "number" && !Number.isInteger(facts[key]) ? fmt(facts[key], 2) : facts[key];
    pair.append(el("dt", label), el("dd", value));
    return pair;
  }));
  $("invoke-output").textContent = (body.output || "") + (body.truncated ? "\n[output cut at the limit]" : "");
  $("invoke-stderr").textContent = body.stderr || "";
}

async function invokeSubmit(event) {
  event.preventDefault();
  const fn = $("invoke-fn").value;
  if (!fn) { showInvocation("", {}, "deploy a function first: there is nothing to invoke"); return; }
  let input = $("invoke-input").value;
  if ($("invoke-json").checked) {
    try { input = JSON.parse(input); } catch (err) {
      showInvocation("", {}, "the input is not valid JSON: " + err.message);
      return;
    }
  }
  const button = $("invoke-button");
  button.disabled = true;
  try {
    const answer = await api("POST", "/invoke?fn=" + encodeURIComponent(fn), JSON.stringify({input}),
      {"Content-Type": "application/json"});
    showInvocation(200, answer, null);
  } catch (err) {
    // A function that exited non-zero still has its output, stderr and exit code in the answer.
    showInvocation(err.status, err.body, err.message);
  } finally {
    button.disabled = false;
  }
  if (fn === openName) await refreshInvocations();
}

// -- workers --------------------------------------------------------------------------------

async function refreshWorkers() {
  const body = $("workers").tBodies[0];
  try {
    const stats = await api("GET", "/stats");
    $("workers-error").hidden = true;
    $("queue").textContent = stats.queue;
    $("strategy").textContent = "strategy " + stats.strategy + ", " + stats.workers.length + " workers";
    body.replaceChildren(...stats.workers.map((w) => {
      const row = el("tr");
      const state = el("td");
      state.append(el("span", w.state, "badge state-" + w.state));
      row.append(el("td", w.id), el("td", w.pid), state, el("td", w.jobs, "num"));
      return row;
    }));
  } catch (err) {
    if (body.querySelector("tr.loading")) body.replaceChildren();
    $("workers-error").hidden = false;
    $("workers-error").textContent = err.message;
  }
}

async function refreshHealth() {
  const badge = $("health");
  try {
    await api("GET", "/health");
    badge.textContent = "healthy";
    badge.className = "badge ok";
    badge.title = "";
  } catch (err) {
    badge.textContent = "unhealthy";
    badge.className = "badge bad";
    badge.title = err.message;
  }
}

// -- one function's panel: versions, update, delete, its last invocations and errors --------

let openName = null;      // the function whose panel is open (from the address: #fn=NAME)

function nameFromHash() {
  const m = location.hash.match(/^#fn=(.+)$/);
  if (!m) return null;
  try { return decodeURIComponent(m[1]); } catch (_) { return null; }
}

async function routeFromHash() {
  const name = nameFromHash();
  if (name === openName) return;
  openName = name;
  for (const row of $("functions").tBodies[0].rows) row.classList.toggle("selected", row.dataset.name === name);
  $("function-panel").hidden = !name;
  if (!name) return;
  $("fn-name").textContent = name;
  $("fn-summary").textContent = "";
  $("fn-state").textContent = "loading…";
  $("fn-body").hidden = true;
  $("fn-result").hidden = true;
  $("fn-confirm").hidden = true;
  $("fn-code").value = "";
  $("fn-code").dataset.edited = "";
  if ([...$("invoke-fn").options].some((o) => o.value === name)) $("invoke-fn").value = name;
  $("function-panel").scrollIntoView({block: "start"});
  await refreshFunctionPanel(true);
}

// The function's metadata, versions and code (GET /function/NAME), then its invocations.
// fillCode: put the current code in the update box (not while the user is editing it).
async function refreshFunctionPanel(fillCode) {
  const name = openName;
  if (!name) return;
  let meta;
  try {
    meta = await api("GET", "/function/" + enc(name));
  } catch (err) {
    if (name !== openName) return;
    $("fn-body").hidden = true;
    $("fn-summary").textContent = "";
    $("fn-state").textContent = err.status === 404 ? name + " is not deployed (deleted, or never deployed)." : err.message;
    return;
  }
  if (name !== openName) return;
  $("fn-state").textContent = "";
  $("fn-body").hidden = false;
  $("fn-summary").textContent = [meta.lang, "version " + meta.version, bytes(meta.size),
    meta.timeout_ms != null ? "timeout " + meta.timeout_ms + " ms" : null,
    meta.memory_mb != null ? meta.memory_mb + " MiB" : null].filter(Boolean).join(" · ");
  $("fn-versions").tBodies[0].replaceChildren(...meta.versions.map((v) => {
    const row = el("tr", null, v.id === meta.id ? "current" : null);
    row.dataset.version = v.version;
    row.append(el("td", v.version), el("td", v.id, "muted"), el("td", dateTime(v.created)),
      el("td", v.id === meta.id ? "current" : "", "muted"));
    return row;
  }));
  if (fillCode || !$("fn-code").dataset.edited) {
    $("fn-code").value = meta.code;
    $("fn-code").dataset.edited = "";
  }
  await refreshInvocations();
}

function statusCell(status) {
  return el("td", status, status === 200 ? "status-ok" : "status-bad");
}

async function refreshInvocations() {
  const name = openName;
  if (!name) return;
  let answer;
  try {
    answer = await api("GET", "/function/" + enc(name) + "/invocations");
  } catch (err) {
    if (name === openName) $("fn-kept").textContent = err.status === 404 && invocationsMissing
      ? "This gateway keeps no invocation records." : err.message;
    return;
  }
  if (name !== openName) return;
  const records = answer.invocations;   // newest first
  const shown = records.slice(0, SHOWN_INVOCATIONS);
  const errors = records.filter((r) => r.status !== 200);
  $("fn-invocations-count").textContent = records.length > shown.length
    ? "(the last " + shown.length + " of " + records.length + ")" : "(" + records.length + ")";
  $("fn-errors-count").textContent = errors.length > SHOWN_ERRORS
    ? "(the last " + SHOWN_ERRORS + " of " + errors.length + ")" : "(" + errors.length + ")";
  const invBody = $("fn-invocations").tBodies[0];
  if (!records.length) tableMessage(invBody, "no invocation yet", "empty", 8);
  else invBody.replaceChildren(...shown.map((r) => {
    const row = el("tr");
    row.append(el("td", clock(r.time)), el("td", r.version), statusCell(r.status), el("td", r.kind),
      el("td", fmt(r.total_ms, 2), "num"), el("td", r.worker == null ? "–" : r.worker),
      el("td", r.cold == null ? "–" : r.cold ? "cold" : "warm"), el("td", r.exit_code == null ? "–" : r.exit_code));
    return row;
  }));
  const errBody = $("fn-errors").tBodies[0];
  if (!errors.length) tableMessage(errBody, "no error among the kept invocations", "empty", 5);
  else errBody.replaceChildren(...errors.slice(0, SHOWN_ERRORS).map((r) => {
    const row = el("tr");
    row.append(el("td", clock(r.time)), el("td", r.version), statusCell(r.status), el("td", r.kind),
      el("td", r.exit_code == null ? "–" : r.exit_code));
    return row;
  }));
  $("fn-kept").textContent = "Kept by the gateway: " + answer.kept + ".";
}

function panelResult(ok, nodes) {
  showResult($("fn-result"), ok, nodes);
}

function errorNodes(err) {
  const nodes = [el("p", err.message, "error")];
  if (err.body.details) nodes.push(el("pre", err.body.details));
  if (err.body.install) nodes.push(el("p", err.body.install));
  return nodes;
}

async function updateSubmit(event) {
  event.preventDefault();
  const name = openName;
  const button = $("fn-update");
  button.disabled = true;
  try {
    const answer = await api("PUT", "/function/" + enc(name), JSON.stringify({code: $("fn-code").value}),
      {"Content-Type": "application/json"});
    const extra = answer.compile_ms != null ? ", compiled in " + answer.compile_ms + " ms" : "";
    panelResult(true, [el("span", "Updated " + name + " to version " + answer.version + " (id " + answer.id + extra + ").")]);
    await refreshFunctionPanel(true);
    await refreshFunctions();
  } catch (err) {
    panelResult(false, errorNodes(err));
  } finally {
    button.disabled = false;
  }
}

async function deleteConfirmed() {
  const name = openName;
  $("fn-confirm").hidden = true;
  try {
    const answer = await api("DELETE", "/function/" + enc(name));
    const versions = Array.isArray(answer.deleted) ? " (" + answer.deleted.length + " versions)" : "";
    panelResult(true, [el("span", "Deleted " + name + versions + ".")]);
    $("fn-body").hidden = true;
    $("fn-result").hidden = false;
    $("fn-summary").textContent = "";
    $("fn-state").textContent = name + " is deleted; its name is free again.";
    await refreshFunctions();
  } catch (err) {
    panelResult(false, errorNodes(err));
  }
}

// -- live throughput and latency ------------------------------------------------------------

// Throughput, p99 and mean latency between two polls, from /metrics when the gateway has it
// (its counters and duration histogram: one request), else from the invocation records of
// each function. Each point carries its time: the charts' x axis is seconds ago.
let lastMetrics = null, lastTotals = null, lastRecordTime = Date.now() / 1000;
const series = {rps: [], p99: [], latency: []};

function countsByFunction(samples) {
  const counts = {};
  for (const s of samples) {
    if (s.name === "faas_invocations_total") counts[s.labels.function] = (counts[s.labels.function] || 0) + s.value;
  }
  return counts;
}

function totals(samples) {
  const t = {count: 0, seconds: 0, buckets: new Map()};
  for (const s of samples) {
    if (s.name === "faas_invocation_duration_seconds_count") t.count += s.value;
    if (s.name === "faas_invocation_duration_seconds_sum") t.seconds += s.value;
    if (s.name === "faas_invocation_duration_seconds_bucket") {
      const le = s.labels.le === "+Inf" ? Infinity : parseFloat(s.labels.le);
      t.buckets.set(le, (t.buckets.get(le) || 0) + s.value);
    }
  }
  return t;
}

// The q-quantile (0..1) of a histogram's cumulative buckets [[upper bound, count], ...] sorted by
// bound, interpolated linearly inside its bucket as Prometheus's histogram_quantile does.
function histogramQuantile(buckets, q) {
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (const [bound, count] of buckets) {
    if (count >= rank) {
      if (bound === Infinity) return lower;   // past the largest bound: that bound, at least
      return lower + (bound - lower) * (count > below ? (rank - below) / (count - below) : 1);
    }
    lower = bound;
    below = count;
  }
  return lower;
}

async function sampleFromMetrics() {
  const res = await optional("/metrics");
  if (!res) return null;
  lastMetrics = parseMetrics(await res.text());
  const now = {time: Date.now() / 1000, ...totals(lastMetrics)};
  const before = lastTotals;
  lastTotals = now;
  if (!before) return {time: now.time, rps: 0, latency: null, p99: null};
  const calls = now.count - before.count;
  const delta = [...now.buckets].map(([bound, count]) => [bound, count - (before.buckets.get(bound) || 0)])
    .sort((a, b) => a[0] - b[0]);
  const p99 = calls > 0 ? histogramQuantile(delta, 0.99) : null;
  return {time: now.time, rps: calls / (now.time - before.time),
    latency: calls > 0 ? (now.seconds - before.seconds) / calls * 1000 : null, p99: p99 === null ? null : p99 * 1000};
}

async function sampleFromRecords() {
  const since = lastRecordTime, now = Date.now() / 1000;
  lastRecordTime = now;
  const names = [...$("invoke-fn").options].map((o) => o.value);
  const fresh = [];
  for (const name of names) {
    const res = await optional("/function/" + enc(name) + "/invocations");
    if (res) fresh.push(...(await res.json()).invocations.filter((r) => r.time > since && r.total_ms != null));
  }
  const times = fresh.map((r) => r.total_ms);
  const mean = times.length ? times.reduce((sum, t) => sum + t, 0) / times.length : null;
  return {time: now, rps: fresh.length / (now - since), latency: mean, p99: percentile(times, 99)};
}

let liveSource = null;

async function refreshLive() {
  let sample = await sampleFromMetrics();
  const source = sample ? "the gateway's /metrics (p99 interpolated in its histogram buckets)" : "the invocation records";
  if (!sample) sample = await sampleFromRecords();
  if (source !== liveSource) {
    liveSource = source;
    $("live-source").textContent = "the last " + WINDOW_S / 60 + " minutes, a point every " + POLL_MS / 1000 + " s, from " + source;
  }
  for (const key of ["rps", "p99", "latency"]) push(series[key], sample.time, sample[key]);
  $("live-rps").textContent = fmt(sample.rps);
  $("live-p99").textContent = fmt(sample.p99);
  $("live-latency").textContent = fmt(sample.latency);
  drawCharts();
}

function drawCharts() {
  const now = Date.now() / 1000;
  drawChart($("chart-rps"), now, [{points: series.rps, color: "#2563eb"}], "req/s");
  drawChart($("chart-latency"), now, [{points: series.latency, color: "#9ca3af"}, {points: series.p99, color: "#b45309"}], "ms");
}

function push(list, time, value) {
  list.push({time, value});
  while (list.length && list[0].time < time - WINDOW_S - 5) list.shift();
}

// Lines over the last WINDOW_S seconds (x: seconds ago, now on the right; y: from 0 to the
// largest value, in `unit`); a null value leaves a gap.
function drawChart(canvas, now, lines, unit) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width, height = canvas.clientHeight || canvas.height;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  const pad = {left: 44, right: 10, top: 10, bottom: 30};
  const values = lines.flatMap((l) => l.points.map((p) => p.value)).filter((v) => v !== null);
  const max = Math.max(1, ...values) * 1.1;
  const x = (t) => pad.left + (width - pad.left - pad.right) * (1 - (now - t) / WINDOW_S);
  const y = (v) => height - pad.bottom - (height - pad.top - pad.bottom) * v / max;

  ctx.strokeStyle = "#e2e5ea";
  ctx.fillStyle = "#6b7280";
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "right";
  for (const v of [0, max / 2, max]) {
    ctx.beginPath();
    ctx.moveTo(pad.left, y(v));
    ctx.lineTo(width - pad.right, y(v));
    ctx.stroke();
    ctx.fillText(fmt(v, v < 10 ? 1 : 0), pad.left - 4, y(v) + 4);
  }
  ctx.save();
  ctx.translate(10, pad.top + (height - pad.top - pad.bottom) / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillText(unit, 0, 0);
  ctx.restore();
  // The time axis: a tick every 30 s, labelled in seconds ago.
  ctx.textAlign = "center";
  const ticks = [];
  for (let ago = 0; ago <= WINDOW_S; ago += 30) {
    const tx = x(now - ago);
    ctx.beginPath();
    ctx.moveTo(tx, height - pad.bottom);
    ctx.lineTo(tx, height - pad.bottom + 4);
    ctx.stroke();
    ticks.push(ago === 0 ? "now" : "-" + ago + " s");
    ctx.textAlign = ago === 0 ? "right" : "center";   // "now" ends at the right edge, not past it
    ctx.fillText(ticks[ticks.length - 1], ago === 0 ? tx + pad.right : tx, height - pad.bottom + 15);
  }
  ctx.textAlign = "center";
  ctx.fillText("seconds ago", pad.left + (width - pad.left - pad.right) / 2, height - 2);
  canvas.dataset.axis = ticks.join(", ") + " (seconds ago); " + unit;   // what was drawn, for a reader

  ctx.save();
  ctx.beginPath();
  ctx.rect(pad.left, 0, width - pad.left - pad.right, height);
  ctx.clip();
  for (const line of lines) {
    ctx.strokeStyle = line.color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    for (const p of line.points) {
      if (p.value === null) { drawing = false; continue; }
      if (drawing) ctx.lineTo(x(p.time), y(p.value)); else ctx.moveTo(x(p.time), y(p.value));
      drawing = true;
    }
    ctx.stroke();
  }
  ctx.restore();
}

// -- start ----------------------------------------------------------------------------------

let tick = 0;

async function poll() {
  const jobs = [refreshWorkers(), refreshHealth(), refreshLive()];
  if (tick % FUNCTIONS_EVERY === 0) jobs.push(refreshFunctions().then(() => refreshFunctionPanel(false)));
  else jobs.push(refreshInvocations());
  tick++;
  await Promise.all(jobs);
  setTimeout(poll, POLL_MS);
}

$("deploy-form").addEventListener("submit", deploySubmit);
$("deploy-file").addEventListener("change", fileChosen);
$("invoke-form").addEventListener("submit", invokeSubmit);
$("fn-update-form").addEventListener("submit", updateSubmit);
// Typing (or just entering the box) keeps the polls from putting the current code back.
for (const type of ["input", "focus"]) $("fn-code").addEventListener(type, () => { $("fn-code").dataset.edited = "1"; });
$("fn-delete").addEventListener("click", () => { $("fn-confirm").hidden = false; });
$("fn-delete-no").addEventListener("click", () => { $("fn-confirm").hidden = true; });
$("fn-delete-yes").addEventListener("click", deleteConfirmed);
$("fn-close").addEventListener("click", (event) => {
  event.preventDefault();
  history.replaceState(null, "", location.pathname + location.search);
  routeFromHash();
});
window.addEventListener("hashchange", routeFromHash);
loadLanguages();
routeFromHash();
poll();
