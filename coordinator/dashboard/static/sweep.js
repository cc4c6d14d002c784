// Sweep page: stages, flags, charts and tables, refreshed when the sweep changes.
"use strict";

const SWEEP_ID = Number(location.pathname.split("/").pop());
const MAX_SELECTED = 20;
const state = { data: null, pts: null, selected: [], x: null, y: null };

function rangeText(r) {
  if (r.scale === "choice") return "{" + (r.choices || []).map(fmt).join(", ") + "}";
  const f = (v) => (r.integer ? String(Math.round(v)) : r.scale === "log" ? v.toExponential(1) : fmt(v));
  return f(r.low) + " … " + f(r.high) + (r.scale === "log" ? " (log)" : "");
}

function countsText(counts) {
  const order = ["queued", "running", "done", "pruned", "diverged", "failed", "cancelled"];
  return order.filter((k) => counts[k]).map((k) => counts[k] + " " + k).join(" · ") || "–";
}

function renderHeader(d) {
  document.title = "hpsweep · " + d.sweep.name;
  replace("title", d.sweep.name);
  const final = d.best_so_far.finished;
  const search = d.stages.filter((st) => st.kind === "search").length;
  replace("summary", statusPill(d.sweep.status), " " + final + " trials finished · " + search +
          " of " + d.sweep.n_stages + " stages · started " + (d.sweep.created_at || "–") +
          (d.sweep.finished_at ? " · finished " + d.sweep.finished_at : ""));
  document.body.dataset.final = String(final);
  replace("config", d.sweep.config);
}

function renderFlags(d) {
  const box = document.getElementById("flags");
  box.hidden = d.flags.length === 0;
  replace("flag-help", d.flag_help);
  replace("flag-list", ...d.flags.map((f) => el("li", {}, "stage " + f.stage + ": " + f.message)));
}

function renderStages(d) {
  replace("stages", sortableTable([
    { key: "idx", label: "stage" }, { key: "kind", label: "kind" },
    { key: "epochs", label: "epochs" }, { key: "n_trials", label: "trials" },
    { key: "status", label: "status", render: (r) => statusPill(r.status) },
    { key: "counts", label: "by status", value: (r) => r.counts.done || 0,
      render: (r) => countsText(r.counts) },
    { key: "ranges", label: "ranges sampled", value: () => 0, render: (r) => el("div", {},
      ...Object.entries(r.ranges).map(([k, v]) => el("div", {}, el("b", {}, k), " " + rangeText(v)))) },
    { key: "best", label: "best trial", value: (r) => (r.best ? r.best.val_acc : null),
      render: (r) => (r.best ? el("span", {}, trialLink(r.best.id), " " + pct(r.best.val_acc)) : "–") },
  ], d.stages));
}

function renderTop(d) {
  const names = searchedParams(d.stages);
  const cols = [
    { key: "rank", label: "rank" },
    { key: "id", label: "trial", render: (r) => trialLink(r.id) },
    { key: "stage", label: "stage" },
    { key: "val_acc", label: "val acc", pct: true, desc: true },
    { key: "val_loss", label: "val loss" },
    { key: "best_epoch", label: "best epoch" }, { key: "epochs", label: "epochs" },
    { key: "carried", label: "carried", render: (r) => (r.carried ? "yes" : "") },
    ...names.map((n) => ({ key: "p:" + n, label: n, value: (r) => r.params[n] })),
  ];
  replace("top", d.top.length ? sortableTable(cols, d.top, {
    onRow: (r) => toggleCurve(r.id), isSelected: (r) => state.selected.includes(r.id) })
    : "no finished trial yet");
}

function renderUnscored(d) {
  const u = d.unscored;
  const parts = Object.entries(u.counts).map(([k, n]) => n + " " + k);
  replace("unscored", el("p", { dataset: { count: u.rows.length } },
                         parts.length ? parts.join(" · ") : "none"),
          u.rows.length ? sortableTable([
            { key: "id", label: "trial", render: (r) => trialLink(r.id) },
            { key: "stage", label: "stage" },
            { key: "status", label: "status", render: (r) => statusPill(r.status) },
            { key: "attempts", label: "attempts" },
            { key: "error", label: "error", render: (r) => el("span", { class: "error" }, r.error) },
            { key: "finished_at", label: "finished" },
          ], u.rows) : "");
}

function renderEnsembles(d) {
  replace("ensembles", d.ensembles.length ? sortableTable([
    { key: "method", label: "method" }, { key: "members", label: "members" },
    { key: "val_acc", label: "val acc", pct: true }, { key: "test_acc", label: "test acc", pct: true },
    { key: "single_val_acc", label: "best single val acc", pct: true },
    { key: "gain", label: "gain (val)", render: (r) => (r.gain === null ? "–" :
      (r.gain >= 0 ? "+" : "") + (100 * r.gain).toFixed(2) + " pts") },
  ], d.ensembles) : el("span", { class: "muted" }, "none yet: hpsweep ensemble SWEEP"));
}

function fillSelect(id, names, chosen) {
  const sel = document.getElementById(id);
  if (sel.options.length !== names.length) {
    sel.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  }
  sel.value = chosen;
}

function renderScatter() {
  const d = state.data, pts = state.pts;
  const names = numericParams(d.stages);
  if (names.length < 2) { replace("scatter-note", "fewer than two numeric parameters searched"); return; }
  if (!names.includes(state.x)) state.x = names.includes("learning_rate") ? "learning_rate" : names[0];
  if (!names.includes(state.y) || state.y === state.x) {
    state.y = names.find((n) => n === "reg" && n !== state.x) || names.find((n) => n !== state.x);
  }
  fillSelect("x-param", names, state.x);
  fillSelect("y-param", names, state.y);
  const built = scatterOption(d, pts, state.x, state.y);
  const chart = makeChart("chart-scatter");
  chart.setOption(built.option, true);
  Object.assign(document.getElementById("chart-scatter").dataset, {
    points: built.counts.points, unscored: built.counts.unscored, boxes: built.counts.boxes,
    best: built.counts.best });
  replace("scatter-note", pts.step > 1
    ? "showing every " + pts.step + "th of " + pts.total + " finished trials, plus the best ones"
    : pts.total + " finished trials");
}

function renderParallel() {
  const built = parallelOption(state.data, state.pts);
  makeChart("chart-parallel").setOption(built.option, true);
  document.getElementById("chart-parallel").dataset.lines = String(built.count);
}

function renderBest() {
  makeChart("chart-best").setOption(bestOption(state.data), true);
  document.getElementById("chart-best").dataset.points = String(state.data.best_so_far.steps.length);
}

async function renderCurves() {
  const ids = state.selected;
  const curves = ids.length ? (await getJSON("/api/curves?ids=" + ids.join(","))).curves : {};
  const built = curvesOption(curves);
  makeChart("chart-curves").setOption(built.option, true);
  document.getElementById("chart-curves").dataset.trials = String(ids.length);
  document.getElementById("chart-curves").dataset.series = String(built.count);
}

function toggleCurve(id) {
  const i = state.selected.indexOf(id);
  if (i >= 0) state.selected.splice(i, 1);
  else { state.selected.push(id); if (state.selected.length > MAX_SELECTED) state.selected.shift(); }
  renderTop(state.data);
  renderCurves().catch(showProblem);
}

async function refresh() {
  const [data, pts] = await Promise.all([getJSON("/api/sweep/" + SWEEP_ID),
                                         getJSON("/api/sweep/" + SWEEP_ID + "/points")]);
  const first = state.data === null;
  state.data = data;
  state.pts = pts;
  if (first) state.selected = data.top.slice(0, 3).map((r) => r.id);
  renderHeader(data);
  renderFlags(data);
  renderStages(data);
  renderTop(data);
  renderUnscored(data);
  renderEnsembles(data);
  renderScatter();
  renderParallel();
  renderBest();
  await renderCurves();
}

function setup() {
  for (const [id, key] of [["x-param", "x"], ["y-param", "y"]]) {
    document.getElementById(id).addEventListener("change", (ev) => {
      state[key] = ev.target.value;
      renderScatter();
    });
  }
  document.getElementById("clear-curves").addEventListener("click", () => {
    state.selected = [];
    renderTop(state.data);
    renderCurves().catch(showProblem);
  });
  makeChart("chart-scatter").on("click", (p) => {
    if (p.data && p.data.value && p.data.value[3] !== undefined) toggleCurve(p.data.value[3]);
  });
  live("/api/version?sweep=" + SWEEP_ID, refresh);
}

setup();
