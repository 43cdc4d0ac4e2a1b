// walletsync's analyst dashboard: the read API, drawn with plain SVG, no
// library and no request beyond this origin.
"use strict";
const $ = (id) => document.getElementById(id);
const colors = { apple: "#2563eb", google: "#16a34a", appleUn: "#93c5fd", googleUn: "#86efac", removal: "#d97706" };
const day = (d) => d.toISOString().slice(0, 10);

function token() { return localStorage.getItem("walletsync-token") || ""; }

async function api(path) {
  const headers = {};
  if (token()) headers.Authorization = "Bearer " + token();
  const res = await fetch(path, { headers });
  if (res.status === 401) { $("token-label").hidden = false; throw new Error("the API needs a token"); }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

function svg(tag, attrs, text) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// lineChart draws series of {label, color, values[]} over days.
function lineChart(el, days, series, height) {
  el.replaceChildren();
  const W = 900, H = height, L = 48, B = 22, T = 8;
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const x = (i) => L + (days.length <= 1 ? 0 : (i * (W - L - 8)) / (days.length - 1));
  const y = (v) => T + (H - T - B) * (1 - v / max);
  for (let k = 0; k <= 4; k++) {
    const v = Math.round((max * k) / 4);
    el.append(svg("line", { x1: L, x2: W, y1: y(v), y2: y(v), class: "grid" }));
    el.append(svg("text", { x: 4, y: y(v) + 4 }, v));
  }
  const step = Math.max(1, Math.ceil(days.length / 10));
  days.forEach((d, i) => { if (i % step === 0) el.append(svg("text", { x: x(i) - 16, y: H - 4 }, d.slice(5))); });
  for (const s of series) {
    const pts = s.values.map((v, i) => `${x(i)},${y(v)}`).join(" ");
    const attrs = { points: pts, fill: "none", stroke: s.color, "stroke-width": 2, "data-series": s.label, "data-total": s.values.reduce((a, b) => a + b, 0), "data-last": s.values.at(-1) ?? 0 };
    if (s.dashed) attrs["stroke-dasharray"] = "6 4";
    el.append(svg("polyline", attrs));
  }
}

function legend(el, series) {
  el.replaceChildren(...series.map((s) => {
    const span = document.createElement("span");
    span.style.setProperty("--c", s.color);
    span.textContent = `${s.label} (${s.summary})`;
    return span;
  }));
}

async function drawDaily(q, by) {
  const a = await api(`/v1/insights/daily?${q}${by ? "&by=" + by : ""}`);
  const days = [...new Set(a.rows.map((r) => r.day))];
  const sum = (p, key) => days.map((d) => a.rows.filter((r) => r.day === d && r.platform === p).reduce((t, r) => t + r[key], 0));
  const both = (x, y) => x.map((v, i) => v + y[i]);
  const series = [
    { label: "apple installs", color: colors.apple, values: sum("apple", "installs") },
    { label: "google installs", color: colors.google, values: sum("google", "installs") },
    { label: "apple uninstalls", color: colors.appleUn, values: sum("apple", "uninstalls") },
    { label: "google uninstalls", color: colors.googleUn, values: sum("google", "uninstalls") },
    // A device removal leaves the pass on another device: drawn beside
    // the uninstalls (both platforms, dashed), never among them.
    { label: "device removals", color: colors.removal, dashed: true, values: both(sum("apple", "deviceRemovals"), sum("google", "deviceRemovals")) },
  ];
  series.forEach((s) => (s.summary = s.values.reduce((x, y) => x + y, 0)));
  lineChart($("daily-chart"), days, series, 260);
  legend($("daily-legend"), series);
  $("daily-chart").dataset.installs = series[0].summary + series[1].summary;
  $("daily-chart").dataset.uninstalls = series[2].summary + series[3].summary;
  $("daily-chart").dataset.deviceRemovals = series[4].summary;
  const t = $("daily-by");
  t.hidden = !by;
  if (by) {
    const totals = {};
    for (const r of a.rows) {
      const k = r[by] || "(none)";
      totals[k] = totals[k] || [0, 0, 0];
      totals[k][0] += r.installs; totals[k][1] += r.uninstalls; totals[k][2] += r.deviceRemovals;
    }
    t.innerHTML = `<tr><th>${by}</th><th>installs</th><th>uninstalls</th><th>device removals</th></tr>` +
      Object.entries(totals).map(([k, v]) => `<tr><td>${escapeHTML(k)}</td><td>${v[0]}</td><td>${v[1]}</td><td>${v[2]}</td></tr>`).join("");
  }
}

async function drawBase(q) {
  const a = await api(`/v1/insights/installed-base?${q}`);
  const days = [...new Set(a.rows.map((r) => r.day))];
  const series = ["apple", "google"].map((p) => ({
    label: p, color: colors[p], values: days.map((d) => (a.rows.find((r) => r.day === d && r.platform === p) || {}).installed || 0),
  }));
  series.forEach((s) => (s.summary = "now " + (s.values.at(-1) ?? 0)));
  lineChart($("base-chart"), days, series, 220);
  legend($("base-legend"), series);
}

async function drawStatus(q) {
  const a = await api(`/v1/insights/status?${q}`);
  const max = Math.max(1, ...a.rows.map((r) => r.customers));
  $("status-mix").replaceChildren(...a.rows.map((r) => {
    const row = document.createElement("div");
    row.className = "bar";
    row.dataset.status = r.walletStatus;
    row.dataset.customers = r.customers;
    row.innerHTML = `<span class="name">${r.walletStatus}</span><span class="fill ${r.walletStatus}" style="width:${(70 * r.customers) / max}%"></span><span class="n">${r.customers}</span>`;
    return row;
  }));
}

async function drawRetention(q) {
  const a = await api(`/v1/insights/retention?${q}`);
  const pct = (n, d) => (d ? Math.round((100 * n) / d) + "%" : "–");
  const cell = (n, d) => `<td style="background:rgba(22,163,74,${d ? (0.5 * n) / d : 0})">${pct(n, d)}</td>`;
  $("retention").innerHTML = "<tr><th>week</th><th>platform</th><th>installs</th><th>after 1 d</th><th>after 7 d</th><th>after 30 d</th></tr>" +
    a.rows.map((r) => `<tr data-week="${r.cohortWeek}" data-platform="${r.platform}" data-installed="${r.installed}"><td>${r.cohortWeek}</td><td>${r.platform}</td><td>${r.installed}</td>` +
      cell(r.after1d, r.installed) + cell(r.after7d, r.installed) + cell(r.after30d, r.installed) + "</tr>").join("");
}

// drawFunnel shows the API's rows as they come (week, then pass type) and a
// total over them, each count with its share of the issued passes.
async function drawFunnel(q) {
  const a = await api(`/v1/insights/funnel?${q}`);
  const pct = (n, d) => (d ? Math.round((100 * n) / d) + "%" : "–");
  const cell = (n, d) => `<td style="background:rgba(37,99,235,${d ? (0.4 * n) / d : 0})">${n} <span class="muted">${pct(n, d)}</span></td>`;
  const line = (attrs, week, type, r) => `<tr ${attrs}><td>${week}</td><td>${type}</td><td>${r.issued}</td>` +
    cell(r.within1d, r.issued) + cell(r.within7d, r.issued) + cell(r.within30d, r.issued) + "</tr>";
  const total = { issued: 0, within1d: 0, within7d: 0, within30d: 0 };
  for (const r of a.rows) for (const k of Object.keys(total)) total[k] += r[k];
  $("funnel").innerHTML = "<tr><th>week</th><th>pass type</th><th>issued</th><th>within 1 d</th><th>within 7 d</th><th>within 30 d</th></tr>" +
    a.rows.map((r) => line(`data-week="${r.cohortWeek}" data-pass-type="${escapeHTML(r.passType)}" data-issued="${r.issued}" ` +
      `data-within1d="${r.within1d}" data-within7d="${r.within7d}" data-within30d="${r.within30d}"`,
      r.cohortWeek, r.passType ? escapeHTML(r.passType) : '<span class="muted">(none)</span>', r)).join("") +
    (a.rows.length ? line(`class="total" data-issued="${total.issued}"`, "all", "", total) : "");
  $("funnel-empty").hidden = a.rows.length > 0;
}

// drawRuns lists the last backfill runs: each drift kind beside the passes
// scanned and agreeing; a run with drift is marked, one still going too.
const driftKinds = [["missedInstall", "missed install"], ["missedUninstall", "missed uninstall"], ["unknownPass", "unknown pass"],
  ["identityResolved", "identity resolved"], ["identityChanged", "identity changed"]];
async function drawRuns() {
  const a = await api("/v1/backfill/runs?limit=10");
  $("backfill-runs").innerHTML = "<tr><th>run</th><th>started</th><th>passes</th><th>agreeing</th><th>skipped</th>" +
    driftKinds.map(([, label]) => `<th>${label}</th>`).join("") + "<th>duration</th></tr>" +
    a.runs.map((r) => `<tr data-run-id="${escapeHTML(r.runId)}" data-passes="${r.passes}" data-agreeing="${r.agreeing}" data-skipped="${r.skipped}" ` +
      driftKinds.map(([k]) => `data-${k.toLowerCase()}="${r.drift[k]}"`).join(" ") +
      ` class="${r.done ? "" : "running"}"><td>${escapeHTML(r.runId)}${r.done ? "" : ' <span class="muted">(not done)</span>'}</td>` +
      `<td>${escapeHTML(r.startedAt)}</td><td>${r.passes}</td><td>${r.agreeing}</td><td>${r.skipped}</td>` +
      driftKinds.map(([k]) => `<td class="${r.drift[k] ? "drift" : ""}">${r.drift[k]}</td>`).join("") +
      `<td>${(r.durationMs / 1000).toFixed(1)} s</td></tr>`).join("");
  $("backfill-empty").hidden = a.runs.length > 0;
}

async function drawLag() {
  try {
    const p = await api("/v1/pipeline");
    $("lag").textContent = p.lag === 0 ? "pipeline: caught up" : `pipeline: ${p.lag} behind`;
    $("lag").classList.toggle("behind", p.lag !== 0);
  } catch (e) { $("lag").textContent = "pipeline: " + e.message; }
}

function escapeHTML(s) { return String(s).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";"); }

async function refresh() {
  const from = $("from").value, to = $("to").value, by = $("by").value;
  const q = `from=${from}&to=${to}`;
  const qs = new URLSearchParams({ from, to, by });
  history.replaceState(null, "", "?" + qs);
  const results = await Promise.allSettled([drawDaily(q, by), drawBase(q), drawStatus(q), drawRetention(q), drawFunnel(q), drawRuns(), drawLag()]);
  const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
  $("error").hidden = failed.length === 0;
  $("error").textContent = failed.length ? "Could not load: " + [...new Set(failed)].join("; ") : "";
  document.body.dataset.ready = String(Date.now());
}

function init() {
  const params = new URLSearchParams(location.search);
  const to = new Date(Date.now() + 86400000), from = new Date(Date.now() - 29 * 86400000);
  $("from").value = params.get("from") || day(from);
  $("to").value = params.get("to") || day(to);
  $("by").value = params.get("by") || "";
  $("token").value = token();
  $("controls").addEventListener("submit", (e) => {
    e.preventDefault();
    localStorage.setItem("walletsync-token", $("token").value);
    refresh();
  });
  $("lookup").addEventListener("submit", async (e) => {
    e.preventDefault();
    const id = $("customer").value.trim();
    if (!id) return;
    try {
      $("customer-result").textContent = JSON.stringify(await api("/v1/customers?customerId=" + encodeURIComponent(id)), null, 2);
    } catch (err) { $("customer-result").textContent = err.message; }
  });
  refresh();
  setInterval(refresh, 5000);
}
init();
