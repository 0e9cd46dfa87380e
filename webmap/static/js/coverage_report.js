/* The printable coverage report: a grouped bar chart of the share of households within reach,
   by street (x) and by kind × walking distance (bars). Data come from the page as JSON; names
   are given to Chart.js as text, never as HTML. */
"use strict";
(function () {
  const print = document.getElementById("print-report");
  if (print) print.addEventListener("click", () => window.print());
  const data = JSON.parse(document.getElementById("coverage-chart").textContent);
  const streets = Array.from(new Set(data.reach.flatMap((r) => Object.keys(r.by_street)))).sort();
  const COLOURS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"];
  const datasets = data.reach.map((r, i) => ({
    label: r.label,
    backgroundColor: COLOURS[i % COLOURS.length],
    data: streets.map((s) => {
      const pair = r.by_street[s];
      return pair && pair[0] > 0 ? Math.round((1000 * pair[1]) / pair[0]) / 10 : null;
    }),
  }));
  const labels = streets.map((s) => (data.streets[s] ? `${data.streets[s]} ${s}` : s));
  window.coverageChart = new Chart(document.getElementById("chart-streets"), {
    type: "bar",
    data: { labels, datasets },
    options: {
      animation: false, maintainAspectRatio: false,
      scales: { y: { min: 0, max: 100, title: { display: true, text: t("Share within reach (%)") } } },
      plugins: { legend: { position: "bottom" } },
    },
  });
  window.coverageReportReady = true;
})();
