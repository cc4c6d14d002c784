// Shared helpers. Every user string reaches the page through textContent (el/text)
// or through esc() in chart tooltips: nothing is parsed as HTML.
"use strict";

const POLL_MS = 1000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") {
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-2 || a >= 1e4) ? v.toExponential(2) : v.toPrecision(4);
  }
  if (Array.isArray(v)) return "[" + v.map(fmt).join(", ") + "]";
  return String(v);
}

function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(2) + "%"; }

function replace(id, ...children) {
  const node = document.getElementById(id);
  node.replaceChildren(...children);
  return node;
}

async function getJSON(url) {
  const res = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (!res.ok) {
    let msg = res.status + " " + res.statusText;
    try { msg = (await res.json()).error || msg; } catch (e) { /* not JSON */ }
    const err = new Error(url + ": " + msg);
    err.status = res.status;
    throw err;
  }
  return res.json();
}

function showProblem(err) {
  const box = document.getElementById("problem");
  if (!box) return;
  box.textContent = err ? String(err.message || err) : "";
  box.style.display = err ? "block" : "none";
}

// Poll a cheap change token; call refresh() when it changes (and once at start).
function live(versionUrl, refresh) {
  let last = null;
  let busy = false;
  let timer = null;
  const stamp = document.getElementById("live");
  async function tick() {
    if (busy) return;
    busy = true;
    try {
      const v = JSON.stringify((await getJSON(versionUrl)).version);
      if (v !== last) {
        await refresh();
        last = v;
        document.body.dataset.version = v;
        document.body.dataset.updatedAt = String(Date.now());
        document.body.dataset.loads = String(Number(document.body.dataset.loads || 0) + 1);
      }
      if (stamp) { stamp.textContent = "live · checked " + new Date().toLocaleTimeString();
                   stamp.classList.remove("stale"); }
      showProblem(null);
    } catch (err) {
      if (err.status === 404) clearInterval(timer);  // nothing will ever appear there
      if (stamp) { stamp.textContent = "not updating: " + err.message; stamp.classList.add("stale"); }
      showProblem(err);
    } finally {
      busy = false;
    }
  }
  timer = setInterval(() => { if (!document.hidden) tick(); }, POLL_MS);
  tick();
}

// A table whose headers sort its rows (numbers numerically, missing values last).
function sortableTable(columns, rows, opts) {
  opts = opts || {};
  let key = opts.sortKey || null;
  let dir = opts.sortDir || 1;
  const table = el("table", { class: "sortable-table", dataset: { rows: rows.length } });
  const thead = el("thead");
  const tbody = el("tbody");
  table.append(thead, tbody);
  function value(row, col) { return col.value ? col.value(row) : row[col.key]; }
  function render() {
    const sorted = rows.slice();
    if (key !== null) {
      const col = columns.find((c) => c.key === key);
      sorted.sort((a, b) => {
        const x = value(a, col), y = value(b, col);
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * dir;
      });
    }
    thead.replaceChildren(el("tr", {}, ...columns.map((c) => el("th", {
      class: "sortable", title: "sort by " + c.label, dataset: { key: c.key },
      onclick: () => { dir = key === c.key ? -dir : (c.desc ? -1 : 1); key = c.key; render(); },
    }, c.label + (key === c.key ? (dir > 0 ? " ▲" : " ▼") : "")))));
    tbody.replaceChildren(...sorted.map((r) => {
      const tr = el("tr", { class: opts.onRow ? "clickable" : null,
                            onclick: opts.onRow ? () => opts.onRow(r, tr) : null });
      for (const c of columns) {
        const v = value(r, c);
        const shown = c.render ? c.render(r) : (c.pct ? pct(v) : fmt(v));
        tr.append(el("td", { class: !c.render && typeof v === "number" ? "num" : null }, shown));
      }
      if (opts.isSelected && opts.isSelected(r)) tr.classList.add("selected");
      return tr;
    }));
  }
  render();
  return table;
}

function statusPill(status) { return el("span", { class: "pill " + status }, status); }

function trialLink(id) { return el("a", { href: "/trial/" + id }, "#" + id); }

function makeChart(id) {
  const node = document.getElementById(id);
  const chart = echarts.getInstanceByDom(node) || echarts.init(node, null, { renderer: "canvas" });
  window.addEventListener("resize", () => chart.resize());
  return chart;
}

// Tooltip text for one trial, escaped: parameter names and values are user data.
function trialTooltip(lines) {
  return lines.map(([k, v]) => "<b>" + esc(k) + "</b> " + esc(fmt(v))).join("<br>");
}

// Line series of a set of curves (ECharts), one per trial and metric.
function curveSeries(curves, metrics) {
  const out = [];
  for (const [id, c] of Object.entries(curves)) {
    for (const m of metrics) {
      if (!c[m.key] || !c[m.key].some((v) => v !== null)) continue;
      out.push({ name: "#" + id + " " + m.label, type: "line", showSymbol: c.epoch.length < 30,
                 yAxisIndex: m.axis || 0, lineStyle: { type: m.dash ? "dashed" : "solid" },
                 data: c.epoch.map((e, i) => [e, c[m.key][i]]) });
    }
  }
  return out;
}
