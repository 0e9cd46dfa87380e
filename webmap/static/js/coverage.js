/* The coverage map: households out of reach of a facility kind (units shaded in the kind's colour,
   darker for more households), the kind's reach (rings, or the road network within the walk),
   blind spots, cell problems, facilities under standard and communities missing a kind as their
   own layers with counts in the legend; findings that fly the map to them; proposed facilities
   that change the counts at once; where to build next. Text from the database is inserted with
   textContent only. */
"use strict";
(function () {
  const { config, map, el, figures, number, getJSON, status } = window.gp;
  const csrf = document.querySelector("meta[name=csrf-token]").content;
  const KIND_COLOUR = { service_centre: "#7570b3", health_centre: "#e7298a", service_station: "#d95f02",
    health_station: "#1b9e77", kindergarten: "#e6ab02", elderly_care: "#a6761d", police_post: "#666666" };
  const FINDING_LABEL = { unit: t("Blind-spot unit"), land: t("Street land in no community"),
    gap: t("Gap between grid cells"), overlap: t("Grid cells overlap"),
    outside_community: t("Grid cell outside its community"), household_in_no_cell: t("Households in no grid cell"),
    household_in_two_cells: t("Households in two grid cells"), missing: t("Missing a required kind"),
    facility: t("Facility under the standard") };
  const PROBLEM_LABEL = { under_floor_area: t("under the floor-area standard"), overloaded: t("serves more households than the standard") };
  const kindName = (kind) => (config.kind_names || {})[kind] || kind;
  const problemText = (problem) => String(problem || "").split(",").filter(Boolean).map((p) => PROBLEM_LABEL[p] || p).join(t(", "));
  const kindsText = (kinds) => (Array.isArray(kinds) ? kinds : String(kinds || "").split(" ")).filter(Boolean).map(kindName).join(t(", "));
  const state = { report: null, row: null, proposing: false, proposed: [], counts: {}, loads: 0,
    outlinesReady: Promise.resolve(new Map()) };
  const layers = {};
  window.gridplan = { map, layers, state, ready: false };

  const colour = (kind) => KIND_COLOUR[kind] || "#b2182b";
  const REACH_COLOUR = "#2166ac";
  const scope = () => document.getElementById("scope").value;
  const row = () => config.standards[Number(document.getElementById("kind").value)];
  function params(extra) {
    const q = new URLSearchParams(extra || {});
    if (scope()) q.set("street", scope());
    return q;
  }

  function tip(rows) {
    const box = el("div");
    for (const [label, value] of rows) box.append(el("div", label + t(": ") + (value ?? "—")));
    return box;
  }

  layers.uncovered = L.geoJSON(null, {
    style: (f) => ({ color: colour(f.properties.kind), weight: 0.6, fillColor: colour(f.properties.kind),
      fillOpacity: Math.min(0.85, 0.25 + 0.6 * (f.properties.uncovered / Math.max(1, f.properties.households))) }),
    onEachFeature: (f, layer) => layer.bindTooltip(() => tip([[f.properties.level === "community" ? t("Community") : t("Unit"), f.properties.code],
      [t("Households out of reach"), number(f.properties.uncovered)],
      [t("Community"), f.properties.community_code]]), { sticky: true }),
  });
  layers.reach = L.geoJSON(null, {
    style: (f) => ({ color: REACH_COLOUR, weight: f.properties.method === "roads" ? 2.5 : 1.2,
      fill: f.properties.method !== "roads", fillOpacity: 0.06, dashArray: f.properties.method === "roads" ? null : "4 3" }),
    interactive: false,
  });
  layers.blind_spots = L.geoJSON(null, {
    pointToLayer: (f, latlng) => L.circleMarker(latlng, { radius: 6, color: "#b2182b", weight: 2, fillOpacity: 0.55 }),
    style: (f) => ({ color: "#b2182b", weight: 2, fillColor: "#b2182b",
      fillOpacity: f.properties.kind === "unit" ? 0.55 : 0.25, dashArray: f.properties.kind === "land" ? "5 4" : null }),
    onEachFeature: (f, layer) => layer.bindTooltip(() => tip([[FINDING_LABEL[f.properties.kind], f.properties.code],
      [t("Households"), number(f.properties.households)], [t("Area m²"), number(f.properties.area_m2)]])),
  });
  const pointLayer = (fill, rows) => L.geoJSON(null, {
    pointToLayer: (f, latlng) => L.circleMarker(latlng, { radius: 7, color: "#fff", weight: 1.5, fillColor: fill, fillOpacity: 0.95 }),
    onEachFeature: (f, layer) => layer.bindTooltip(() => tip(rows(f.properties))),
  });
  layers.cell_problems = pointLayer("#e6550d", (p) => [[FINDING_LABEL[p.kind] || p.kind, p.codes],
    [t("Area m²"), number(p.area_m2)]]);
  layers.facility_problems = pointLayer("#542788", (p) => [[t("Facility"), p.name], [t("Problem"), problemText(p.problem)],
    [t("Floor area m²"), number(p.floor_area_m2)], [t("Required m²"), number(p.required_floor_area_m2)],
    [t("Households served"), number(p.households_served)]]);
  layers.missing = L.geoJSON(null, {
    style: { color: "#542788", weight: 2.5, dashArray: "2 4", fill: false },
    pointToLayer: (f, latlng) => L.circleMarker(latlng, { radius: 7, color: "#542788", weight: 2.5, dashArray: "2 3", fill: false }),
    onEachFeature: (f, layer) => layer.bindTooltip(() => tip([[t("Community"), f.properties.name],
      [t("Missing"), kindsText(f.properties.kinds)]])),
  });
  // the boundaries, drawn at once (before anything is computed) so the map is never empty
  layers.communities = L.geoJSON(null, { style: { color: "#555", weight: 1.4, fill: false }, interactive: false });
  layers.communities.addTo(map);
  layers.proposed = L.layerGroup();
  layers.sites = L.layerGroup();

  const TITLES = { uncovered: t("Households out of reach"), reach: t("Reach"),
    blind_spots: t("Blind spots"), cell_problems: t("Grid cell problems"),
    facility_problems: t("Facilities under the standard"), missing: t("Communities missing a kind"),
    proposed: t("Proposed"), sites: t("Chosen sites") };
  L.control.layers(null, Object.fromEntries(Object.entries(TITLES).map(([k, t]) => [t, layers[k]])),
    { collapsed: true }).addTo(map);
  for (const name of Object.keys(TITLES)) layers[name].addTo(map);

  const legend = L.control({ position: "bottomleft" });
  legend.onAdd = () => { const box = el("div", null, { class: "legend", id: "coverage-legend" }); return box; };
  legend.addTo(map);
  function drawLegend() {
    const box = document.getElementById("coverage-legend");
    box.replaceChildren(el("strong", t("Legend")));
    const entry = (swatch, label, count) => {
      const line = el("div");
      const i = el("i");
      Object.assign(i.style, swatch);
      line.append(i, label);
      if (count !== undefined) line.append(el("span", number(count), { class: "count" }));
      box.append(line);
    };
    const r = row();
    entry({ background: colour(r.kind), opacity: 0.7 }, t("Households beyond {m} m of a {kind}", { kind: r.name, m: number(r.radius) }),
      state.counts.uncovered_households);
    entry({ border: `2px ${config.roads ? "solid" : "dashed"} ${REACH_COLOUR}` }, state.counts.reach_by_street
      ? t("Reach: choose a street to draw it") : config.roads ? t("Walk along the roads") : t("Reach ring"), state.counts.reach);
    entry({ background: "#b2182b" }, t("Blind-spot units"), state.counts.blind_units);
    entry({ border: "2px dashed #b2182b" }, t("Land in no community"), state.counts.blind_land);
    entry({ background: "#e6550d", borderRadius: "50%" }, t("Grid cell problems"), state.counts.cell_problems);
    entry({ background: "#542788", borderRadius: "50%" }, t("Facilities under the standard"), state.counts.facility_problems);
    entry({ border: "2px dashed #542788" }, t("Communities missing a kind"), state.counts.missing);
  }

  /* A gap layer for the view (bbox, simplified for the zoom); a layer that is off is not asked
     for. The totals in its properties are the server's, for the whole scope. */
  function viewParams(extra) {
    const q = params(extra);
    q.set("bbox", window.gp.bboxParam());
    q.set("zoom", String(map.getZoom()));
    return q;
  }
  const WITH_KIND = new Set(["uncovered", "reach"]);
  function kindParams() { const r = row(); return { kind: r.kind, radius: String(r.radius) }; }
  const shownFrom = {};  // layer → the address of what it shows (a view asked again is not fetched)
  async function layer(name) {
    if (!map.hasLayer(layers[name])) return null;
    const extra = WITH_KIND.has(name) ? kindParams() : {};
    if (name === "uncovered") extra.outlines = "page";  // a city's shading is drawn on the outlines
    const url = `/api/coverage/layers/${name}?${viewParams(extra)}`;
    if (shownFrom[name] && shownFrom[name].url === url) return shownFrom[name].data;
    const data = await getJSON(url);
    if (data.job) return null;  // still being computed: load() follows the job
    if (data.features.some((f) => !f.geometry)) {
      // the communities' figures came without outlines: the ones the page drew are theirs
      const outlines = await state.outlinesReady;
      data.features = data.features.filter((f) => f.geometry || outlines.has(f.properties.code))
        .map((f) => (f.geometry ? f : { ...f, geometry: outlines.get(f.properties.code).geometry }));
    }
    shownFrom[name] = { url, data };
    layers[name].clearLayers();
    layers[name].addData(data);
    state.loads += 1;
    window.gridplan.layerLoads = state.loads;
    return data;
  }
  async function viewLayers() {
    await Promise.all(Object.keys(TITLES).filter((n) => n !== "proposed" && n !== "sites").map(layer));
    for (const name of ["missing", "blind_spots", "cell_problems", "facility_problems"]) layers[name].bringToFront();
  }
  let moveTimer = null;
  map.on("moveend", () => {
    if (!state.report) return;
    clearTimeout(moveTimer);
    moveTimer = setTimeout(() => viewLayers().catch((err) => status(t("Failed: {reason}", { reason: err.message }))), 250);
  });
  map.on("overlayadd", (e) => {
    const name = Object.keys(layers).find((k) => layers[k] === e.layer);
    if (name && state.report) layer(name).catch((err) => status(t("Failed: {reason}", { reason: err.message })));
  });

  /* The report; a city's is computed by the worker: its progress is shown until it is done. */
  async function fetchReport() {
    for (;;) {
      const answer = await getJSON(`/api/coverage/report?${params()}`);
      if (!answer.job) return answer;
      for (let asked = 0; ; asked++) {
        const job = await getJSON(answer.url);
        if (job.status === "failed") throw new Error(job.message || t("the computation failed"));
        if (job.status === "done") break;
        status(t("Computing the coverage in the background… {share}", { share: gpLocale.percent(job.progress || 0, 0) }));
        // asked often at first (a kept model answers in a second or two), then every 1.5 s
        await new Promise((resolve) => setTimeout(resolve, Math.min(1500, 250 * (asked + 1))));
      }
    }
  }

  // where a blind spot lies in words, beside its code: its street, the nearest community, a road
  function placeText(f) {
    const parts = [];
    if (f.street_name) parts.push(f.street_name);
    if (f.near_community_name || f.near_community) parts.push(t("near {community}", { community: f.near_community_name || f.near_community }));
    if (f.road_name) parts.push(t("by {road}", { road: f.road_name }));
    return parts.length ? ` ${parts.join(" · ")}` : "";
  }

  function findingsList(report, fixed) {
    const list = document.getElementById("findings");
    list.replaceChildren();
    const items = [];
    for (const f of report.blind_spots.findings) items.push([f.kind, `${f.codes.join(" ")}${placeText(f)}${f.households ? " · " + t("{n} households", { n: number(f.households) }) : ""}${f.area_m2 ? ` · ${number(Math.round(f.area_m2))} m²` : ""}`, f]);
    // each cell or unit by its name beside its code (a cell as /rates names it, a unit by its community)
    for (const f of report.cell_problems.findings) items.push([f.kind, f.codes.map((c, i) => (f.names && f.names[i] && f.names[i] !== c ? `${f.names[i]} ${c}` : c)).join(" · "), f]);
    for (const m of report.missing) items.push(["missing", `${m.name} ${m.community}` + t(": ") + kindsText(m.kinds), m]);
    for (const f of report.facilities) items.push(["facility", t("{name} {kind} ({problem})", { name: f.name, kind: kindName(f.kind), problem: problemText(f.problem) }), f]);
    for (const [kind, text, f] of items.slice(0, 500)) {
      const li = el("li", (FINDING_LABEL[kind] || kind) + t(": ") + text, { "data-kind": kind });
      li.addEventListener("click", () => map.flyTo([f.lat, f.lon], 17, { duration: 0.5 }));
      list.append(li);
    }
    if (fixed) fixed.textContent = `${items.length}`;
  }

  function showFigures() {
    const report = state.report;
    const r = row();
    const entry = report.reach.find((x) => x.kind === r.kind && x.radius_m === r.radius);
    const share = entry ? entry.share : null;
    figures(document.getElementById("coverage-figures"), [
      [t("Distance"), report.method === "roads" ? t("walking along the roads") : t("straight-line")],
      [t("Households"), number(report.households)],
      [t("Within {m} m of a {kind}", { kind: r.name, m: number(r.radius) }), entry ? number(entry.households_covered) : "—"],
      [t("Share"), share === null ? "—" : gpLocale.percent(share), share !== null && share < 0.8 ? "low" : ""],
      [t("Communities missing a kind"), number(report.missing.length)],
      [t("Blind-spot households"), number(report.blind_spots.households)],
      [t("Grid cell findings"), number(report.cell_problems.findings.length)],
    ]);
  }

  /* The counts of the legend: the server's, for the whole scope, never what the view holds. */
  async function kindCounts() {
    const r = row();
    const entry = state.report.reach.find((x) => x.kind === r.kind && x.radius_m === r.radius);
    state.counts.uncovered_households = entry ? entry.households - entry.households_covered : null;
    const [uncovered, reach] = await Promise.all([layer("uncovered"), layer("reach")]);
    if (uncovered) state.counts.uncovered_households = uncovered.properties.totals.uncovered;
    state.counts.reach = reach ? reach.properties.totals.features : undefined;
    state.counts.reach_by_street = Boolean(reach && reach.properties.totals.by_street);
  }

  async function loadKind() {
    await kindCounts();
    // the problems stay on top of the shading
    for (const name of ["missing", "blind_spots", "cell_problems", "facility_problems"]) layers[name].bringToFront();
    showFigures();
    drawLegend();
    clearProposal();
  }

  /* The communities' outlines, asked for at one zoom whatever the view (so that every open asks
     the same address and the browser's copy serves: a 304), kept by code: a city seen whole is
     shaded on them, its figures sent without outlines. */
  const OUTLINE_ZOOM = "13";
  async function boundaries() {
    const shown = await window.gp.features("communities", { zoom: OUTLINE_ZOOM });
    layers.communities.clearLayers();
    layers.communities.addData(shown);
    layers.communities.bringToBack();
    return new Map(shown.map((f) => [f.properties.code, f]));
  }

  async function load() {
    status(t("Computing…"));
    const outlines = boundaries().catch(() => new Map());  // drawn while the report is computed
    state.outlinesReady = outlines;
    const report = await fetchReport();
    state.report = report;
    state.counts.blind_units = report.blind_spots.units;
    state.counts.blind_land = report.blind_spots.land_parts;
    state.counts.cell_problems = report.cell_problems.findings.length;
    state.counts.facility_problems = report.facilities.length;
    state.counts.missing = report.missing.length;
    findingsList(report);
    await Promise.all([layer("blind_spots"), layer("cell_problems"), layer("facility_problems"), layer("missing")]);
    await loadKind();
    await outlines;
    document.getElementById("report-link").href = `/coverage/report?${params()}`;
    exportsLinks();
    status(t("{n} households; {standards} standards checked", { n: number(report.households), standards: number(report.reach.length) }));
  }

  function exportsLinks() {
    const box = document.getElementById("exports");
    box.replaceChildren();
    const r = row();
    for (const name of ["uncovered", "blind_spots", "cell_problems", "facility_problems", "missing", "reach"]) {
      const line = el("div", `${TITLES[name]}: `);
      for (const f of ["shp", "gpkg", "csv"]) {
        const q = params({ f });
        if (name === "uncovered" || name === "reach") { q.set("kind", r.kind); q.set("radius", String(r.radius)); }
        line.append(el("a", f === "shp" ? "Shapefile" : f === "gpkg" ? "GeoPackage" : "CSV",
          { href: `/api/coverage/layers/${name}?${q}`, download: "" }));
      }
      box.append(line);
    }
  }

  // --- proposed facilities -----------------------------------------------------------------------
  function clearProposal() {
    state.proposed = [];
    layers.proposed.clearLayers();
    document.getElementById("proposal-result").textContent = t("Press the button, then click on the map where the facility would go.");
  }
  async function post(url, body) {
    const response = await fetch(url, { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(body) });
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }  // a proxy's error page is not JSON
    if (!response.ok || data === null) throw new Error((data && data.detail) || t("the server answered {status}", { status: response.status }));
    return data;
  }
  document.getElementById("propose").addEventListener("click", () => {
    state.proposing = !state.proposing;
    document.getElementById("propose").textContent = state.proposing ? t("Stop") : t("Click the map");
    map.getContainer().style.cursor = state.proposing ? "crosshair" : "";
  });
  document.getElementById("propose-clear").addEventListener("click", clearProposal);
  map.on("click", async (e) => {
    if (!state.proposing) return;
    const r = row();
    state.proposed.push({ lon: e.latlng.lng, lat: e.latlng.lat });
    L.marker(e.latlng, { icon: L.divIcon({ className: "proposed-marker", html: el("span", "+"), iconSize: [18, 18] }) })
      .addTo(layers.proposed);
    const out = document.getElementById("proposal-result");
    out.textContent = t("Computing…");
    try {
      const change = await post("/api/coverage/proposal", { kind: r.kind, radius: r.radius, sites: state.proposed,
        street: scope() || null });
      state.proposal = change;
      out.textContent = t("{n} proposed {kind}: {before} → {after} households within {m} m (+{added}; {share})", { n: number(state.proposed.length),
        kind: r.name, before: number(change.households_covered_before), after: number(change.households_covered_after),
        m: number(r.radius), added: number(change.households_added),
        share: gpLocale.percent(change.households_covered_after / Math.max(1, change.households)) });
      layers.uncovered.eachLayer((l) => {
        const gained = change.units_gained[l.feature.properties.code];
        if (gained) l.setStyle({ fillColor: "#1a9850", color: "#1a9850" });
      });
    } catch (err) { out.textContent = t("Failed: {reason}", { reason: err.message }); }
  });

  // --- where to build next -----------------------------------------------------------------------
  document.getElementById("sites-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const r = row();
    const box = document.getElementById("sites-result");
    box.replaceChildren(el("p", t("Computing…")));
    layers.sites.clearLayers();
    try {
      const answer = await post("/api/coverage/sites", { kind: r.kind, radius: r.radius,
        k: Number(document.getElementById("sites-k").value), solver: document.getElementById("sites-solver").value,
        street: scope() || null });
      if (!answer.job) { showSites(answer, box); return; }
      // a city: the worker chooses; its greedy answer is shown as soon as it is found
      for (let asked = 0; ; asked++) {
        const job = await window.gp.getJSON(answer.url);
        if (job.status === "failed") throw new Error(job.message || t("the computation failed"));
        if (job.sites) showSites(job.sites, box); else box.replaceChildren();
        if (job.status === "done") return;
        box.append(el("p", `${job.message || t("Computing…")} · ${gpLocale.percent(job.progress || 0, 0)}`, { class: "muted" }));
        // asked often at first (a kept model answers in a second or two), then every 1.5 s
        await new Promise((resolve) => setTimeout(resolve, Math.min(1500, 250 * (asked + 1))));
      }
    } catch (err) { box.replaceChildren(el("p", t("Failed: {reason}", { reason: err.message }))); }
  });

  function showSites(data, box) {
    {
      layers.sites.clearLayers();
      state.sites = data;
      const p = data.properties;
      box.replaceChildren(el("p", (p.optimal ? t("proven optimal") : t("bound {bound} (gap {gap})", { bound: number(p.bound_households_added), gap: gpLocale.percent(p.gap, 2) })) +
        " · " + t("+{added} households → {after} / {total}", { added: number(p.households_added), after: number(p.households_covered_after), total: number(p.households) })));
      const table = el("table", null, { id: "sites-table" });
      const head = el("tr");
      for (const h of ["#", t("Site"), t("Added"), t("Covered so far")]) head.append(el("th", h));
      table.append(head);
      for (const f of data.features) {
        const q = f.properties;
        const tr = el("tr");
        // where the site lies in words beside its unit's code: community, street, the road it is by
        const place = [q.community_name, q.street_name, q.road_name ? t("by {road}", { road: q.road_name }) : null].filter(Boolean).join(" · ");
        const where = el("td", null, { class: "site-place" });
        if (place) where.append(el("span", place), el("br"));
        where.append(el("span", q.code, { class: "muted" }));
        tr.append(el("td", q.order), where, el("td", number(q.households_added)),
          el("td", number(q.households_covered_after)));
        tr.addEventListener("click", () => map.flyTo([f.geometry.coordinates[1], f.geometry.coordinates[0]], 17));
        table.append(tr);
        L.marker([f.geometry.coordinates[1], f.geometry.coordinates[0]], { icon: L.divIcon({ className: "site-marker",
          html: el("span", q.order), iconSize: [22, 22] }) }).addTo(layers.sites)
          .bindTooltip(() => tip([[t("Site"), q.order], [t("Households added"), number(q.households_added)]]));
      }
      box.append(table);
      if (data.stage === "greedy") box.append(el("p", t("First answer (greedy); the exact solver is still proving it…"), { class: "muted" }));
    }
  }

  // --- controls ------------------------------------------------------------------------------------
  const scopeSelect = document.getElementById("scope");
  for (const s of config.streets) scopeSelect.append(el("option", `${s.name} · ${s.code}`, { value: s.code }));
  const cityView = map.getBounds();
  // a street chosen: the map goes to it (the whole city: back to where the page opened)
  scopeSelect.addEventListener("change", () => {
    const street = config.streets.find((s) => s.code === scopeSelect.value);
    if (street && street.bbox) map.fitBounds([[street.bbox[1], street.bbox[0]], [street.bbox[3], street.bbox[2]]], { animate: false });
    else map.fitBounds(cityView, { animate: false });
  });
  const kindSelect = document.getElementById("kind");
  config.standards.forEach((r, i) => kindSelect.append(el("option", `${r.name} · ${r.level} · ${r.radius} m`, { value: String(i) })));
  kindSelect.addEventListener("change", () => loadKind().then(exportsLinks).catch((err) => status(t("Failed: {reason}", { reason: err.message }))));
  scopeSelect.addEventListener("change", () => load().catch((err) => status(t("Failed: {reason}", { reason: err.message }))));

  load().then(() => { window.gridplan.ready = true; window.gridplan.readyAt = performance.now(); })
    .catch((err) => { status(t("Could not load: {reason}", { reason: err.message })); window.gridplan.ready = true; });
})();
