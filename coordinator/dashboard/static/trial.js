// Trial page: parameters, status and error, curves, checkpoints (never their bytes).
"use strict";

const TRIAL_ID = Number(location.pathname.split("/").pop());

function lineChart(id, series, yName, logY) {
  const chart = makeChart(id);
  chart.setOption({
    animation: false, legend: { top: 0 }, grid: { left: 60, right: 20, top: 30, bottom: 40 },
    tooltip: { trigger: "axis", formatter: (ps) => "epoch " + esc(ps[0].value[0]) + "<br>" +
      ps.map((p) => esc(p.seriesName) + ": " + esc(fmt(p.value[1]))).join("<br>") },
    xAxis: { type: "value", name: "epoch", nameLocation: "middle", nameGap: 25, minInterval: 1 },
    yAxis: { type: logY ? "log" : "value", name: yName, scale: true },
    series,
  }, true);
  document.getElementById(id).dataset.points = String(
    series.reduce((n, s) => n + s.data.length, 0));
}

async function refresh() {
  const t = await getJSON("/api/trial/" + TRIAL_ID);
  document.title = "hpsweep · trial " + t.id;
  replace("title", "trial #" + t.id + " · stage " + t.stage + " · " + t.status);
  const link = document.getElementById("sweep-link");
  link.href = "/sweep/" + t.sweep_id;
  link.textContent = t.sweep;
  const facts = [["status", statusPill(t.status)], ["best val acc", pct(t.best_val_acc)],
    ["best val loss", fmt(t.best_val_loss)], ["best epoch", fmt(t.best_epoch)],
    ["epochs (budget)", fmt(t.epochs)], ["attempts", fmt(t.attempts)], ["seed", fmt(t.seed)],
    ["worker", t.worker || "–"],
    ["carried from", t.parent_id ? trialLink(t.parent_id) : "–"],
    ["created", t.created_at || "–"], ["started", t.started_at || "–"],
    ["finished", t.finished_at || "–"]];
  replace("summary", el("table", {}, el("tbody", {},
    ...facts.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))))));
  replace("error", t.error ? el("pre", { class: "error" }, t.error) : "");
  replace("params", el("table", {}, el("tbody", {},
    ...Object.entries(t.params).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, fmt(v)))))));
  replace("checkpoints", t.checkpoints.length ? sortableTable([
    { key: "epoch", label: "epoch" }, { key: "kind", label: "kind" },
    { key: "val_acc", label: "val acc", pct: true }, { key: "bytes", label: "bytes" },
  ], t.checkpoints) : "none");
  const c = { [t.id]: t.curves };
  lineChart("chart-loss", curveSeries(c, [{ key: "train_loss", label: "train" },
    { key: "val_loss", label: "val" }, { key: "ema_val_loss", label: "val (EMA)", dash: true }]),
    "loss", false);
  lineChart("chart-acc", curveSeries(c, [{ key: "train_acc", label: "train" },
    { key: "val_acc", label: "val" }, { key: "ema_val_acc", label: "val (EMA)", dash: true }]),
    "accuracy", false);
  lineChart("chart-lr", curveSeries(c, [{ key: "lr", label: "lr" }]), "lr", true);
}

live("/api/version?trial=" + TRIAL_ID, refresh);
