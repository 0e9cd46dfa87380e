/* The supervisor's map: their grid cells and the incidents in them, as clusters and as a heat
   map, with filters; overdue cases stand out; a case's popup shows its history. */
"use strict";
(function () {
  const { config, map, el, figures, number, features, getJSON, status } = window.gp;
  const CLOSED = new Set(["closed", "cancelled"]);
  const state = { incidents: [], shown: 0, cells: 0 };
  const layers = {};
  window.gridplan = { map, layers, state, ready: false };

  const select = document.querySelector("#filters select[name=category]");
  for (const [code, name] of Object.entries(config.categories)) select.append(el("option", name, { value: code }));

  layers.cells = L.geoJSON(null, {
    style: { color: "#e6550d", weight: 2, fillOpacity: 0.05 },
    onEachFeature: (f, layer) => layer.bindTooltip(() => el("div", `${f.properties.code} · ${f.properties.supervisor || ""}`)),
  }).addTo(map);
  layers.clusters = L.markerClusterGroup({ maxClusterRadius: 45 }).addTo(map);
  layers.heat = L.heatLayer([], { radius: 18, blur: 15, maxZoom: 17 });
  L.control.layers(null, { "网格 cells": layers.cells, "事件 incidents": layers.clusters, "热力 heat map": layers.heat },
    { collapsed: false }).addTo(map);

  const now = new Date();
  const overdue = (p) => !CLOSED.has(p.status) && p.due_at && new Date(p.due_at) < now;
  const kind = (p) => (overdue(p) ? "overdue" : CLOSED.has(p.status) ? p.status : "open");

  async function showCase(p) {
    document.getElementById("case").hidden = false;
    document.getElementById("case-title").textContent = `${p.code} ${config.categories[p.category] || p.category}`;
    figures(document.getElementById("case-figures"), [
      ["状态 status", p.status, overdue(p) ? "flag-above" : ""], ["描述 description", p.description],
      ["网格 cell", p.grid_code], ["上报 reported", p.reported_at], ["时限 due", p.due_at || "—"],
      ["结案 closed", p.closed_at || "—"], ["逾期 overdue", overdue(p) ? "是 yes" : "否 no"]]);
    const list = document.getElementById("case-history");
    list.replaceChildren();
    const history = await getJSON(`/api/incidents/${encodeURIComponent(p.code)}/history`);
    for (const s of history.steps) list.append(el("li", `${s.at} ${s.step}${s.actor ? " · " + s.actor : ""}`));
  }

  function render() {
    const form = new FormData(document.getElementById("filters"));
    const wanted = form.get("status");
    const shown = state.incidents.filter((f) => !wanted || wanted === kind(f.properties) ||
      (wanted === "open" && !CLOSED.has(f.properties.status)) || wanted === f.properties.status);
    layers.clusters.clearLayers();
    const markers = shown.map((f) => {
      const [lon, lat] = f.geometry.coordinates;
      const marker = L.marker([lat, lon], { icon: L.divIcon({ className: `inc ${kind(f.properties)}`, iconSize: [12, 12] }),
        title: f.properties.code });
      marker.bindPopup(() => {
        const box = el("div", null, { class: "case-popup" });
        box.append(el("strong", f.properties.code), el("div", config.categories[f.properties.category] || ""),
          el("div", `状态 ${f.properties.status}${overdue(f.properties) ? " · 逾期 overdue" : ""}`));
        const steps = el("ol");
        box.append(steps);
        getJSON(`/api/incidents/${encodeURIComponent(f.properties.code)}/history`).then((h) => {
          for (const s of h.steps) steps.append(el("li", `${s.at} ${s.step}`));
        });
        return box;
      });
      marker.on("click", () => showCase(f.properties));
      return marker;
    });
    layers.clusters.addLayers(markers);
    layers.heat.setLatLngs(shown.map((f) => [f.geometry.coordinates[1], f.geometry.coordinates[0]]));
    state.shown = shown.length;
    const open = shown.filter((f) => !CLOSED.has(f.properties.status)).length;
    const late = shown.filter((f) => overdue(f.properties)).length;
    figures(document.getElementById("summary"), [["事件 incidents", number(shown.length)],
      ["未结 open", number(open)], ["逾期 overdue", number(late), late ? "flag-above" : ""]]);
  }

  async function load() {
    const form = new FormData(document.getElementById("filters"));
    const params = { limit: "10000" };
    if (form.get("category")) params.category = form.get("category");
    const status_ = form.get("status");
    if (status_ === "closed" || status_ === "cancelled") params.status = status_;
    if (form.get("from") || form.get("to")) params.datetime = `${form.get("from") || ".."}/${form.get("to") ? form.get("to") + "T23:59:59" : ".."}`;
    state.incidents = await features("incidents", params);
    render();
    status(`${state.incidents.length} 件 incidents loaded`);
  }
  document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); load(); });

  async function start() {
    const cells = await features("grid_cells");
    layers.cells.addData(cells);
    state.cells = cells.length;
    if (cells.length) map.fitBounds(layers.cells.getBounds(), { animate: false });
    await load();
    window.gridplan.ready = true;
  }
  start().catch((err) => status(`加载失败 failed to load: ${err.message}`));
})();
