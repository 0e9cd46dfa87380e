/* Helpers shared by the map pages. Text from the database is only ever inserted with
   textContent, never as HTML. */
"use strict";
window.gp = (function () {
  const config = JSON.parse(document.getElementById("gridplan-config").textContent);
  const map = window[config.map];
  // with no base map Leaflet knows no maximum zoom, and marker clusters need one
  if (map.options.maxZoom === undefined) map.setMaxZoom(19);

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function figures(dl, rows) {
    dl.replaceChildren();
    for (const [label, value, cls] of rows) {
      dl.append(el("dt", label));
      const dd = el("dd", value === null || value === undefined ? "—" : value);
      if (cls) dd.className = cls;
      dl.append(dd);
    }
  }

  function number(n) { return gpLocale.number(n); }

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  }

  /* Every page of a collection's items, following the `next` links. */
  async function features(collection, params) {
    const query = new URLSearchParams(params || {});
    if (config.coords === "gcj02") query.set("coords", "gcj02");
    if (!query.has("limit")) query.set("limit", "5000");
    let url = `/api/collections/${collection}/items?${query}`;
    const out = [];
    while (url) {
      const page = await getJSON(url);
      out.push(...page.features);
      const next = (page.links || []).find((l) => l.rel === "next");
      url = next ? new URL(next.href).pathname + new URL(next.href).search : null;
    }
    return out;
  }

  function bboxParam() {
    const b = map.getBounds();
    return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => v.toFixed(6)).join(",");
  }

  function status(text) { document.getElementById("status").textContent = text; }

  // --- a metric scale: Leaflet's default shows feet and miles beside metres ------------------
  L.control.scale({ metric: true, imperial: false, maxWidth: 140 }).addTo(map);

  /* A legend that folds: a <details> box titled `title`, filled by `fill(body)`; whether it is
     open is remembered per page (open the first time on a desk, folded on a phone). */
  function legend(title, fill, position) {
    const control = L.control({ position: position || "bottomleft" });
    const key = `gridplan.legend.${window.location.pathname.split("/")[1] || "home"}`;
    control.onAdd = () => {
      const box = el("details", null, { class: "legend" });
      let remembered = null;
      try { remembered = window.localStorage.getItem(key); } catch (err) { remembered = null; }
      box.open = remembered === null ? window.innerWidth > 700 : remembered === "1";
      const body = el("div", null, { class: "legend-body" });
      fill(body);
      box.append(el("summary", title), body);
      box.addEventListener("toggle", () => {
        try { window.localStorage.setItem(key, box.open ? "1" : "0"); } catch (err) { /* private mode */ }
      });
      L.DomEvent.disableClickPropagation(box);
      L.DomEvent.disableScrollPropagation(box);
      return box;
    };
    return control.addTo(map);
  }

  // --- labels without collisions ---------------------------------------------------------------
  /* Label sources, placed in order of `priority` (lower first): the first label placed on a spot
     keeps it, a later one that would touch it is left out. A source is { group (a layer group
     the page adds to its map), minZoom, priority, max, entries() → [{ latlng, text | content,
     className, key }] }; entries come in their own order of importance. Labels with the same
     `key` (a road's name) stand at least 400 px apart. */
  const labelPane = map.createPane("gpLabels");
  labelPane.style.zIndex = 640;
  labelPane.style.pointerEvents = "none";
  const labelSources = [];
  let labelFrame = 0;
  function placeLabels() {
    labelFrame = 0;
    const taken = [];
    const view = map.getBounds();
    const zoom = map.getZoom();
    for (const source of labelSources) {
      source.group.clearLayers();
      source.shown = 0;
      if (zoom < source.minZoom || !map.hasLayer(source.group)) continue;
      const named = new Map();
      for (const entry of source.entries()) {
        if (source.shown >= (source.max || 250)) break;
        if (!view.contains(entry.latlng)) continue;
        const at = map.latLngToContainerPoint(entry.latlng);
        if (entry.key && (named.get(entry.key) || []).some((p) => p.distanceTo(at) < 400)) continue;
        const tip = L.tooltip({ permanent: true, direction: "center", className: `gp-label ${entry.className || ""}`,
          pane: "gpLabels", interactive: false }).setLatLng(entry.latlng).setContent(entry.content || el("span", entry.text));
        source.group.addLayer(tip);
        const r = tip.getElement().getBoundingClientRect();
        if (taken.some((o) => r.left - 2 < o.right && r.right + 2 > o.left && r.top - 1 < o.bottom && r.bottom + 1 > o.top)) {
          source.group.removeLayer(tip);
          continue;
        }
        taken.push(r);
        source.shown += 1;
        if (entry.key) named.set(entry.key, (named.get(entry.key) || []).concat([at]));
      }
    }
  }
  function relabel() { if (!labelFrame) labelFrame = window.requestAnimationFrame(placeLabels); }
  function addLabels(source) {
    labelSources.push(source);
    labelSources.sort((a, b) => (a.priority || 0) - (b.priority || 0));
    relabel();
    return source;
  }
  map.on("moveend overlayadd overlayremove", relabel);

  // --- a quiet base of the city's own roads and water, where no tile base map is set ------------
  /* With no base map (the default on an intranet) the map would float on grey: the city's roads
     and water from its own layers are drawn instead, pale, under the planning layers, with road
     names from street zoom (16); loaded by view from /api/basemap, majors only below it. */
  const base = { loads: 0, group: null, pending: false };
  if (config.basemap === "none") {
    map.getContainer().classList.add("no-tiles");
    map.createPane("gpWater").style.zIndex = 250;
    const roadPane = map.createPane("gpRoads");
    roadPane.style.zIndex = 415;  // over the planning fills, under community outlines and labels
    roadPane.style.pointerEvents = "none";
    const water = L.geoJSON(null, { pane: "gpWater", interactive: false, renderer: L.canvas({ pane: "gpWater" }),
      style: { stroke: false, fillColor: "#b5d0e6", fillOpacity: 1 } });
    const roads = L.geoJSON(null, { pane: "gpRoads", interactive: false, renderer: L.canvas({ pane: "gpRoads" }),
      style: (f) => (f.properties.major ? { color: "#fff", weight: 3.5, opacity: 0.85 }
        : { color: "#fff", weight: 1.5, opacity: 0.7 }) });
    const names = L.layerGroup();
    base.group = L.layerGroup([water, roads, names]).addTo(map);
    Object.assign(base, { water, roads, names });
    let loaded = null, ticket = 0, timer = 0;
    async function loadBase() {
      if (!map.hasLayer(base.group)) return;
      const zoom = Math.round(map.getZoom());
      const major = zoom < 16;
      // a pan inside what was loaded at the same level of detail asks for nothing
      if (loaded && loaded.major === major && loaded.zoom === zoom && loaded.bounds.contains(map.getBounds())) return;
      const size = map.getSize();
      if (!size.x || !size.y) return;  // a map not laid out yet (no size) has no view to draw
      const bounds = map.getBounds().pad(0.15);
      const bbox = [bounds.getWest(), Math.max(-90, bounds.getSouth()), bounds.getEast(), Math.min(90, bounds.getNorth())]
        .map((v) => Math.max(-180, Math.min(180, v)).toFixed(5)).join(",");
      const mine = ++ticket;
      const found = await getJSON(`/api/basemap?bbox=${bbox}&zoom=${zoom}`);
      if (mine !== ticket) return;
      loaded = { bounds, zoom, major };
      water.clearLayers();
      roads.clearLayers();
      water.addData(found.features.filter((f) => f.properties.kind === "water"));
      roads.addData(found.features.filter((f) => f.properties.kind === "road"));
      base.loads += 1;
      relabel();
    }
    // `pending` from a move until the base for it is drawn (or found not needed): pages and tests
    // can tell a settled map from one still loading
    let runs = 0;
    const run = () => {
      const mine = ++runs;
      loadBase().catch(() => {}).finally(() => { if (mine === runs) base.pending = false; });
    };
    map.on("moveend", () => { base.pending = true; clearTimeout(timer); timer = setTimeout(run, 120); });
    map.on("overlayadd", (e) => { if (e.layer === base.group) run(); });
    map.whenReady(run);  // a base that fails leaves the paper, nothing else

    /* where a road's name stands: the middle of its longest piece */
    function middle(layer) {
      let best = null, bestLength = 0;
      const lines = layer.getLatLngs();
      for (const line of Array.isArray(lines[0]) ? lines : [lines]) {
        let length = 0;
        for (let i = 1; i < line.length; i++) length += line[i - 1].distanceTo(line[i]);
        if (length > bestLength) { bestLength = length; best = line; }
      }
      if (!best || bestLength < 150) return null;  // a block's side: too short to name
      let walked = 0;
      for (let i = 1; i < best.length; i++) {
        const step = best[i - 1].distanceTo(best[i]);
        if (walked + step >= bestLength / 2) {
          const f = step ? (bestLength / 2 - walked) / step : 0;
          return [L.latLng(best[i - 1].lat + f * (best[i].lat - best[i - 1].lat), best[i - 1].lng + f * (best[i].lng - best[i - 1].lng)), bestLength];
        }
        walked += step;
      }
      return null;
    }
    addLabels({ group: names, minZoom: 16, priority: 10, max: 40, entries: () => {
      const out = [];
      roads.eachLayer((l) => {
        const name = l.feature.properties.name;
        if (!name) return;
        const at = middle(l);
        if (at) out.push({ latlng: at[0], text: name, key: name, length: at[1], className: "road-label" });
      });
      return out.sort((a, b) => b.length - a.length);
    } });
  }

  const labelsPending = () => labelFrame !== 0;
  return { config, map, el, figures, number, getJSON, features, bboxParam, status, legend, addLabels, relabel,
    labelsPending, base };
})();
