// Chart options of the sweep page (ECharts). Pure functions of the JSON data.
"use strict";

const COLORS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];  // viridis
const STAGE_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
const UNSCORED_STYLE = {  // pruned: its score stops early, not comparable with done ones
  pruned: { symbol: "emptyTriangle", color: "#b54708" },
  diverged: { symbol: "triangle", color: "#b42318" },
  failed: { symbol: "rect", color: "#344054" },
  cancelled: { symbol: "emptyCircle", color: "#98a2b3" },
};
const STAR = "path://M50 0L61 35L98 35L68 57L79 91L50 70L21 91L32 57L2 35L39 35Z";

function paramScale(stages, name) {
  for (const st of stages) if (st.ranges[name]) return st.ranges[name];
  return { scale: "linear" };
}

function axisFor(stages, name) {
  const r = paramScale(stages, name);
  const axis = { name, nameLocation: "middle", nameGap: 30, scale: true,
                 axisLabel: { formatter: (v) => fmt(v) } };
  if (r.scale === "log") {
    axis.type = "log";
    // integer log ranges (hidden_size 16..512) get a tick per power of two, not one in all
    axis.logBase = r.integer ? 2 : 10;
  } else {
    axis.type = "value";
  }
  return axis;
}

function numericParams(stages) {
  const names = new Set();
  for (const st of stages) for (const [k, r] of Object.entries(st.ranges)) {
    if (r.scale !== "choice") names.add(k);
  }
  return [...names].sort();
}

function searchedParams(stages) {
  const names = new Set();
  for (const st of stages) for (const k of Object.keys(st.ranges)) names.add(k);
  return [...names].sort();
}

function accRange(points) {
  let lo = Infinity, hi = -Infinity;
  for (const p of points) {
    if (p[2] === "done" && p[3] !== null) { lo = Math.min(lo, p[3]); hi = Math.max(hi, p[3]); }
  }
  if (lo === Infinity) return [0, 1];
  return lo === hi ? [lo - 0.01, hi + 0.01] : [lo, hi];
}

function boxSeries(stages, flags, x, y) {
  const out = [];
  for (const st of stages) {
    const rx = st.ranges[x], ry = st.ranges[y];
    if (!rx || !ry || rx.scale === "choice" || ry.scale === "choice") continue;
    const color = STAGE_COLORS[st.idx % STAGE_COLORS.length];
    out.push({ name: "stage " + st.idx + " range", type: "line", silent: true, symbol: "none",
               lineStyle: { color, width: 1.5, type: "dashed" }, itemStyle: { color },
               data: [[rx.low, ry.low], [rx.high, ry.low], [rx.high, ry.high], [rx.low, ry.high],
                      [rx.low, ry.low]] });
    for (const f of flags.filter((f) => f.stage === st.idx && (f.param === x || f.param === y))) {
      const edge = f.side === "low" ? "low" : "high";
      const seg = f.param === x
        ? [[rx[edge], ry.low], [rx[edge], ry.high]] : [[rx.low, ry[edge]], [rx.high, ry[edge]]];
      out.push({ name: "flagged edge", type: "line", silent: true, symbol: "none", z: 5,
                 lineStyle: { color: "#d92d20", width: 4 }, itemStyle: { color: "#d92d20" },
                 data: seg });
    }
  }
  return out;
}

// The coarse-to-fine picture: one series per stage (done trials, coloured by val acc),
// the unscored trials apart, each stage's range box, flagged edges, the best trial.
function scatterOption(data, pts, x, y) {
  const have = (p) => typeof p[5][x] === "number" && typeof p[5][y] === "number";
  const tip = (p) => trialTooltip([["trial", "#" + p[0]], ["stage", p[1]], ["status", p[2]],
    ["val acc", p[3]], [x, p[5][x]], [y, p[5][y]]].concat(p[4] ? [["carried", "yes"]] : []));
  const series = [];
  const byStage = new Map();
  for (const p of pts.points) {
    if (p[2] !== "done" || p[3] === null || !have(p)) continue;
    if (!byStage.has(p[1])) byStage.set(p[1], []);
    byStage.get(p[1]).push({ value: [p[5][x], p[5][y], p[3], p[0]], symbol: p[4] ? "diamond" : "circle",
                             tip: tip(p) });
  }
  const stageSeries = [...byStage.keys()].sort((a, b) => a - b);
  for (const idx of stageSeries) {
    series.push({ name: "stage " + idx, type: "scatter", symbolSize: 7 + 2 * idx,
                  itemStyle: { borderColor: STAGE_COLORS[idx % STAGE_COLORS.length], borderWidth: 1 },
                  data: byStage.get(idx), large: false });
  }
  const scored = series.length;
  let unscored = 0;
  for (const [status, style] of Object.entries(UNSCORED_STYLE)) {
    const rows = pts.points.filter((p) => p[2] === status && have(p))
      .map((p) => ({ value: [p[5][x], p[5][y], null, p[0]], tip: tip(p) }));
    unscored += rows.length;
    if (rows.length) series.push({ name: status, type: "scatter", symbol: style.symbol,
      symbolSize: 8, itemStyle: { color: style.color, opacity: 0.8 }, data: rows });
  }
  const best = pts.points.find((p) => p[0] === pts.best && have(p));
  if (best) series.push({ name: "best trial", type: "scatter", symbol: STAR, symbolSize: 22, z: 10,
    itemStyle: { color: "#fff", borderColor: "#000", borderWidth: 2 },
    data: [{ value: [best[5][x], best[5][y], best[3], best[0]], tip: tip(best) }] });
  const boxes = boxSeries(data.stages, data.flags, x, y);
  series.push(...boxes);
  const [lo, hi] = accRange(pts.points);
  const scoredCount = series.slice(0, scored).reduce((n, s) => n + s.data.length, 0);
  return {
    counts: { points: scoredCount, unscored, boxes: boxes.filter((b) => b.name !== "flagged edge").length,
              best: best ? 1 : 0 },
    option: {
      animation: false,
      legend: { top: 0, type: "scroll" },
      grid: { left: 70, right: 90, top: 40, bottom: 50 },
      tooltip: { trigger: "item", formatter: (p) => (p.data && p.data.tip) || esc(p.seriesName) },
      xAxis: axisFor(data.stages, x), yAxis: axisFor(data.stages, y),
      visualMap: { type: "continuous", min: lo, max: hi, dimension: 2, right: 0, top: "middle",
                   seriesIndex: [...Array(scored).keys()], calculable: true, precision: 3,
                   inRange: { color: COLORS } },
      series,
    },
  };
}

function parallelOption(data, pts) {
  const names = searchedParams(data.stages);
  const axes = names.map((name, dim) => {
    const r = paramScale(data.stages, name);
    if (r.scale === "choice") {
      return { dim, name, type: "category", data: (r.choices || []).map(String) };
    }
    return { dim, name, type: r.scale === "log" ? "log" : "value", logBase: r.integer ? 2 : 10,
             scale: true, axisLabel: { formatter: (v) => fmt(v) } };
  });
  axes.push({ dim: names.length, name: "val acc", type: "value", scale: true });
  const rows = pts.points.filter((p) => p[2] === "done" && p[3] !== null).map((p) => names.map(
    (n) => (paramScale(data.stages, n).scale === "choice" ? String(p[5][n]) : p[5][n])).concat([p[3]]));
  const [lo, hi] = accRange(pts.points);
  return {
    count: rows.length,
    option: {
      animation: false,
      parallelAxis: axes, parallel: { left: 50, right: 120, top: 40, bottom: 30 },
      visualMap: { type: "continuous", min: lo, max: hi, dimension: names.length, right: 0,
                   top: "middle", calculable: true, precision: 3, inRange: { color: COLORS } },
      series: [{ name: "trials", type: "parallel", lineStyle: { width: 1, opacity: 0.5 },
                 progressive: 1000, data: rows }],
    },
  };
}

function bestOption(data) {
  const steps = data.best_so_far.steps;
  return {
    animation: false, grid: { left: 60, right: 20, top: 20, bottom: 45 },
    tooltip: { trigger: "axis", formatter: (ps) => esc(ps[0].value[0]) + " trials: " +
      esc(pct(ps[0].value[1])) },
    xAxis: { type: "value", name: "trials finished", nameLocation: "middle", nameGap: 28,
             minInterval: 1 },
    yAxis: { type: "value", name: "best val acc", scale: true },
    series: [{ name: "best so far", type: "line", step: "end", data: steps, showSymbol: true }],
  };
}

function curvesOption(curves) {
  const series = curveSeries(curves, [{ key: "val_acc", label: "val" },
                                      { key: "train_acc", label: "train", dash: true }]);
  return {
    count: series.length,
    option: {
      animation: false, legend: { top: 0, type: "scroll" },
      grid: { left: 60, right: 20, top: 40, bottom: 45 },
      tooltip: { trigger: "axis", formatter: (ps) => "epoch " + esc(ps[0].value[0]) + "<br>" +
        ps.map((p) => esc(p.seriesName) + ": " + esc(pct(p.value[1]))).join("<br>") },
      xAxis: { type: "value", name: "epoch", nameLocation: "middle", nameGap: 28, minInterval: 1 },
      yAxis: { type: "value", name: "accuracy", scale: true },
      series,
    },
  };
}
