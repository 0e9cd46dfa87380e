/* Rates of the incident loop as a table (rows below a target in red) and a monthly chart. */
"use strict";
(function () {
  const form = document.getElementById("rates-form");
  // 督办数 too, as the CSV has it (the phone's cards show these columns only)
  const COLUMNS = ["code", "reported", "filed", "closed", "due", "supervised", "closed_rate", "on_time_rate", "rework_rate",
    "filing_hours", "dispatch_hours", "handling_hours", "verify_hours"];
  // by 处置部门: dispatched to it, handled, on time, overdue, sent back (退回), 督办
  const DEPARTMENT_COLUMNS = ["code", "dispatched", "handled", "handled_on_time", "overdue", "returned", "supervised",
    "on_time_rate"];
  const RATES = new Set(["closed_rate", "on_time_rate", "rework_rate"]);
  let chart = null;
  const chartTitle = document.getElementById("rates-chart-title");
  const monthTitle = chartTitle.textContent;
  window.gridplan = { ready: false };

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }
  function show(key, value) {
    if (value === null || value === undefined) return "—";
    if (RATES.has(key)) return `${(value * 100).toFixed(1)}%`;
    if (key.endsWith("_hours")) return value.toFixed(1);
    return value;
  }

  async function load() {
    const query = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) if (v) query.set(k, v);
    document.getElementById("rates-csv").href = `/api/rates?${query}&format=csv`;
    // the table and the chart's months are asked for at once; the table shows as soon as it comes
    const months = new URLSearchParams(query);
    months.set("every", "month");
    months.set("series", "only");
    // by department the chart is the departments' own figure (no months are asked)
    const seriesAnswer = query.get("by") === "department" ? Promise.resolve(null)
      : fetch(`/api/rates?${months}`, { credentials: "same-origin" }).then((r) => (r.ok ? r.json() : null)).catch(() => null);
    const response = await fetch(`/api/rates?${query}`, { credentials: "same-origin" });
    const answer = await response.json();
    if (!response.ok) { document.getElementById("status").textContent = answer.detail; return; }
    document.getElementById("rates-targets").textContent =
      `${gpLocale.date(answer.from, true)} – ${gpLocale.date(answer.to, true)} · ` + t("targets: closed rate ≥ {closed} · on-time rate ≥ {onTime}", { closed: gpLocale.percent(answer.targets.closed_rate, 0), onTime: gpLocale.percent(answer.targets.on_time_rate, 0) });
    const table = document.getElementById("rates-table");
    const columns = answer.by === "department" ? DEPARTMENT_COLUMNS : COLUMNS;
    table.dataset.by = answer.by;
    // the first column is headed by the grouping (处置部门, 社区 …): it holds a name and its code
    const byOption = form.querySelector(`select[name=by] option[value="${answer.by}"]`);
    const labels = { ...answer.labels, code: byOption ? byOption.textContent : answer.labels.code };
    const head = el("tr");
    for (const c of columns) head.append(el("th", labels[c] || c));
    table.tHead.replaceChildren(head);
    const rows = answer.total ? [...answer.rows, { ...answer.total, code: null, total: true }] : answer.rows;
    table.tBodies[0].replaceChildren(...rows.map((r) => {
      const tr = el("tr", null, r.total ? { class: "total" } : {});
      for (const c of columns) {
        const label = labels[c] || c;
        // the place by its name, its code beside it; the totals row in words
        const text = c !== "code" ? show(c, r[c]) : r.total ? t("Total") : r.name ? `${r.name} ${r.code}` : r.code;
        const td = el("td", text, { class: (r.below_target || []).includes(c) ? "below count" : c === "code" ? "place" : "count",
          "data-label": label });
        tr.append(td);
      }
      return tr;
    }));
    document.getElementById("status").textContent = t("{n} rows", { n: gpLocale.number(answer.rows.length) });
    window.gridplan.tableAt = performance.now();
    if (chart) chart.destroy();
    chart = null;
    if (answer.by === "department") {
      departmentChart(answer);
    } else {
      chartTitle.textContent = monthTitle;
      monthChart(answer, await seriesAnswer);
    }
    document.getElementById("status").textContent = t("{n} rows", { n: gpLocale.number(answer.rows.length) });
  }

  // each department's on-time handling rate (按期处置率): what the department grouping measures
  function departmentChart(answer) {
    chartTitle.textContent = t("On-time handling rate by department");
    if (!window.Chart) return;
    const percent = (v) => gpLocale.percent(v, 0);
    chart = new Chart(document.getElementById("rates-chart"), { type: "bar",
      data: { labels: answer.rows.map((r) => r.name || r.code),
        datasets: [{ label: answer.labels.on_time_rate || t("on-time rate"), data: answer.rows.map((r) => r.on_time_rate),
          backgroundColor: "#33a02c" }] },
      options: { animation: false, responsive: true, maintainAspectRatio: false, indexAxis: "y",
        scales: { x: { min: 0, max: 1, ticks: { callback: percent } } },
        plugins: { legend: { labels: { boxWidth: 14, font: { size: 11 } } },
          tooltip: { callbacks: { label: (c) => c.dataset.label + t(": ") + (c.parsed.x === null ? "—" : gpLocale.percent(c.parsed.x, 1)) } } } } });
  }

  function monthChart(answer, monthly) {
    const series = (monthly && monthly.series) || [];
    const data = {
      labels: series.map((s) => s.code),
      datasets: [
        { label: t("closed rate"), data: series.map((s) => s.closed_rate), borderColor: "#1f78b4" },
        { label: t("on-time rate"), data: series.map((s) => s.on_time_rate), borderColor: "#33a02c" },
        { label: t("rework rate"), data: series.map((s) => s.rework_rate), borderColor: "#e31a1c" },
        { label: t("target: closed rate"), data: series.map(() => answer.targets.closed_rate), borderDash: [6, 4], borderColor: "#1f78b4", pointRadius: 0 },
        { label: t("target: on-time rate"), data: series.map(() => answer.targets.on_time_rate), borderDash: [6, 4], borderColor: "#33a02c", pointRadius: 0 },
      ],
    };
    if (window.Chart) {
      const percent = (v) => gpLocale.percent(v, 0);
      chart = new Chart(document.getElementById("rates-chart"), { type: "line", data,
        options: { animation: false, responsive: true, maintainAspectRatio: false,
          scales: { y: { min: 0, max: 1, ticks: { callback: percent } } },
          plugins: { legend: { labels: { boxWidth: 14, font: { size: 11 } } },
            tooltip: { callbacks: { label: (c) => c.dataset.label + t(": ") + (c.parsed.y === null ? "—" : gpLocale.percent(c.parsed.y, 1)) } } } } });
    }
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  load().then(() => { window.gridplan.ready = true; window.gridplan.readyAt = performance.now(); })
    .catch((err) => { document.getElementById("status").textContent = t("Could not load: {reason}", { reason: err.message }); });
})();
