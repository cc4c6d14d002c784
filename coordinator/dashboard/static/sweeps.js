// Sweeps page: every sweep with status, progress, best accuracy, flags.
"use strict";

async function refresh() {
  const data = await getJSON("/api/sweeps");
  const rows = data.sweeps;
  if (!rows.length) { replace("sweeps", "No sweeps in this database yet."); return; }
  const columns = [
    { key: "id", label: "id" },
    { key: "name", label: "sweep", render: (r) => el("a", { href: "/sweep/" + r.id }, r.name) },
    { key: "status", label: "status", render: (r) => statusPill(r.status) },
    { key: "final", label: "progress", value: (r) => (r.total ? r.final / r.total : 0),
      render: (r) => el("span", {}, r.final + " / " + r.total + " trials",
                        el("span", { class: "muted" }, " · stage " + r.stages + " of " + r.n_stages)) },
    { key: "best_val_acc", label: "best val acc", pct: true, desc: true },
    { key: "flags", label: "boundary flags",
      render: (r) => r.flags ? el("span", { class: "bad" }, String(r.flags)) : "0" },
    { key: "created_at", label: "started" },
    { key: "finished_at", label: "finished" },
  ];
  replace("sweeps", sortableTable(columns, rows));
}

live("/api/version", refresh);
