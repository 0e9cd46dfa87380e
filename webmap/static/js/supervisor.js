/* The supervisor's map: their grid cells (those they hold drawn bold, with who holds each) and
   the incidents in them, as clusters and a heat map fed by the same filters. Overdue and time
   left come from the server (working calendar), never from this browser's clock. A case's
   panel shows its history and links to the case page, where the next step is taken. */
"use strict";
(function () {
  const { config, map, el, figures, number, features, getJSON, status } = window.gp;
  const CLOSED = new Set(["closed", "evaluated", "cancelled"]);
  const state = { incidents: [], shown: 0, cells: 0 };
  const layers = {};
  const mine = new Set(config.cells || []);
  window.gridplan = { map, layers, state, ready: false };

  const select = document.querySelector("#filters select[name=category]");
  for (const [code, name] of Object.entries(config.categories)) select.append(el("option", name, { value: code }));

  const holders = {};
  layers.cells = L.geoJSON(null, {
    style: (f) => ({ color: "#e6550d", weight: mine.has(f.properties.code) ? 4 : 2, fillOpacity: mine.has(f.properties.code) ? 0.1 : 0.03 }),
    onEachFeature: (f, layer) => layer.bindTooltip(() => el("div",
      `${f.properties.code} · ${gpLocale.list(holders[f.properties.code] || []) || f.properties.supervisor || "—"}`)),
  }).addTo(map);
  layers.clusters = L.markerClusterGroup({ maxClusterRadius: 45 }).addTo(map);
  layers.heat = L.heatLayer([], { radius: 18, blur: 15, maxZoom: 17 });
  L.control.layers(null, { [t("Grid cells")]: layers.cells, [t("Cases")]: layers.clusters, [t("Heat map")]: layers.heat },
    { collapsed: false }).addTo(map);

  const kind = (p) => (p.overdue ? "overdue" : CLOSED.has(p.status) ? (p.status === "evaluated" ? "closed" : p.status) : "open");
  // the steps of a case's history
  const STEPS = { reported: t("was reported"), filed: t("was filed"), dispatched: t("was dispatched"),
    handled: t("was handled"), returned: t("was returned for rework"), closed: t("was checked and closed"),
    evaluated: t("was evaluated"), cancelled: t("was cancelled") };
  STEPS.noted = t("was seen again (a note added)");  // "this is the same case" on the report form
  const when = (iso) => (iso ? gpLocale.date(iso) : "—");

  async function showCase(p) {
    document.getElementById("case").hidden = false;
    document.getElementById("case-title").textContent = `${p.code} ${p.category_name || p.category}`;
    document.getElementById("case-link").href = `/cases/${encodeURIComponent(p.code)}`;
    figures(document.getElementById("case-figures"), [
      [t("Status"), p.status_label || p.status, p.overdue ? "flag-above" : ""], [t("Description"), p.description],
      [t("Grid cell"), p.grid_code || "—"], [t("Reported"), when(p.reported_at)], [t("Due"), when(p.due_at)],
      [t("Time left"), p.hours_left === null ? "—" : t("{n} working hours", { n: number(p.hours_left) })], [t("Closed"), when(p.closed_at)],
      [t("Overdue"), p.overdue ? t("yes") : t("no"), p.overdue ? "flag-above" : ""]]);
    const list = document.getElementById("case-history");
    list.replaceChildren();
    // approximate cases too; a pin of the map by view is the case as the API answers it, history included
    const history = p.steps ? p : await getJSON(`/api/incidents/${encodeURIComponent(p.code)}`);
    for (const s of history.steps) {
      list.append(el("li", `${when(s.at)} ${STEPS[s.step] || s.step}${s.actor ? " · " + s.actor : ""}`,
        { "data-step": s.step }));
    }
  }

  // "1 case", not "1 cases" (Chinese has one form)
  function loaded(n) { return n === 1 ? t("{n} case loaded", { n: number(n) }) : t("{n} cases loaded", { n: number(n) }); }
  function render() {
    const shown = state.incidents;
    layers.clusters.clearLayers();
    const markers = shown.map((f) => {
      const [lon, lat] = f.geometry.coordinates;
      const marker = L.marker([lat, lon], { icon: L.divIcon({ className: `inc ${kind(f.properties)}`, iconSize: [12, 12] }),
        title: f.properties.code });
      marker.on("click", () => showCase(f.properties));
      return marker;
    });
    layers.clusters.addLayers(markers);
    layers.heat.setLatLngs(shown.map((f) => [f.geometry.coordinates[1], f.geometry.coordinates[0]]));
    state.shown = shown.length;
    // the counts are the server's, of every case the filters select (the map may draw fewer)
    const c = state.counts || { total: shown.length, open: shown.filter((f) => !CLOSED.has(f.properties.status)).length,
      overdue: shown.filter((f) => f.properties.overdue).length };
    figures(document.getElementById("summary"), [[t("Cases"), c.total > shown.length
      ? t("{total} ({shown} on the map)", { total: number(c.total), shown: number(shown.length) }) : number(c.total)],
    [t("Open cases"), number(c.open)], [t("Overdue"), number(c.overdue), c.overdue ? "flag-above" : ""]]);
  }

  /* Without a signal the phone's service worker answers with what it kept (marked
     X-Gridplan-Offline): the page says so, and from when (the list's own time). */
  function saidOffline(when) {
    const note = document.getElementById("offline-note");
    state.offline = when || null;
    if (!note) return;
    note.hidden = !when;
    note.textContent = when ? t("Offline: showing the grid cells and cases saved on this phone at {when}", { when: gpLocale.date(when) }) : "";
  }

  async function load() {
    const form = new FormData(document.getElementById("filters"));
    const query = new URLSearchParams({ limit: "20000" });
    for (const key of ["status", "category", "from", "to"]) if (form.get(key)) query.set(key, form.get(key));
    let response;
    try {
      response = await fetch(`/api/incidents?${query}`, { credentials: "same-origin", headers: { Accept: "application/json" } });
    } catch (err) {  // no signal, and this filter's answer was never kept: what is shown stays
      status(t("Offline: this filter's cases were not saved on this phone; the map shows what was"));
      return;
    }
    if (!response.ok) throw new Error(`/api/incidents: HTTP ${response.status}`);
    const answer = await response.json();
    saidOffline(response.headers.get("X-Gridplan-Offline") ? answer.now : null);
    state.counts = answer.counts || null;
    state.incidents = answer.incidents.map((p) => ({ type: "Feature", properties: p, geometry: { type: "Point", coordinates: [p.lon, p.lat] } }));
    render();
    status(loaded(state.incidents.length));
  }
  /* The city-wide map (an administrator's): the cases of the map's view, asked again after each
     pan or zoom. A view holding more cases than the server pins gets them counted per community
     (per street zoomed out), drawn as circles with their number; the figures are the server's, of
     every case the filters select in the whole scope, never counted from what was downloaded. */
  layers.groups = L.layerGroup().addTo(map);
  state.viewLoads = 0;
  function viewBox() {
    const b = map.getBounds();
    const clamp = (v, lim) => Math.max(-lim, Math.min(lim, v)).toFixed(5);
    return [clamp(b.getWest(), 180), clamp(b.getSouth(), 90), clamp(b.getEast(), 180), clamp(b.getNorth(), 90)].join(",");
  }
  function drawGroups(groups) {
    layers.groups.clearLayers();
    const most = Math.max(1, ...groups.map((g) => g.total));
    for (const g of groups) {
      const circle = L.circleMarker([g.lat, g.lon], { radius: 8 + 22 * Math.sqrt(g.total / most),
        color: g.overdue ? "#c0392b" : "#e6550d", weight: 2, fillOpacity: 0.35, className: "case-group" });
      circle.bindTooltip(number(g.total), { permanent: true, direction: "center", className: "case-group-label" });
      circle.bindPopup(el("div", t("{total} cases: {open} open, {overdue} overdue",
        { total: number(g.total), open: number(g.open), overdue: number(g.overdue) })));
      circle.on("dblclick", () => map.setView([g.lat, g.lon], map.getZoom() + 2));
      layers.groups.addLayer(circle);
    }
  }
  function summaryByView(answer) {
    const c = answer.counts;
    const rows = [[t("Cases"), number(c.total)], [t("Open cases"), number(c.open)],
      [t("Overdue"), number(c.overdue), c.overdue ? "flag-above" : ""]];
    for (const [code, n] of Object.entries(c.by_status || {})) rows.push([answer.status_labels[code] || code, number(n)]);
    // the figure only: the status line below says to zoom in (once, not twice)
    rows.push([t("In this view"), number(answer.view.total)]);
    figures(document.getElementById("summary"), rows);
  }
  // the page is ready (and a test or a user reads its figures) once the latest view asked is drawn
  function loadView() {
    const run = (state.loading = loadViewNow());
    const settle = async (r) => { await r; if (state.loading !== r) await settle(state.loading); };
    return settle(run);
  }
  async function loadViewNow() {
    const form = new FormData(document.getElementById("filters"));
    const query = new URLSearchParams({ bbox: viewBox(), zoom: String(map.getZoom()) });
    for (const key of ["status", "category", "from", "to"]) if (form.get(key)) query.set(key, form.get(key));
    const ticket = (state.ticket = (state.ticket || 0) + 1);
    const answer = await getJSON(`/api/incidents/map?${query}`);
    if (ticket !== state.ticket) return;  // the map moved on: a later view's answer is coming
    state.counts = answer.counts;
    state.view = answer.view;
    state.groups = answer.groups || null;
    state.incidents = (answer.incidents || []).map((p) => ({ type: "Feature",
      properties: { ...p, status_label: answer.status_labels[p.status], category_name: config.categories[p.category] },
      geometry: { type: "Point", coordinates: [p.lon, p.lat] } }));
    layers.clusters.clearLayers();
    layers.clusters.addLayers(state.incidents.map((f) => {
      const marker = L.marker([f.properties.lat, f.properties.lon], { title: f.properties.code,
        icon: L.divIcon({ className: `inc ${kind(f.properties)}`, iconSize: [12, 12] }) });
      marker.on("click", () => getJSON(`/api/incidents/${encodeURIComponent(f.properties.code)}`).then(showCase)
        .catch((err) => status(t("Could not load: {reason}", { reason: err.message }))));
      return marker;
    }));
    drawGroups(state.groups || []);
    const most = Math.max(1, ...(state.groups || []).map((g) => g.total));
    layers.heat.setLatLngs(state.groups ? state.groups.map((g) => [g.lat, g.lon, g.total / most])
      : state.incidents.map((f) => [f.properties.lat, f.properties.lon]));
    state.shown = state.incidents.length;
    summaryByView(answer);
    state.viewLoads += 1;
    status(state.groups ? t("{n} cases in this view: zoom in to see each one", { n: number(answer.view.total) })
      : loaded(state.incidents.length));
  }
  let moved = null;
  function followView() {  // after the first view is set: each pan or zoom asks for its cases
    map.on("moveend", () => { clearTimeout(moved); moved = setTimeout(() => loadView().catch((err) =>
      status(t("Could not load: {reason}", { reason: err.message }))), 200); });
  }
  document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); config.byView ? loadView() : load(); });
  // a tap on the map offers to report a case there (the report form opens with the pin placed)
  map.on("click", (e) => {
    const where = new URLSearchParams({ lon: e.latlng.lng.toFixed(7), lat: e.latlng.lat.toFixed(7) });
    const link = el("a", t("Report a case here"), { href: `/cases/new?${where}`, class: "big-button primary", id: "report-here" });
    L.popup().setLatLng(e.latlng).setContent(link).openOn(map);
  });

  async function start() {
    const [cells, held] = await Promise.all([features("grid_cells"), getJSON("/api/grid/assignments")]);
    for (const a of held.assignments) (holders[a.cell_code] = holders[a.cell_code] || []).push(a.user_name);
    layers.cells.addData(cells);
    state.cells = cells.length;
    const own = L.featureGroup(layers.cells.getLayers().filter((l) => !mine.size || mine.has(l.feature.properties.code)));
    if (own.getLayers().length) {
      map.stop();  // folium's first view may still be animating: stop it, then fit without animation
      map.fitBounds(own.getBounds(), { animate: false });
    }
    if (config.byView) followView();
    await (config.byView ? loadView() : load());
    window.gridplan.ready = true;
  }
  start().catch((err) => status(t("Could not load: {reason}", { reason: err.message })));
})();
