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

  return { config, map, el, figures, number, getJSON, features, bboxParam, status };
})();
