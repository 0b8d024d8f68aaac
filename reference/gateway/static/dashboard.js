// Mini FaaS dashboard: plain JavaScript over the gateway's JSON API (no framework, no build step).
"use strict";

const POLL_MS = 2000;          // workers and live chart
const FUNCTIONS_EVERY = 3;     // the functions table every 3rd poll: it costs one request per function
const CHART_POINTS = 60;       // two minutes of history at one point per poll

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

async function refreshFunctions() {
  let list;
  try {
    list = (await api("GET", "/functions")).functions;
  } catch (err) {
    $("functions-note").textContent = err.message;
    return;
  }
  list.sort((a, b) => a.name.localeCompare(b.name));
  const metricCounts = lastMetrics ? countsByFunction(lastMetrics) : null;
  const figures = await Promise.all(list.map((f) => functionFigures(f.name, metricCounts)));

  const body = $("functions").tBodies[0];
  body.replaceChildren();
  if (!list.length) {
    const row = el("tr", null, "empty");
    const cell = el("td", "no function deployed yet");
    cell.colSpan = 8;
    row.append(cell);
    body.append(row);
  }
  list.forEach((f, i) => {
    const row = el("tr");
    row.dataset.name = f.name;
    row.append(el("td", f.name), el("td", f.lang), el("td", bytes(f.size), "num"),
      el("td", f.version || 1, "num"), el("td", f.id, "muted"),
      el("td", figures[i].count === null ? "–" : figures[i].count, "num"),
      el("td", fmt(figures[i].p50), "num"), el("td", fmt(figures[i].p99), "num"));
    body.append(row);
  });
  $("functions-note").textContent = invocationsMissing
    ? "This gateway keeps no invocation records: latencies are not shown."
    : "p50 and p99: total time of the last successful invocations the gateway keeps (up to 100 per function).";
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

// -- live throughput and latency ------------------------------------------------------------

// Throughput and mean latency between two polls, from /metrics counters when the gateway has
// them (exact, one request), else from the invocation records of each function.
let lastMetrics = null, lastTotals = null, lastRecordTime = Date.now() / 1000;
const series = {rps: [], latency: []};

function countsByFunction(samples) {
  const counts = {};
  for (const s of samples) {
    if (s.name === "faas_invocations_total") counts[s.labels.function] = (counts[s.labels.function] || 0) + s.value;
  }
  return counts;
}

function totals(samples) {
  const t = {count: 0, seconds: 0};
  for (const s of samples) {
    if (s.name === "faas_invocation_duration_seconds_count") t.count += s.value;
    if (s.name === "faas_invocation_duration_seconds_sum") t.seconds += s.value;
  }
  return t;
}

async function sampleFromMetrics() {
  const res = await optional("/metrics");
  if (!res) return null;
  lastMetrics = parseMetrics(await res.text());
  const now = {time: Date.now() / 1000, ...totals(lastMetrics)};
  const before = lastTotals;
  lastTotals = now;
  if (!before) return {rps: 0, latency: null};
  const calls = now.count - before.count;
  return {rps: calls / (now.time - before.time), latency: calls > 0 ? (now.seconds - before.seconds) / calls * 1000 : null};
}

async function sampleFromRecords() {
  const since = lastRecordTime, now = Date.now() / 1000;
  lastRecordTime = now;
  const names = [...$("invoke-fn").options].map((o) => o.value);
  const fresh = [];
  for (const name of names) {
    const res = await optional("/function/" + encodeURIComponent(name) + "/invocations");
    if (res) fresh.push(...(await res.json()).invocations.filter((r) => r.time > since && r.total_ms != null));
  }
  const mean = fresh.length ? fresh.reduce((sum, r) => sum + r.total_ms, 0) / fresh.length : null;
  return {rps: fresh.length / (now - since), latency: mean};
}

async function refreshLive() {
  let sample = await sampleFromMetrics();
  $("live-source").textContent = "polling every 2 s, from " + (sample ? "/metrics" : "the invocation records");
  if (!sample) sample = await sampleFromRecords();
  push(series.rps, sample.rps);
  push(series.latency, sample.latency);
  $("live-rps").textContent = fmt(sample.rps);
  $("live-latency").textContent = fmt(sample.latency);
  drawChart($("chart-rps"), series.rps, "#2563eb");
  drawChart($("chart-latency"), series.latency, "#b45309");
}

function push(list, value) {
  list.push(value);
  if (list.length > CHART_POINTS) list.shift();
}

// A line over the last CHART_POINTS samples, y from 0 to the largest; null values leave a gap.
function drawChart(canvas, values, color) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width, height = canvas.clientHeight || canvas.height;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  const pad = {left: 40, right: 8, top: 8, bottom: 8};
  const max = Math.max(1, ...values.filter((v) => v !== null)) * 1.1;
  const x = (i) => pad.left + (width - pad.left - pad.right) * i / (CHART_POINTS - 1);
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
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  const offset = CHART_POINTS - values.length;   // newest sample on the right edge
  let drawing = false;
  values.forEach((v, i) => {
    if (v === null) { drawing = false; return; }
    if (drawing) ctx.lineTo(x(offset + i), y(v)); else ctx.moveTo(x(offset + i), y(v));
    drawing = true;
  });
  ctx.stroke();
}

// -- start ----------------------------------------------------------------------------------

let tick = 0;

async function poll() {
  await Promise.all([refreshWorkers(), refreshHealth(), refreshLive()]);
  if (tick++ % FUNCTIONS_EVERY === 0) await refreshFunctions();
  setTimeout(poll, POLL_MS);
}

$("deploy-form").addEventListener("submit", deploySubmit);
$("deploy-file").addEventListener("change", fileChosen);
$("invoke-form").addEventListener("submit", invokeSubmit);
loadLanguages();
poll();
