/* The planner's map: communities coloured by households in ColorBrewer classes (outlines tell
   too few from too many), streets, planning units (loaded by bounding box when zoomed in),
   facilities (clustered), grid cells (quiet lines, not warnings) and blind spots; search that
   selects what it finds; a side panel with the selected community or street and a histogram
   whose bars select the communities they count. */
"use strict";
(function () {
  const { config, map, el, figures, number, features, bboxParam, status } = window.gp;
  const [MIN, MAX] = config.bounds;
  // ColorBrewer YlGnBu, 5 classes: each class told apart from its neighbours and from the background
  const RAMP = ["#ffffcc", "#a1dab4", "#41b6c4", "#2c7fb8", "#253494"];
  // community outlines are drawn over the units and clearly heavier than them (units: 0.5 px)
  const OUTLINE = { below: { color: "#2166ac", weight: 3, dashArray: "7 5" }, above: { color: "#b2182b", weight: 3.5, dashArray: null },
    within: { color: "#333", weight: 2.5, dashArray: null } };
  const UNIT_LINE = { color: "#8c8c8c", weight: 0.5 };
  const LABEL_ZOOM = 14;
  const BREAKS = [MIN * 0.5, MIN, (MIN + MAX) / 2, MAX];
  // each kind of facility's one-letter marker (translators: one character each)
  const KIND_LETTER = { service_centre: t("marker: service centre"), service_station: t("marker: service station"),
    health_centre: t("marker: health centre"), health_station: t("marker: health station"),
    kindergarten: t("marker: kindergarten"), elderly_care: t("marker: elderly care"), police_post: t("marker: police post") };
  const state = { communities: new Map(), streets: new Map(), selected: null, unitsLoaded: 0, street: null,
    highlighted: new Set() };
  const layers = {};
  window.gridplan = { map, layers, state, ready: false };

  function colour(households) {
    let i = 0;
    while (i < BREAKS.length && households > BREAKS[i]) i++;
    return RAMP[i];
  }

  function tooltip(rows) {
    const box = el("div");
    for (const [label, value] of rows) box.append(el("div", `${label}: ${value}`));
    return box;
  }

  function communityRows(p) {
    return [[t("Name"), p.name], [t("Code"), p.provisional ? t("{code} (provisional)", { code: p.code }) : p.code],
      [t("Households"), number(p.households)],
      [t("Population"), number(p.population)], [t("Area"), `${gpLocale.number(p.area_m2 / 1e6, 3)} km²`]];
  }

  const flagged = (p) => p.bounds_status !== "within";
  // a street by its name beside its code
  const streetName = (p) => (p.street_name ? `${p.street_name} ${p.street_code}` : p.street_code);

  // a community is drawn twice: its fill under the units (it takes the clicks and tooltips), its
  // outline above them in a pane of its own, so units never draw over a community's boundary
  function communityStyle(f) {
    return { stroke: false, fillColor: colour(f.properties.households), fillOpacity: 0.7 };
  }
  function outlineStyle(f) {
    const p = f.properties;
    const look = OUTLINE[p.bounds_status] || OUTLINE.within;
    const chosen = p.code === state.selected, lit = state.highlighted.has(p.code);
    return { color: chosen || lit ? "#000" : look.color, weight: chosen ? 4.5 : lit ? 3.5 : look.weight,
      dashArray: chosen || lit ? null : look.dashArray, fill: false, opacity: 1 };
  }
  const outlinePane = map.createPane("communityOutlines");
  outlinePane.style.zIndex = 420;
  outlinePane.style.pointerEvents = "none";
  layers.outlines = L.geoJSON(null, { pane: "communityOutlines", renderer: L.svg({ pane: "communityOutlines" }),
    interactive: false, style: outlineStyle,
    onEachFeature: (f, layer) => { const entry = state.communities.get(f.properties.code); if (entry) entry.outline = layer; } });
  layers.communities = L.geoJSON(null, {
    style: communityStyle,
    onEachFeature: (f, layer) => {
      state.communities.set(f.properties.code, { feature: f, layer, label: labelPoint(layer) });
      layer.bindTooltip(() => tooltip(communityRows(f.properties)), { sticky: true });
      layer.bindPopup(() => tooltip(communityRows(f.properties).concat([
        [t("Street"), streetName(f.properties)], [t("Units"), number(f.properties.units)]])));
      // the popup takes the tooltip's place: never one on top of the other
      layer.on("popupopen", () => layer.closeTooltip());
      layer.on("tooltipopen", () => { if (layer.isPopupOpen()) layer.closeTooltip(); });
      layer.on("click", () => select(f.properties.code));
    },
  });
  function restyleCommunities() { layers.outlines.eachLayer((l) => l.setStyle(outlineStyle(l.feature))); }
  layers.communityGroup = L.layerGroup([layers.communities, layers.outlines]);

  /* Where a community's name stands: on its widest stretch across the middle of its largest
     ring (inside it, unlike the centre of a crescent). */
  function labelPoint(layer) {
    const rings = [];
    (function walk(x) { if (x.length && x[0] instanceof L.LatLng) rings.push(x); else for (const y of x) walk(y); })(layer.getLatLngs());
    if (!rings.length) return null;
    const area = (r) => Math.abs(r.reduce((a, p, i) => { const q = r[(i + 1) % r.length]; return a + p.lng * q.lat - q.lng * p.lat; }, 0));
    const outer = rings.reduce((a, b) => (area(b) > area(a) ? b : a));
    const box = L.latLngBounds(outer);
    const y = box.getCenter().lat;
    const xs = [];
    for (const ring of rings) {
      if (!box.intersects(L.latLngBounds(ring))) continue;
      for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
        const a = ring[j], b = ring[i];
        if ((a.lat > y) !== (b.lat > y)) xs.push(a.lng + ((y - a.lat) * (b.lng - a.lng)) / (b.lat - a.lat));
      }
    }
    xs.sort((a, b) => a - b);
    let best = null;
    for (let i = 0; i + 1 < xs.length; i += 2) if (!best || xs[i + 1] - xs[i] > best[1] - best[0]) best = [xs[i], xs[i + 1]];
    return best ? L.latLng(y, (best[0] + best[1]) / 2) : box.getCenter();
  }
  // a street boundary is a broad grey band under the community outline that runs along it: the
  // hierarchy reads street > community > unit without a fourth line weight
  const streetPane = map.createPane("streetLines");
  streetPane.style.zIndex = 418;
  streetPane.style.pointerEvents = "none";
  layers.streets = L.geoJSON(null, {
    pane: "streetLines",
    style: (f) => (f.properties.code === state.street ? { color: "#000", weight: 5, opacity: 1, fill: false }
      : { color: "#555", weight: 6, opacity: 0.45, fill: false }),
    interactive: false,
    onEachFeature: (f) => state.streets.set(f.properties.code, f),
  });
  layers.units = L.geoJSON(null, {
    style: (f) => ({ ...UNIT_LINE, fillOpacity: f.properties.land_use === "water" ? 0.5 : 0.05,
      fillColor: f.properties.land_use === "water" ? "#74a9cf" : "#fff" }),
    onEachFeature: (f, layer) => {
      layer.bindTooltip(() => tooltip([[t("Unit"), f.properties.code],
        [t("Households"), number(f.properties.households)], [t("Community"), f.properties.community_code || "—"]]
        .concat(f.properties.households_source ? [[t("Households estimated from"), f.properties.households_source]] : [])));
      // units lie on top of their community: a click on one selects the community it belongs to
      layer.on("click", () => select(f.properties.community_code));
    },
  });
  layers.grid_cells = L.geoJSON(null, {
    // quiet dotted lines: cells are a reference, not a warning
    style: { color: "#756bb1", weight: 0.8, opacity: 0.8, dashArray: "2 3", fill: false },
    onEachFeature: (f, layer) => layer.bindTooltip(() => tooltip([[t("Grid cell"), f.properties.code],
      [t("Grid supervisor"), f.properties.supervisor || "—"]])),
  });
  layers.blind_spots = L.geoJSON(null, {
    style: { color: "#d7191c", weight: 2, fillColor: "#d7191c", fillOpacity: 0.55 },
    onEachFeature: (f, layer) => layer.bindTooltip(() => tooltip([[t("Blind spot"), f.properties.code],
      [t("Households"), number(f.properties.households)], [t("Built"), f.properties.built_year]])),
  });
  const facilityPoints = L.geoJSON(null, {
    pointToLayer: (f, latlng) => L.marker(latlng, { icon: L.divIcon({
      className: `fac fac-${f.properties.kind}`, html: el("span", KIND_LETTER[f.properties.kind] || "?"),
      iconSize: [16, 16] }) }),
    onEachFeature: (f, layer) => layer.bindTooltip(() => tooltip([[t("Facility"), f.properties.name],
      [t("Kind"), config.facilityKinds[f.properties.kind] || f.properties.kind],
      [t("Floor area"), `${number(f.properties.floor_area_m2)} m²`]].concat(
        f.properties.location_precision === "approximate" ? [[t("Location"), t("approximate")]] : []))),
  });
  // overlaps, gaps inside streets and parts outside the street (flask topology communities)
  const TOPOLOGY = { overlap: "#e66101", gap: "#5e3c99", outside_street: "#b2182b" };
  layers.topology = L.geoJSON(null, {
    style: (f) => ({ color: TOPOLOGY[f.properties.kind] || "#000", weight: 2, fillOpacity: 0.6 }),
    onEachFeature: (f, layer) => layer.bindTooltip(() => tooltip([[t("Topology problem"), f.properties.kind],
      [t("Codes"), f.properties.codes], [t("Area"), `${number(f.properties.area_m2)} m²`]])),
  });
  // facilities clustered: hundreds of markers would hide the communities they sit in
  layers.facilities = L.markerClusterGroup ? L.markerClusterGroup({ maxClusterRadius: 50, showCoverageOnHover: false,
    disableClusteringAtZoom: 17,
    // small neutral counts: a cluster is a place to zoom into, not an alarm
    iconCreateFunction: (cluster) => L.divIcon({ className: "fac-cluster", iconSize: [22, 22],
      html: el("span", String(cluster.getChildCount())) }) }) : L.layerGroup();

  // community names from zoom 14, the largest communities first, none over another
  layers.labels = L.layerGroup();
  window.gp.addLabels({ group: layers.labels, minZoom: LABEL_ZOOM, priority: 0, max: 300, entries: () => {
    if (!map.hasLayer(layers.communityGroup)) return [];
    return [...state.communities.values()].filter((e) => e.label)
      .sort((a, b) => (b.feature.properties.area_m2 || 0) - (a.feature.properties.area_m2 || 0))
      .map((e) => ({ latlng: e.label, text: e.feature.properties.name || e.feature.properties.code,
        className: `community-label ${e.feature.properties.bounds_status || ""}` }));
  } });

  const overlays = {
    [t("Communities")]: layers.communityGroup, [t("Community names")]: layers.labels, [t("Streets")]: layers.streets,
    [t("Planning units (zoom ≥ 15)")]: layers.units, [t("Facilities")]: layers.facilities,
    [t("Grid cells")]: layers.grid_cells, [t("Blind spots")]: layers.blind_spots,
    [t("Topology problems")]: layers.topology,
  };
  if (window.gp.base.group) overlays[t("Roads and water")] = window.gp.base.group;
  L.control.layers(null, overlays, { collapsed: false }).addTo(map);
  for (const name of ["communityGroup", "labels", "streets", "units", "facilities", "blind_spots"]) layers[name].addTo(map);
  layers.facilities.addLayer(facilityPoints);

  window.gp.legend(t("Legend"), (box) => {
    box.append(el("strong", t("Households")));
    const labels = [`< ${BREAKS[0]}`, `${BREAKS[0]}–${BREAKS[1]}`, `${BREAKS[1]}–${BREAKS[2]}`,
      `${BREAKS[2]}–${BREAKS[3]}`, `> ${BREAKS[3]}`];
    RAMP.forEach((c, i) => { const row = el("div"); const sw = el("i"); sw.style.background = c;
      row.append(sw, labels[i]); box.append(row); });
    const few = el("div"); const sf = el("i"); sf.style.border = "3px dashed #2166ac"; few.append(sf,
      t("below {n} households", { n: number(MIN) })); box.append(few);
    const many = el("div"); const sm = el("i"); sm.style.border = "3px solid #b2182b"; many.append(sm,
      t("above {n} households", { n: number(MAX) })); box.append(many);
    const blind = el("div"); const sb = el("i"); sb.style.background = "#d7191c"; blind.append(sb, t("Blind spot"));
    box.append(blind);
    for (const [kind, letter] of Object.entries(KIND_LETTER)) {
      const row = el("div"); const icon = el("span", letter, { class: `fac fac-${kind}` });
      icon.style.cssText = "display:inline-block;width:18px;height:18px;line-height:18px;margin-right:4px";
      row.append(icon, config.facilityKinds[kind] || kind); box.append(row);
    }
  });

  function select(code) {
    const entry = state.communities.get(code);
    if (!entry) return;
    const p = entry.feature.properties;
    state.selected = code;
    state.street = null;
    layers.streets.setStyle(layers.streets.options.style);
    restyleCommunities();
    entry.layer.bringToFront();
    if (entry.outline) entry.outline.bringToFront();
    window.gridplan.selected = code;
    document.getElementById("selected").hidden = false;
    document.getElementById("selected-name").textContent = p.name;
    const flag = p.bounds_status === "within" ? t("within the bounds") :
      (p.bounds_status === "above" ? t("above the maximum {n}", { n: number(MAX) }) : t("below the minimum {n}", { n: number(MIN) }));
    figures(document.getElementById("selected-figures"), [
      [t("Code"), p.code], [t("Street"), streetName(p)],
      [t("Households"), number(p.households), p.bounds_status === "within" ? "" : `flag-${p.bounds_status}`],
      [t("Population"), number(p.population)], [t("Area"), `${gpLocale.number(p.area_m2 / 1e6, 3)} km²`],
      [t("Units"), number(p.units)], [t("Size"), flag],
    ]);
    const street = document.getElementById("show-street");
    street.disabled = false;
    street.dataset.street = p.street_code;
    document.getElementById("grid-link").href = `/grid?community=${encodeURIComponent(code)}`;
    histogram(p.street_code);
  }

  /* A street found by search (or chosen): outlined, its figures in the panel, its histogram. */
  function selectStreet(code) {
    const f = state.streets.get(code);
    if (!f) return;
    state.street = code;
    state.selected = null;
    restyleCommunities();
    layers.streets.setStyle(layers.streets.options.style);
    const mine = [...state.communities.values()].map((e) => e.feature.properties).filter((p) => p.street_code === code);
    const households = mine.reduce((n, p) => n + (p.households || 0), 0);
    document.getElementById("selected").hidden = false;
    document.getElementById("selected-name").textContent = f.properties.name || code;
    figures(document.getElementById("selected-figures"), [
      [t("Code"), code], [t("Communities"), number(mine.length)], [t("Households"), number(households)],
      [t("Outside the bounds"), number(mine.filter(flagged).length), mine.some(flagged) ? "flag-above" : ""]]);
    const street = document.getElementById("show-street");
    street.disabled = false;
    street.dataset.street = code;
    document.getElementById("grid-link").href = `/grid?street=${encodeURIComponent(code)}`;
    window.gridplan.street = code;
    histogram(code);
  }

  let chart = null;
  async function histogram(street) {
    const data = await window.gp.getJSON(`/api/stats/households${street ? `?street=${street}` : ""}`);
    const values = data.communities.map((c) => c.households);
    const width = 250;
    const top = Math.max(MAX + width, ...values);
    const bins = [];
    for (let lo = 0; lo < top; lo += width) bins.push({ lo, hi: lo + width, n: 0, codes: [] });
    for (const c of data.communities) {
      const bin = bins[Math.min(bins.length - 1, Math.floor(c.households / width))];
      bin.n += 1;
      bin.codes.push(c.code);
    }
    const name = street ? (state.streets.get(street)?.properties.name || street) : t("whole district");
    document.getElementById("histogram-scope").textContent = name;
    const mineAt = state.selected ? bins.findIndex((b) => b.codes.includes(state.selected)) : -1;
    const chartData = {
      labels: bins.map((b) => `${b.lo}–${b.hi}`),
      datasets: [{ label: t("Communities"), data: bins.map((b) => b.n),
        backgroundColor: bins.map((b) => (b.hi <= MIN ? "#2166ac" : b.lo >= MAX ? "#b2182b" : "#41b6c4")),
        // the bar that counts the selected community is marked
        borderColor: bins.map((b, i) => (i === mineAt ? "#000" : "transparent")),
        borderWidth: bins.map((b, i) => (i === mineAt ? 3 : 0)) }],
    };
    state.bins = bins;
    if (chart) { chart.data = chartData; chart.update(); } else {
      chart = new Chart(document.getElementById("histogram"), { type: "bar", data: chartData,
        options: { animation: false, plugins: { legend: { display: false } },
          onClick: (event, elements) => { if (elements.length) highlightBin(elements[0].index); },
          onHover: (event, elements) => { event.native.target.style.cursor = elements.length ? "pointer" : ""; },
          scales: { x: { title: { display: true, text: t("Households") } },
            y: { beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: t("Communities") } } } } });
    }
    window.gridplan.histogram = { scope: street || null, bins: bins.map((b) => b.n), marked: mineAt };
  }

  /* A histogram bar selects the communities it counts: outlined on the map, listed in the panel. */
  function highlightBin(index) {
    const bin = state.bins[index];
    state.highlighted = new Set(bin.codes);
    restyleCommunities();
    const list = document.getElementById("bin-communities");
    list.hidden = false;
    list.replaceChildren(el("li", t("{lo}–{hi} households: {n} communities", { lo: number(bin.lo), hi: number(bin.hi), n: number(bin.n) }), { class: "muted" }),
      ...[...state.highlighted].map((code) => {
        const p = state.communities.get(code)?.feature.properties;
        const item = el("li", `${p ? p.name : code} · ${number(p?.households)}`, { "data-code": code });
        item.addEventListener("click", () => { select(code); frame(code); });
        return item;
      }));
    const bounds = L.featureGroup([...state.highlighted].map((c) => state.communities.get(c)?.layer).filter(Boolean));
    if (bounds.getLayers().length) map.fitBounds(bounds.getBounds(), { maxZoom: 16, animate: false });
    window.gridplan.highlighted = [...state.highlighted];
  }
  window.gridplan.highlightBin = highlightBin;
  function frame(code) {
    const entry = state.communities.get(code);
    if (entry) map.fitBounds(entry.layer.getBounds(), { maxZoom: 17, animate: false });
  }
  document.getElementById("show-district").addEventListener("click", () => histogram(null));
  document.getElementById("show-street").addEventListener("click", (e) => histogram(e.target.dataset.street));

  document.getElementById("search").addEventListener("submit", async (event) => {
    event.preventDefault();
    const q = document.getElementById("search-q").value.trim();
    const list = document.getElementById("search-results");
    list.replaceChildren();
    if (!q) return;
    const data = await window.gp.getJSON(`/api/search?q=${encodeURIComponent(q)}`);
    if (!data.results.length) list.append(el("li", t("Nothing found")));
    for (const r of data.results) {
      const item = el("li", `${r.name} (${r.code})`, { "data-code": r.code });
      item.addEventListener("click", () => {
        map.flyToBounds([[r.bbox[1], r.bbox[0]], [r.bbox[3], r.bbox[2]]], { duration: 0.5 });
        if (r.layer === "communities") select(r.code); else if (r.layer === "streets") selectStreet(r.code);
      });
      list.append(item);
    }
  });

  // grid cells are a layer most planners leave off: fetched the first time it is switched on,
  // never before (a city's cells are over a megabyte)
  state.gridCells = "off";
  map.on("layeradd", (e) => {
    if (e.layer !== layers.grid_cells || state.gridCells !== "off") return;
    state.gridCells = "loading";
    features("grid_cells", { zoom: String(Math.round(map.getZoom())) })
      .then((found) => { layers.grid_cells.addData(found); state.gridCells = "loaded"; })
      .catch((err) => { state.gridCells = "off"; status(t("Could not load: {reason}", { reason: err.message })); });
  });

  let unitsRequest = 0;
  async function loadUnits() {
    const ticket = ++unitsRequest;
    if (map.getZoom() < 15) { layers.units.clearLayers(); state.unitsLoaded = 0; return; }
    state.unitsPending = true;
    const found = await features("units", { bbox: bboxParam(), limit: "5000" });
    if (ticket !== unitsRequest) return;  // a newer view asked since
    layers.units.clearLayers();
    layers.units.addData(found);
    state.unitsLoaded = found.length;
    state.unitsPending = false;
  }
  map.on("moveend", loadUnits);

  async function start() {
    const zoom = String(map.getZoom());
    // each layer is drawn as soon as it arrives; communities first, since planners look there first
    const drawn = (name, params) => features(name, params).then((found) => { layers[name].addData(found); return found; });
    const communities = await drawn("communities", { zoom });
    layers.outlines.addData(communities);
    window.gp.relabel();
    window.gridplan.communitiesDrawnAt = performance.now();
    const facilities = features("facilities").then((found) => {
      facilityPoints.addData(found);
      if (layers.facilities.refreshClusters) { layers.facilities.removeLayer(facilityPoints); layers.facilities.addLayer(facilityPoints); }
      return found;
    });
    const [, , blind] = await Promise.all([drawn("streets", { zoom }), facilities, drawn("blind_spots")]);
    const outside = communities.filter((f) => flagged(f.properties)).length;
    status(t("{n} communities, {outside} outside {min}–{max} households; {blind} blind-spot units",
      { n: number(communities.length), outside: number(outside), min: number(MIN), max: number(MAX), blind: number(blind.length) }));
    await histogram(null);
    await loadUnits();
    window.gridplan.ready = true;
    // the topology layer is drawn when asked for; it never holds the page up
    window.gp.getJSON("/api/topology/communities").then((found) => layers.topology.addData(found)).catch(() => {});
  }
  start().catch((err) => { status(t("Could not load: {reason}", { reason: err.message })); });
})();
