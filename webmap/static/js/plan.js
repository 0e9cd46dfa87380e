/* A plan on the map, edited by name and by eye.

   Communities are coloured so that neighbours never share a colour (the server's colouring of
   the community adjacency, kept as edits go), outlined by whether they hold too few or too many
   households, and labelled with name and households when few enough are in view. A small plan's
   units are loaded at once; a large plan (a city) is drawn as community outlines simplified for
   the zoom, and its units are loaded by view from `unit_zoom`. Select units (click, lasso) and
   move them to a community (neighbours first) or a new, named one; paint units into a community
   by dragging (one undo step per stroke, figures updating as the brush moves); split, merge,
   name; a sortable table of communities whose rows select and frame them; the approval actions
   and timeline; rename, duplicate, delete. Errors are shown where the user acted, Chinese first.
   Text from the database is only ever inserted with textContent. */
"use strict";
(function () {
  const { config, map, el, figures, number, status } = window.gp;
  const planId = config.plan.id;
  const token = document.querySelector("meta[name=csrf-token]").content;
  // ColorBrewer Set3 (qualitative, pastel: names and lines stay readable on top)
  const PALETTE = ["#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5",
    "#bc80bd", "#ccebc5", "#ffed6f", "#d9d9d9"];
  // community outlines clearly heavier than the units' lines (0.4 px)
  const OUTLINE = { within: { color: "#333", weight: 2.5, dashArray: null },
    below: { color: "#2166ac", weight: 3, dashArray: "7 5" }, above: { color: "#b2182b", weight: 3.5, dashArray: null } };
  const LABELS_MAX = 80;
  const state = { version: config.plan.version, units: new Map(), communities: new Map(), selected: new Set(),
    history: { undo: 0, redo: 0 }, community: null, changed: new Set(), mode: null, tool: "select", byView: false,
    unitZoom: null, rules: { minimum: 0, maximum: 0, target: 0 }, sort: { key: "code", up: true }, busy: 0 };
  window.gridplan = { map, state, ready: false };
  const $ = (id) => document.getElementById(id);

  // --- errors: shown where the user acted, Chinese first, never left unhandled --------------------

  // the server's detail comes in the page's language; the headline says what to do about it
  function explain(err) {
    const p = err.problem || {};
    const detail = p.detail || err.message || "";
    if (err.hint) return [err.hint, ""];
    if (err.network) return [t("Could not reach the server: check the connection and try again."), ""];
    if (p.status === 401) return [t("Your session has expired: sign in again."), ""];
    if (p.code === "VersionConflict") {
      return [t("Someone else changed the plan (it is now version {version}): reload the page, then make your change again.",
        { version: p.version }), detail];
    }
    if (p.code === "StalePlan") return [t("The current boundaries have changed: rebase the plan on them first."), detail];
    if (p.status === 403) return [t("Your role, or the plan's status, does not allow this."), detail];
    if (p.status === 404) return [t("The plan or the object was not found: it may have been deleted."), detail];
    if (p.status >= 500) return [t("The server failed: try again later, and tell an administrator if it happens again."), detail];
    return [t("This could not be done."), detail];
  }

  function banner(where) {
    const host = (where && where.closest && where.closest("section")) || $("panel");
    let box = host.querySelector(":scope > .banner");
    if (!box) {
      box = el("div", null, { class: "banner", role: "alert" });
      const heading = host.querySelector(":scope > h2");
      if (heading) heading.after(box); else host.prepend(box);
    }
    return box;
  }
  function showError(err, where) {
    const [headline, detail] = explain(err);
    const box = banner(where);
    const close = el("button", "×", { type: "button", class: "close", "aria-label": t("Close") });
    close.addEventListener("click", () => box.remove());
    box.replaceChildren(close, el("strong", headline), el("div", detail, { class: "detail" }));
    box.scrollIntoView({ block: "nearest" });
    window.gridplan.lastError = { headline, detail, status: err.problem?.status };
  }
  function clearErrors() { for (const box of document.querySelectorAll(".banner")) box.remove(); }

  /* Run an action started from `where`: its refusal is shown there, nothing escapes. */
  async function act(where, fn) {
    state.busy += 1;
    try { clearErrors(); return await fn(); } catch (err) { showError(err, where); return undefined; } finally { state.busy -= 1; }
  }

  // a plan of every district is worked on one district at a time: every request about it names
  // the page's district
  const scope = config.district ? `district=${encodeURIComponent(config.district)}` : "";
  const ours = new RegExp(`^/api/plans/${planId}(?:[/?]|$)`);
  const scoped = (url) => (scope && ours.test(url) ? `${url}${url.includes("?") ? "&" : "?"}${scope}` : url);

  async function request(method, url, body) {
    let response;
    url = scoped(url);
    try {
      response = await fetch(url, { method, credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": token },
        body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) { throw Object.assign(new Error(err.message), { network: true }); }
    let answer = null;
    try { answer = await response.json(); } catch (err) { answer = null; }
    if (!response.ok) {
      const problem = { status: response.status, ...(answer || {}) };
      throw Object.assign(new Error(problem.detail || response.statusText), { problem });
    }
    return answer;
  }
  const get = (url) => request("GET", url);
  const post = (path, body) => request("POST", `/api/plans/${planId}/${path}`, { ...body, version: state.version });

  // --- drawing ---------------------------------------------------------------------------------

  const community = (code) => state.communities.get(code);
  const nameOf = (code) => community(code)?.name || (code ? t("unnamed {code}", { code }) : "—");
  const fill = (code) => { const c = community(code); return c ? PALETTE[c.colour % PALETTE.length] : "#f0f0f0"; };
  const boundsOf = (c) => (!c ? "within" : c.households < state.rules.minimum ? "below"
    : c.households > state.rules.maximum ? "above" : "within");

  map.createPane("planUnits").style.zIndex = 410;
  map.createPane("planOutlines").style.zIndex = 420;
  map.createPane("planLabels").style.zIndex = 650;
  const unitRenderer = L.canvas({ pane: "planUnits", padding: 0.3 });
  const outlineRenderer = L.canvas({ pane: "planOutlines", padding: 0.3 });

  function unitStyle(f) {
    const p = f.properties;
    const selected = state.selected.has(p.code), changed = state.changed.has(p.code);
    return {
      color: selected ? "#000" : changed ? "#d7191c" : "#888", weight: selected ? 3 : changed ? 2.5 : 0.4,
      dashArray: changed && !selected ? "4 3" : null, opacity: 0.9,
      fillColor: p.land_use === "water" ? "#a6cee3" : fill(p.community_code), fillOpacity: 0.85,
    };
  }
  const units = L.geoJSON(null, {
    renderer: unitRenderer, pane: "planUnits", style: unitStyle,
    onEachFeature: (f, l) => {
      state.units.set(f.properties.code, { feature: f, layer: l, box: boxOf(f.geometry) });
      l.bindTooltip(() => el("div", `${f.properties.code} · ${t("{n} households", { n: number(f.properties.households) })} · ${nameOf(f.properties.community_code)}`),
        { sticky: true });
      l.on("click", () => clickUnit(f.properties.code));
    },
  }).addTo(map);
  window.gridplan.layer = units;

  function outlineStyle(f) {
    const code = f.properties.code;
    const look = OUTLINE[boundsOf(community(code))];
    const chosen = code === state.community;
    const filled = state.byView && map.getZoom() < state.unitZoom;
    return { color: chosen ? "#000" : look.color, weight: chosen ? 4.5 : look.weight, dashArray: chosen ? null : look.dashArray,
      fill: filled, fillColor: fill(code), fillOpacity: 0.85, opacity: 1 };
  }
  const outlines = L.geoJSON(null, {
    renderer: outlineRenderer, pane: "planOutlines", style: outlineStyle,
    onEachFeature: (f, l) => {
      l.bindTooltip(() => el("div", `${nameOf(f.properties.code)} · ${f.properties.code} · ${t("{n} households", { n: number(community(f.properties.code)?.households) })}`),
        { sticky: true });
      l.on("click", () => { if (!state.mode) selectCommunity(f.properties.code, { frame: false }); });
    },
  }).addTo(map);
  const outlineOf = new Map();
  const labels = L.layerGroup().addTo(map);

  function outlinesClickable() {
    // outlines take clicks only when they are all that is drawn (a large plan, zoomed out)
    const clickable = state.byView && map.getZoom() < state.unitZoom;
    map.getPane("planOutlines").style.pointerEvents = clickable ? "auto" : "none";
    map.getPane("planUnits").style.display = clickable ? "none" : "";
  }

  function restyleUnits(codes) {
    if (!codes) { units.eachLayer((l) => l.setStyle(unitStyle(l.feature))); return; }
    for (const code of codes) { const u = state.units.get(code); if (u) u.layer.setStyle(unitStyle(u.feature)); }
  }
  function restyleOutlines() { outlines.eachLayer((l) => l.setStyle(outlineStyle(l.feature))); }

  function drawLabels() {
    labels.clearLayers();
    const view = map.getBounds();
    const shown = [...outlineOf.values()].filter((f) => view.contains([f.properties.lat, f.properties.lon]));
    state.labelsShown = shown.length <= LABELS_MAX ? shown.length : 0;
    if (shown.length > LABELS_MAX) return;
    // the largest communities first; a label that would cover one already placed is left out
    const taken = [];
    shown.sort((a, b) => (community(b.properties.code)?.households || 0) - (community(a.properties.code)?.households || 0));
    for (const f of shown) {
      const c = community(f.properties.code);
      if (!c) continue;
      const box = el("div");
      box.append(el("div", nameOf(f.properties.code), { class: "label-name" }), el("div", t("{n} households", { n: number(c.households) })));
      const tip = L.tooltip({ permanent: true, direction: "center", className: `plan-label ${boundsOf(c)}`,
        pane: "planLabels", interactive: false }).setLatLng([f.properties.lat, f.properties.lon]).setContent(box);
      labels.addLayer(tip);
      if (!map.hasLayer(labels)) continue;
      const r = tip.getElement().getBoundingClientRect();
      if (taken.some((o) => r.left - 2 < o.right && r.right + 2 > o.left && r.top - 1 < o.bottom && r.bottom + 1 > o.top)) {
        labels.removeLayer(tip);
        state.labelsShown -= 1;
      } else taken.push(r);
    }
  }

  // the current boundaries and the streets, on request
  // street boundaries: a broad grey band above the units, under the community outlines
  map.createPane("planStreets").style.zIndex = 415;
  map.getPane("planStreets").style.pointerEvents = "none";
  const streets = L.geoJSON(null, { pane: "planStreets", style: { color: "#555", weight: 6, opacity: 0.45, fill: false, interactive: false },
    interactive: false });
  const current = L.geoJSON(null, { style: { color: "#6a3d9a", weight: 1.5, dashArray: "2 4", fill: false }, interactive: false });
  const loaded = new Set();
  async function loadOverlay(name, layer) {
    if (loaded.has(name)) return;
    loaded.add(name);
    try { layer.addData(await window.gp.features(name, { zoom: String(map.getZoom()) })); } catch (err) { loaded.delete(name); showError(err); }
  }
  map.on("overlayadd", (e) => {
    if (e.layer === streets) loadOverlay("streets", streets);
    if (e.layer === current) loadOverlay("communities", current);
  });
  const overlays = { [t("The plan's communities")]: outlines, [t("Community names")]: labels, [t("Street boundaries")]: streets,
    [t("Current community boundaries")]: current };
  if (window.gp.base.group) overlays[t("Roads and water")] = window.gp.base.group;
  L.control.layers(null, overlays, { collapsed: false, position: "topright" }).addTo(map);
  streets.addTo(map);

  window.gp.legend(t("Legend"), (box) => {
    box.append(el("strong", t("Communities")));
    const row = (style, text) => { const r = el("div"); const i = el("i"); i.style.cssText = style; r.append(i, text); box.append(r); };
    row("border:3px dashed #2166ac", t("Too few households"));
    row("border:3px solid #b2182b", t("Too many households"));
    row("border:2px solid #333", t("within the bounds"));
    row("border:2px dashed #6a3d9a", t("current boundaries"));
    row("border:3px solid #000", t("Selected community"));
    box.append(el("div", t("Neighbours never share a colour"), { class: "muted" }));
  });

  // --- figures, the table, the selected community ------------------------------------------------

  // the figures of a plan (or a district's part, or the whole plan beside it), as rows
  const scoreRows = (scores) => [
    [t("Communities"), number(scores.communities)],
    [t("Outside the bounds"), number(scores.outside_bounds), scores.outside_bounds ? "flag-above" : ""],
    [t("Not contiguous"), number(scores.non_contiguous), scores.non_contiguous ? "flag-above" : ""],
    [t("Households moved"), `${number(scores.households_moved)} (${gpLocale.percent(scores.households_moved_share || 0)})`],
    [t("Households min / median / max"), `${number(scores.households_min)} / ${number(scores.households_median)} / ${number(scores.households_max)}`],
  ];
  function showPlan(scores) {
    $("plan-title").textContent = planTitle();
    figures($("plan-figures"), [...scoreRows(scores), [t("Compactness (Polsby–Popper mean)"), scores.pp_mean]]);
    window.gridplan.scores = scores;
  }
  // a district's part: the whole plan's scores beside its own (combined from every district's)
  function showWhole(scores) {
    $("whole-box").hidden = !scores;
    if (!scores) return;
    figures($("whole-figures"), scoreRows(scores));
    window.gridplan.wholeScores = scores;
  }
  // the districts of a plan of every district: choosing one opens the page on it
  if ((config.districts || []).length) {
    const select = $("district-select");
    for (const d of config.districts) {
      const problems = (d.outside_bounds || 0) + (d.non_contiguous || 0);
      const name = d.name || t("unnamed {code}", { code: d.code });
      const broken = problems ? t("{n} communities break a rule", { n: number(problems) }) : "";
      const label = `${name} · ${d.code}` + (broken ? `（${broken}）` : "");
      select.append(el("option", label, { value: d.code }));
    }
    select.value = config.district;
    select.addEventListener("change", () => {
      const url = new URL(window.location.href);
      url.searchParams.set("district", select.value);
      window.location.assign(url.toString());
    });
    $("district-box").hidden = false;
  }

  // a rule a community breaks ({rule, community_code, limit, value}: data from the server),
  // worded here, in the page's language
  const RULES = {
    below_minimum: (v) => t("households below the minimum of {n}", { n: number(v.limit) }),
    above_maximum: (v) => t("households above the maximum of {n}", { n: number(v.limit) }),
    not_contiguous: () => t("not contiguous"),
    crosses_street: () => t("crosses a street boundary"),
  };
  const ruleText = (v) => (RULES[v.rule] ? RULES[v.rule](v) : "");
  const STATUS = { draft: t("draft"), submitted: t("submitted"), approved: t("approved"), rejected: t("rejected"),
    adopted: t("adopted") };
  function planTitle() {
    // t() outside template literals: the catalogue's extractor does not look inside them
    return [config.plan.name, STATUS[config.plan.status] || config.plan.status, t("version {n}", { n: state.version })].join(" · ");
  }

  function bar(c) {
    const { minimum, maximum, target } = state.rules;
    const top = Math.max(maximum * 1.25, c.households);
    const box = el("div", null, { class: "hh-bar", title: `${c.households} / ${minimum}–${maximum}` });
    const fillBar = el("span", null, { class: `fill ${boundsOf(c)}` });
    fillBar.style.width = `${(100 * c.households) / top}%`;
    box.append(fillBar);
    for (const [value, cls] of [[minimum, "min"], [target, "target"], [maximum, "max"]]) {
      const tick = el("i", null, { class: cls });
      tick.style.left = `${(100 * value) / top}%`;
      box.append(tick);
    }
    return box;
  }

  function tableRow(c) {
    const row = el("tr", null, { "data-code": c.community_code, class: c.community_code === state.community ? "chosen" : "" });
    const hh = el("td", null, { class: "count" });
    hh.append(el("span", number(c.households)), bar(c));
    const rules = el("td");
    rules.append(...(c.violations || []).map((v) => el("div", ruleText(v), { class: "flag-above" })));
    row.append(el("td", nameOf(c.community_code)), el("td", c.community_code), hh, rules);
    row.addEventListener("click", () => selectCommunity(c.community_code, { frame: true }));
    return row;
  }
  function sortValue(c, key) {
    if (key === "name") return nameOf(c.community_code);
    if (key === "code") return c.community_code;
    if (key === "households") return c.households;
    return (c.violations || []).length;
  }
  function byTheSort(a, b) {
    const { key, up } = state.sort;
    const x = sortValue(a, key), y = sortValue(b, key);
    const order = typeof x === "number" ? x - y : String(x).localeCompare(String(y), "zh-CN");
    return (up ? 1 : -1) * (order || a.community_code.localeCompare(b.community_code));
  }
  function drawTable() {
    const { key, up } = state.sort;
    const rows = [...state.communities.values()].sort(byTheSort);
    $("communities-table").tBodies[0].replaceChildren(...rows.map(tableRow));
    $("communities-count").textContent = t("{n} · {bad} with problems", { n: number(rows.length), bad: number(rows.filter((c) => (c.violations || []).length).length) });
    for (const th of document.querySelectorAll("#communities-table th")) {
      th.setAttribute("aria-sort", th.dataset.sort === key ? (up ? "ascending" : "descending") : "none");
    }
  }
  function updateRows(codes) {
    const body = $("communities-table").tBodies[0];
    for (const code of codes) {
      const old = body.querySelector(`tr[data-code="${CSS.escape(code)}"]`);
      const c = community(code);
      if (old) old.remove();
      if (!c) continue;
      // a changed or restored community goes where the table's sort puts it, not last
      const next = [...body.rows].find((r) => community(r.dataset.code) && byTheSort(c, community(r.dataset.code)) < 0);
      body.insertBefore(tableRow(c), next || null);
    }
  }
  for (const th of document.querySelectorAll("#communities-table th")) {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.sort;
      // a new column sorts names and codes A→Z, households and problems largest first
      state.sort = { key, up: state.sort.key === key ? !state.sort.up : key === "name" || key === "code" };
      drawTable();
    });
  }

  function showCommunity(code) {
    const c = community(code);
    if (!c) { $("selected").hidden = true; return; }
    $("selected").hidden = false;
    $("selected-name").textContent = `${nameOf(code)} · ${code}`;
    figures($("selected-figures"), [
      [t("Households"), number(c.households), c.violations?.length ? "flag-above" : ""],
      [t("Bounds"), `${number(state.rules.minimum)}–${number(state.rules.maximum)}`],
      [t("Population"), number(c.population)],
      [t("Area"), `${gpLocale.number((c.area_m2 || 0) / 1e6, 3)} km²`], [t("Compactness (Polsby–Popper)"), c.polsby_popper],
      [t("Neighbours"), (c.neighbours || []).map(nameOf).join(t(", ")) || "—"]]);
    $("violations").replaceChildren(...(c.violations || []).map((v) => el("li", ruleText(v))));
    for (const box of document.querySelectorAll("#selected .editing")) box.hidden = !config.editable;
    $("name-input").value = c.name || "";
    for (const id of ["split", "split-line", "merge"]) $(id).disabled = !config.editable;
    fillSelect($("merge-with"), neighboursFirst([code]).filter((k) => k !== code), false);
    showMerge();
  }

  function selectCommunity(code, { frame } = {}) {
    if (!community(code)) return;
    state.community = code;
    showCommunity(code);
    restyleOutlines();
    for (const row of document.querySelectorAll("#communities-table tr.chosen")) row.classList.remove("chosen");
    const row = document.querySelector(`#communities-table tr[data-code="${CSS.escape(code)}"]`);
    if (row) { row.classList.add("chosen"); if (!frame) row.scrollIntoView({ block: "nearest" }); }
    if (frame) {
      const outline = outlineOf.get(code);
      if (outline) map.fitBounds(L.geoJSON(outline).getBounds(), { maxZoom: 17, animate: false, padding: [30, 30] });
    }
    if (config.editable && $("move-to").value !== code) fillMoveTargets();
    window.gridplan.community = code;
  }

  // --- selection -----------------------------------------------------------------------------------

  function showSelection() {
    $("selection").textContent = state.selected.size ? t("{n} units selected", { n: number(state.selected.size) }) : t("Nothing selected");
  }
  function setSelection(codes) {
    const before = [...state.selected];
    state.selected = new Set(codes);
    restyleUnits(new Set([...before, ...state.selected]));
    showSelection();
    fillMoveTargets();
  }
  function clickUnit(code) {
    if (state.mode) return;  // drawing a lasso or a line, or painting
    const unit = state.units.get(code).feature.properties;
    if (config.editable) {
      const next = new Set(state.selected);
      if (next.has(code)) next.delete(code); else next.add(code);
      setSelection(next);
    }
    selectCommunity(unit.community_code);
  }

  /* Communities next to `codes` first (longest shared boundary first), then every other one. */
  function neighboursFirst(codes) {
    const near = [];
    for (const code of codes) for (const n of community(code)?.neighbours || []) if (!near.includes(n)) near.push(n);
    for (const code of codes) if (community(code) && !near.includes(code)) near.push(code);
    const rest = [...state.communities.keys()].filter((k) => !near.includes(k)).sort();
    near.rest = rest;
    return near;
  }
  function fillSelect(select, near, withNew) {
    const keep = select.value;
    const option = (k) => el("option", `${nameOf(k)} · ${k}`, { value: k });
    const groups = [];
    if (withNew) groups.push(el("option", t("New community"), { value: "new" }));
    if (near.length) { const g = el("optgroup", null, { label: t("Neighbours") }); g.append(...near.map(option)); groups.push(g); }
    const rest = near.rest || [];
    if (rest.length) { const g = el("optgroup", null, { label: t("Others") }); g.append(...rest.map(option)); groups.push(g); }
    select.replaceChildren(...groups);
    if ([...select.options].some((o) => o.value === keep)) select.value = keep;
  }
  function fillMoveTargets() {
    if (!config.editable) return;
    const from = new Set([...state.selected].map((u) => state.units.get(u)?.feature.properties.community_code).filter(Boolean));
    if (!from.size && state.community) from.add(state.community);
    const near = neighboursFirst([...from]);
    // the selection's own communities are where it already is: neighbours come first
    const own = near.filter((k) => from.has(k));
    const list = near.filter((k) => !from.has(k)).concat(own);
    list.rest = near.rest;
    fillSelect($("move-to"), list, true);
    if (state.tool === "paint" && state.community && !state.selected.size) $("move-to").value = state.community;
    $("new-name-label").hidden = $("move-to").value !== "new";
  }
  $("move-to").addEventListener("change", () => { $("new-name-label").hidden = $("move-to").value !== "new"; });

  // --- edits -------------------------------------------------------------------------------------

  function recolour(codes) {
    for (const code of codes) {
      const c = community(code);
      if (!c) continue;
      const used = new Set((c.neighbours || []).map((n) => community(n)?.colour));
      if (c.colour === undefined || used.has(c.colour)) {
        let i = 0;
        while (used.has(i)) i += 1;
        c.colour = i;
      }
    }
  }

  /* Show a saved edit, an undo or a redo: `answer.assignment` (unit → community) or every unit of
     `moved` going to `answer.to`; the figures of the communities touched; the names that changed. */
  function apply(answer, moved) {
    state.version = answer.version;
    const touched = new Set();
    const assignment = answer.assignment || Object.fromEntries(moved.map((code) => [code, answer.to]));
    for (const [code, to] of Object.entries(assignment)) {
      const u = state.units.get(code);
      if (u) { touched.add(u.feature.properties.community_code); u.feature.properties.community_code = to; }
    }
    for (const [code, name] of Object.entries(answer.names || {})) {
      const c = community(code);
      if (c) c.name = name;
      touched.add(code);
    }
    for (const c of answer.communities) {
      const code = c.community_code;
      touched.add(code);
      const old = community(code);
      for (const n of old?.neighbours || []) touched.add(n);
      if (c.removed) { state.communities.delete(code); continue; }
      const name = code in (answer.names || {}) ? answer.names[code] : old?.name;
      state.communities.set(code, { colour: old?.colour, ...c, name: name ?? c.name ?? old?.name ?? null });
      for (const n of c.neighbours) touched.add(n);
    }
    // neighbours are symmetric: fix the lists of the communities next to the touched ones
    for (const c of answer.communities) {
      for (const other of state.communities.values()) {
        if (other.community_code === c.community_code || !other.neighbours) continue;
        const has = other.neighbours.includes(c.community_code);
        const should = !c.removed && c.neighbours.includes(other.community_code);
        if (has && !should) other.neighbours = other.neighbours.filter((n) => n !== c.community_code);
        if (!has && should) other.neighbours = other.neighbours.concat([c.community_code]);
      }
    }
    recolour(answer.communities.filter((c) => !c.removed).map((c) => c.community_code));
    showPlan(answer.plan);
    if (answer.plan_scores) showWhole(answer.plan_scores);
    updateRows(touched);
    $("communities-count").textContent = t("{n} communities", { n: number(state.communities.size) });
    restyleUnits();
    // only the communities the edit changed are fetched again (a city's outlines are a megabyte)
    loadOutlinesOf(answer.communities.map((c) => c.community_code)).catch((err) => showError(err));
    drawLabels();
    history.set(answer.history);
    window.gridplan.lastAnswer = answer;
    if (answer.to && community(answer.to)) selectCommunity(answer.to);
    else if (community(state.community)) selectCommunity(state.community);
    else showCommunity(state.community);
    if (answer.assignment) {
      status(answer.undone ? t("Version {version}: undone", { version: state.version })
        : t("Version {version}: redone", { version: state.version }));
    } else {
      status(t("Version {version}: {n} units moved to {to}", { version: state.version, n: number(moved.length), to: nameOf(answer.to) }));
    }
  }

  // undo and redo belong to the plan, on the server: they survive a reload and another tab, and
  // take back any edit (a move, a stroke, a split, a merge, a new community, a name)
  const history = {
    set(counts) {
      if (counts) state.history = counts;
      $("undo").disabled = !config.editable || !state.history.undo;
      $("redo").disabled = !config.editable || !state.history.redo;
    },
    async replay(backwards) {
      // one at a time: a second click before the answer would start from the same version
      $("undo").disabled = true; $("redo").disabled = true;
      try {
        const answer = await post(backwards ? "undo" : "redo", {});
        if (answer.district && answer.district !== config.district) {
          // the step was made in another district of the plan: show it there
          const url = new URL(window.location.href);
          url.searchParams.set("district", answer.district);
          window.location.assign(url.toString());
          return answer;
        }
        apply({ ...answer, undone: backwards }, Object.keys(answer.assignment));
        return answer;
      } finally { this.set(); }
    },
    back() { return this.replay(true); },
    forward() { return this.replay(false); },
  };
  window.gridplan.history = history;

  async function move(list, to) {
    const answer = await post("moves", { units: list, to });
    apply(answer, list);
    return answer;
  }

  async function nameIt(code, name) {
    const answer = await post(`communities/${encodeURIComponent(code)}/name`, { name });
    state.version = answer.version;
    history.set(answer.history);
    const c = community(code);
    if (c) c.name = answer.name;
    updateRows([code]);
    showCommunity(state.community);
    drawLabels();
    fillMoveTargets();
    $("plan-title").textContent = planTitle();
    return answer;
  }

  $("move").addEventListener("click", (e) => act(e.currentTarget, async () => {
    if (!state.selected.size) throw Object.assign(new Error("no units to move"), { hint: t("First click or lasso the units to move.") });
    const to = $("move-to").value;
    const name = $("new-name").value.trim();
    const answer = await move([...state.selected], to);
    if (to === "new" && name) { await nameIt(answer.to, name); $("new-name").value = ""; }
    setSelection([]);
  }));
  $("clear").addEventListener("click", () => setSelection([]));
  $("undo").addEventListener("click", (e) => act(e.currentTarget, () => history.back()));
  $("redo").addEventListener("click", (e) => act(e.currentTarget, () => history.forward()));
  $("split").addEventListener("click", (e) => act(e.currentTarget, async () => {
    const answer = await post("split", { community: state.community });
    apply(answer, answer.units);
  }));
  /* Merging the selected community into X keeps X, its name and its code — unless only the
     selected one has a code of the current boundaries (standing 2 official, 1 provisional, 0 made
     by this plan): that code outlives one the plan made, whichever way round. The server applies
     the same rule; the button says which survives before it is pressed. */
  function survivor(selected, into) {
    return (community(selected)?.standing || 0) > (community(into)?.standing || 0) ? selected : into;
  }
  function showMerge() {
    const into = $("merge-with").value, selected = state.community;
    const kept = into && selected ? survivor(selected, into) : null;
    $("merge").textContent = kept ? t("Merge, keeping {name}", { name: `${nameOf(kept)} · ${kept}` }) : t("Merge");
    $("merge").dataset.keeps = kept || "";
  }
  $("merge-with").addEventListener("change", showMerge);
  $("merge").addEventListener("click", (e) => act(e.currentTarget, async () => {
    const answer = await post("merge", { keep: $("merge-with").value, merge: state.community });
    apply(answer, answer.units);
  }));
  $("name-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act(e.currentTarget, () => nameIt(state.community, $("name-input").value));
  });

  // --- tools: select, paint, lasso, split along a line ----------------------------------------------

  function setTool(tool) {
    state.tool = tool;
    $("mode-select").setAttribute("aria-pressed", String(tool === "select"));
    $("mode-paint").setAttribute("aria-pressed", String(tool === "paint"));
    $("paint-help").hidden = tool !== "paint";
    map.getContainer().classList.toggle("painting", tool === "paint");
    if (tool === "paint") { map.dragging.disable(); state.mode = "paint"; setSelection([]); } else { map.dragging.enable(); if (state.mode === "paint") state.mode = null; }
    fillMoveTargets();
  }
  $("mode-select").addEventListener("click", () => setTool("select"));
  $("mode-paint").addEventListener("click", () => setTool("paint"));

  // units under a point: a grid of the units' bounding boxes, then the even-odd rule on their rings
  function boxOf(geometry) {
    let minx = Infinity, miny = Infinity, maxx = -Infinity, maxy = -Infinity;
    const polys = geometry.type === "Polygon" ? [geometry.coordinates] : geometry.coordinates;
    for (const poly of polys) for (const ring of poly) for (const [x, y] of ring) {
      if (x < minx) minx = x; if (x > maxx) maxx = x; if (y < miny) miny = y; if (y > maxy) maxy = y;
    }
    return [minx, miny, maxx, maxy];
  }
  const CELL = 0.002;
  let grid = null;
  function buildGrid() {
    grid = new Map();
    for (const [code, u] of state.units) {
      const [a, b, c, d] = u.box;
      for (let i = Math.floor(a / CELL); i <= Math.floor(c / CELL); i++) {
        for (let j = Math.floor(b / CELL); j <= Math.floor(d / CELL); j++) {
          const key = `${i}:${j}`;
          if (!grid.has(key)) grid.set(key, []);
          grid.get(key).push(code);
        }
      }
    }
  }
  function ringsHold(rings, x, y) {
    let hit = false;
    for (const ring of rings) {
      for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
        const [xi, yi] = ring[i], [xj, yj] = ring[j];
        if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) hit = !hit;
      }
    }
    return hit;
  }
  function unitAt(latlng) {
    if (!grid) buildGrid();
    const x = latlng.lng, y = latlng.lat;
    for (const code of grid.get(`${Math.floor(x / CELL)}:${Math.floor(y / CELL)}`) || []) {
      const u = state.units.get(code);
      if (!u) continue;
      const [a, b, c, d] = u.box;
      if (x < a || x > c || y < b || y > d) continue;
      const g = u.feature.geometry;
      const polys = g.type === "Polygon" ? [g.coordinates] : g.coordinates;
      if (polys.some((rings) => ringsHold(rings, x, y))) return code;
    }
    return null;
  }
  window.gridplan.unitAt = (lng, lat) => unitAt(L.latLng(lat, lng));

  /* Paint: units the brush passes over go into the target community at once on the page (figures
     follow as the brush moves); the stroke is saved as one move, and is one undo step. */
  const stroke = { active: false, target: null, before: new Map(), last: null };
  function paintUnit(code) {
    if (!code || stroke.before.has(code)) return;
    const u = state.units.get(code);
    const from = u.feature.properties.community_code;
    if (from === stroke.target) return;
    stroke.before.set(code, from);
    u.feature.properties.community_code = stroke.target;
    const hh = u.feature.properties.households || 0;
    const a = community(from), b = community(stroke.target);
    if (a) { a.households -= hh; a.violations = localRules(a); }
    if (b) { b.households += hh; b.violations = localRules(b); }
    u.layer.setStyle(unitStyle(u.feature));
    stroke.dirty.add(from); stroke.dirty.add(stroke.target);
  }
  // the household bounds re-read as a stroke goes (as data, worded by ruleText like the server's);
  // the other rules wait for the save's answer
  function localRules(c) {
    const rest = (c.violations || []).filter((v) => v.rule !== "below_minimum" && v.rule !== "above_maximum");
    const own = { community_code: c.code, community_name: c.name, value: c.households };
    if (c.households < state.rules.minimum) rest.unshift({ rule: "below_minimum", limit: state.rules.minimum, ...own });
    if (c.households > state.rules.maximum) rest.unshift({ rule: "above_maximum", limit: state.rules.maximum, ...own });
    return rest;
  }
  function paintAlong(from, to) {
    // sample the segment every few pixels, so a quick stroke misses no unit
    const a = map.latLngToContainerPoint(from), b = map.latLngToContainerPoint(to);
    const steps = Math.max(1, Math.ceil(a.distanceTo(b) / 3));
    for (let i = 0; i <= steps; i++) paintUnit(unitAt(map.containerPointToLatLng(a.add(b.subtract(a).multiplyBy(i / steps)))));
  }
  function showStroke() {
    const t0 = performance.now();
    updateRows(stroke.dirty);
    if (state.community) showCommunity(state.community);
    stroke.dirty.clear();
    $("selection").textContent = t("Paint: {n} units → {to}", { n: number(stroke.before.size), to: nameOf(stroke.target) });
    window.gridplan.lastFigures = { units: stroke.before.size, ms: performance.now() - t0, at: performance.now() };
  }
  let frame = 0;
  function scheduleShow() { if (!frame) frame = requestAnimationFrame(() => { frame = 0; showStroke(); }); }
  map.on("mousedown", (e) => {
    if (state.tool !== "paint" || e.originalEvent.button !== 0) return;
    const target = $("move-to").value;
    if (!community(target)) {
      showError(Object.assign(new Error("choose the community to paint into"),
        { hint: t("First choose, under “Move to”, the community to paint into (not a new one).") }), $("move-to"));
      return;
    }
    Object.assign(stroke, { active: true, target, before: new Map(), last: e.latlng, dirty: new Set(), started: performance.now() });
    paintUnit(unitAt(e.latlng));
    scheduleShow();
  });
  map.on("mousemove", (e) => {
    if (!stroke.active) return;
    paintAlong(stroke.last, e.latlng);
    stroke.last = e.latlng;
    scheduleShow();
  });
  async function endStroke() {
    if (!stroke.active) return;
    stroke.active = false;
    showStroke();
    const before = stroke.before, target = stroke.target;
    if (!before.size) return;
    await act($("move"), async () => {
      try { await move([...before.keys()], target); } catch (err) {
        // not saved: the page goes back to what is stored
        for (const [code, from] of before) { const u = state.units.get(code); if (u) u.feature.properties.community_code = from; }
        await reloadFigures();
        restyleUnits([...before.keys()]);
        throw err;
      }
    });
    window.gridplan.strokes = (window.gridplan.strokes || 0) + 1;
  }
  map.on("mouseup", endStroke);
  document.addEventListener("mouseup", () => { if (stroke.active) endStroke(); });
  window.gridplan.paint = async (target, lnglats) => {
    // for tests and the benchmark: a stroke along [lng, lat] points
    $("move-to").value = target;
    Object.assign(stroke, { active: true, target, before: new Map(), last: L.latLng(lnglats[0][1], lnglats[0][0]), dirty: new Set() });
    const t0 = performance.now();
    let moved = t0;
    for (const [lng, lat] of lnglats) { moved = performance.now(); const p = L.latLng(lat, lng); paintAlong(stroke.last, p); stroke.last = p; }
    const t1 = performance.now();
    showStroke();
    window.gridplan.lastStroke = { brush_ms: t1 - t0, figures_ms: performance.now() - t1, after_last_move_ms: performance.now() - moved };
    const shown = performance.now();
    await endStroke();
    return shown;
  };

  async function reloadFigures() {
    const plan = await get(`/api/plans/${planId}`);
    state.communities = new Map(plan.communities.map((c) => [c.community_code, c]));
    state.version = plan.version;
    history.set(plan.history);
    showPlan(plan.scores);
    showWhole(plan.district ? plan.plan_scores : null);
    drawTable();
  }

  // lasso: drag a loop round units to select them (the map does not pan meanwhile)
  function inside(point, ring) { return ringsHold([ring], point[0], point[1]); }
  function selectWithin(ring) {
    const next = new Set(state.selected);
    for (const [code, u] of state.units) {
      if (inside([u.feature.properties.lon, u.feature.properties.lat], ring)) next.add(code);
    }
    setSelection(next);
  }
  window.gridplan.selectWithin = selectWithin;
  $("lasso").addEventListener("click", () => {
    setTool("select");
    map.dragging.disable();
    state.mode = "lasso";
    status(t("Drag a loop round the units"));
    let ring = null, line = null;
    const down = (e) => { ring = [[e.latlng.lng, e.latlng.lat]]; line = L.polyline([e.latlng], { color: "#000", dashArray: "4 4" }).addTo(map); };
    const drag = (e) => { if (ring) { ring.push([e.latlng.lng, e.latlng.lat]); line.addLatLng(e.latlng); } };
    const up = () => {
      if (ring && ring.length > 2) selectWithin(ring);
      if (line) line.remove();
      map.off("mousedown", down); map.off("mousemove", drag); map.off("mouseup", up);
      map.dragging.enable();
      state.mode = null;
    };
    map.on("mousedown", down); map.on("mousemove", drag); map.on("mouseup", up);
  });

  // split along a line: click points across the selected community, double-click to finish
  $("split-line").addEventListener("click", (e) => {
    const button = e.currentTarget;
    const code = state.community;
    const points = [];
    const line = L.polyline([], { color: "#000", weight: 3 }).addTo(map);
    map.doubleClickZoom.disable();
    state.mode = "line";
    status(t("Click a line across {name}; double-click to finish", { name: nameOf(code) }));
    const add = (ev) => { points.push([ev.latlng.lng, ev.latlng.lat]); line.addLatLng(ev.latlng); };
    const finish = () => act(button, async () => {
      map.off("click", add); map.off("dblclick", finish); map.doubleClickZoom.enable(); line.remove();
      state.mode = null;
      const answer = await post("split", { community: code, line: points });
      apply(answer, answer.units);
    });
    map.on("click", add); map.on("dblclick", finish);
  });

  // --- compare -----------------------------------------------------------------------------------

  // the scores the comparison shows, in this order: [key, name, how it reads (count, share, ratio)]
  const COMPARED = [
    ["communities", t("Communities"), "count"], ["units", t("Planning units"), "count"],
    ["households", t("Households"), "count"], ["outside_bounds", t("Outside the bounds"), "count"],
    ["non_contiguous", t("Not contiguous"), "count"], ["households_min", t("Fewest households"), "count"],
    ["households_median", t("Median households"), "count"], ["households_max", t("Most households"), "count"],
    ["households_moved", t("Households moved"), "count"], ["units_moved", t("Units moved"), "count"],
    ["households_moved_share", t("Share of households moved"), "share"],
    ["pp_mean", t("Compactness (Polsby–Popper mean)"), "ratio"],
    ["pp_min", t("Least compact community (Polsby–Popper)"), "ratio"],
    ["cut_edges", t("Boundary edges between communities"), "count"],
  ];

  get("/api/plans").then((data) => {
    const select = $("compare-with");
    // only plans of the same streets: against another street's plan every unit "changes community"
    const streets = (p) => JSON.stringify([...(p.streets || [])].sort());
    const mine = data.plans.find((p) => p.id === planId);
    for (const p of data.plans) {
      if (p.id !== planId && (!mine || !mine.streets.length || streets(p) === streets(mine))) {
        select.append(el("option", `#${p.id} ${p.name}`, { value: p.id }));
      }
    }
  }).catch((err) => showError(err, $("compare")));
  $("compare").addEventListener("click", (e) => act(e.currentTarget, async () => {
    const other = $("compare-with").value;
    const diff = await get(`/api/plans/${planId}/compare?with=${encodeURIComponent(other)}`);
    const before = state.changed;
    state.changed = new Set(diff.changed_units.map((d) => d.unit));
    restyleUnits(new Set([...before, ...state.changed]));
    const table = $("compare-table");
    table.hidden = false;
    // each score by its name, shares as percentages; a score the page has no name for is left out
    table.tBodies[0].replaceChildren(...COMPARED.filter(([key]) => key in diff.scores).map(([key, label, kind]) => {
      const v = diff.scores[key];
      const show = (x, signed) => {
        if (x === null || x === undefined) return "—";
        const text = kind === "share" ? gpLocale.percent(x, 1) : kind === "ratio" ? number(Math.round(x * 100) / 100)
          : number(x);
        return signed && x > 0 ? "+" + text : text;
      };
      const row = el("tr", null, { "data-score": key });
      row.append(el("td", label), el("td", show(v.plan)), el("td", show(v.other)), el("td", show(v.difference, true)));
      return row;
    }));
    const households = diff.changed_units.reduce((n, d) => n + (state.units.get(d.unit)?.feature.properties.households || 0), 0);
    $("compare-summary").textContent = t("{n} units change community", { n: number(diff.changed_units.length) })
      + (state.byView ? "" : t(" ({n} households)", { n: number(households) }));
    window.gridplan.comparison = diff;
  }));
  $("export-gpkg").href = scoped(`/api/plans/${planId}/export?format=gpkg`);
  $("export-shp").href = scoped(`/api/plans/${planId}/export?format=shp`);

  // --- the plan as a document and its approval ----------------------------------------------------

  const DOCUMENT = { rename: t("Rename"), duplicate: t("Duplicate"), delete: t("Delete draft") };
  for (const action of config.documentActions || []) {
    const button = el("button", DOCUMENT[action], { type: "button", "data-document": action });
    $("document-actions").append(button);
    button.addEventListener("click", () => act(button, async () => {
      if (action === "rename") {
        $("rename-form").hidden = false;
        $("rename-input").value = config.plan.name;
        $("rename-input").focus();
      } else if (action === "duplicate") {
        const answer = await request("POST", `/api/plans/${planId}/duplicate`, {});
        window.location = answer.url;
      } else if (action === "delete") {
        if (!window.confirm(t("Delete the draft “{name}”? This cannot be undone.", { name: config.plan.name }))) return;
        await request("DELETE", `/api/plans/${planId}`, { version: state.version });
        window.location = "/plans";
      }
    }));
  }
  $("rename-cancel").addEventListener("click", () => { $("rename-form").hidden = true; });
  $("rename-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act(e.currentTarget, async () => {
      const answer = await post("rename", { name: $("rename-input").value });
      state.version = answer.version;
      config.plan.name = answer.name;
      document.title = t("Plan {name}", { name: answer.name });
      $("rename-form").hidden = true;
      $("plan-title").textContent = planTitle();
    });
  });

  const box = $("actions");
  for (const { action, label } of config.actions) {
    const button = el("button", label, { type: "button", "data-action": action });
    button.addEventListener("click", () => act(button, async () => {
      // submitting, approving and adopting are read before the click: what it changes, the rules it breaks
      if (["submit", "approve", "adopt"].includes(action)) { await confirmStep(action, label); return; }
      const answer = action === "rebase" ? await post("rebase", {})
        : await post("status", { action, comment: $("comment").value });
      status(`${answer.status || action}: v${answer.version}`);
      setTimeout(() => window.location.reload(), 800);
    }));
    box.append(button);
  }

  // --- the confirmation: what submitting, approving or adopting would change, names beside codes ---

  const named = (code, name) => (name ? `${name} · ${code}` : code);
  const LISTED = 30;
  function section(title, items, cls) {
    if (!items.length) return [];
    const list = el("ul", null, cls ? { class: cls } : undefined);
    list.append(...items.slice(0, LISTED).map((text) => el("li", text)));
    if (items.length > LISTED) list.append(el("li", t("and {n} more", { n: number(items.length - LISTED) }), { class: "more" }));
    // the brackets are the language's: full-width in Chinese, plain in English
    return [el("h3", t("{title} ({n})", { title, n: number(items.length) })), list];
  }
  function brokenRuleText(r) {
    const who = named(r.community_code, r.community_name);
    if (r.rule === "not_contiguous") return t("{community} is not contiguous ({pieces} separate pieces)", { community: who, pieces: number(r.value) });
    if (r.rule === "below_minimum") return t("{community} holds {households} households, below the minimum of {limit}", { community: who, households: number(r.value), limit: number(r.limit) });
    return t("{community} holds {households} households, above the maximum of {limit}", { community: who, households: number(r.value), limit: number(r.limit) });
  }
  function previewParts(p) {
    const cellName = (code) => named(code, p.names?.[code.slice(0, 12)]);
    return [
      el("p", t("Streets: {streets}", { streets: gpLocale.list(p.streets.map((s) => named(s.code, s.name))) || "—" })),
      ...section(t("Rules this plan breaks"), p.broken_rules.map(brokenRuleText), "rules"),
      ...section(t("Communities created"), p.created.map((c) => t("{community}: {households} households", { community: named(c.code, c.name), households: number(c.households) }))),
      ...section(t("Communities retired"), p.retired.map((c) => (c.successor
        ? t("{community}: {households} households, mostly to {successor}", { community: named(c.code, c.name), households: number(c.households), successor: named(c.successor.code, c.successor.name) })
        : t("{community}: {households} households", { community: named(c.code, c.name), households: number(c.households) })))),
      ...section(t("Communities renamed"), p.renamed.map((c) => said(c.code, `${c.name_before} → ${c.name_after}`))),
      ...section(t("Communities changed"), p.changed.map((c) => t("{community}: {before} → {after} households", { community: named(c.code, c.name), before: number(c.households_before), after: number(c.households_after) }))),
      el("p", t("Households that change community: {households} (in {units} units)", { households: number(p.households_moved), units: number(p.units_moved) })),
      ...section(t("Grid cells that would straddle two communities"), p.straddling_cells.map((c) => said(c.code,
        c.communities.map((x) => `${named(x.code, x.name)} ${gpLocale.percent(x.share, 0)}`).join(t(", "))))),
      ...section(t("Grid cells that would carry a retired code"), p.cells_with_retired_code.map((c) => t("{cell}: code of {retired}, now in {community}", { cell: c.code, retired: named(c.retired.code, c.retired.name), community: named(c.community.code, c.community.name) }))),
      ...section(t("Supervisors whose cells change"), p.supervisors.map((s) => supervisorText(s, cellName))),
      ...section(t("Open cases in those cells"), p.open_cases.listed.map((c) => t("{title} ({n})", { title: c.code, n: c.grid_code || c.community_code ? cellName(c.grid_code || c.community_code) : "—" }))),
      ...(p.open_cases.count > p.open_cases.listed.length ? [el("p", t("{n} open cases in all", { n: number(p.open_cases.count) }), { class: "muted" })] : []),
    ];
  }
  // "label: text" with the language's colon (full-width in Chinese only)
  function said(label, text) { return t("{label}: {text}", { label, text }); }
  function supervisorText(s, cellName) {
    const held = s.cells.map(cellName).join(t(", "));
    const scope = s.scope_code ? t("scope {scope}", { scope: cellName(s.scope_code) }) : "";
    return said(s.name, [held, scope].filter(Boolean).join(t("; ")) || "—");
  }
  const TITLES = { submit: t("Submit plan “{name}”"), approve: t("Approve plan “{name}”"), adopt: t("Adopt plan “{name}”") };
  function confirmStep(action, label) {
    const dialog = $("adoption-dialog");
    const confirmButton = $("adoption-confirm");
    $("adoption-title").textContent = fillName(TITLES[action]);
    $("adoption-body").replaceChildren();
    $("adoption-loading").hidden = false;
    $("reason-label").hidden = true;
    $("reason-missing").hidden = true;
    $("reason").value = "";
    $("reason").maxLength = config.reasonMax || 1000;
    confirmButton.textContent = label;
    confirmButton.disabled = true;
    window.gridplan.dialog = { action, ready: false };
    dialog.showModal();
    return new Promise((resolve) => {
      let preview = null;
      const close = () => { dialog.close(); resolve(); };
      $("adoption-cancel").onclick = close;
      dialog.onclose = () => resolve();
      get(`/api/plans/${planId}/adoption`).then((p) => {
        preview = p;
        $("adoption-loading").hidden = true;
        const parts = previewParts(p);
        if (action === "adopt") parts.unshift(el("p", t("Adopting replaces the current community boundaries of these streets; the grid cells can then be regenerated."), { class: "muted" }));
        $("adoption-body").replaceChildren(...parts);
        $("reason-label").hidden = !p.broken_rules.length;
        confirmButton.disabled = false;
        window.gridplan.dialog = { action, ready: true, preview: p };
      }).catch((err) => { close(); showError(err, box); });
      $("adoption-form").onsubmit = (e) => {
        e.preventDefault();
        const reason = $("reason").value.trim();
        if (preview && preview.broken_rules.length && !reason) { $("reason-missing").hidden = false; $("reason").focus(); return; }
        confirmButton.disabled = true;
        act(box, async () => {
          try {
            const answer = await post("status", { action, comment: $("comment").value, reason: reason || undefined });
            status(`${STATUS[answer.status] || answer.status}: v${answer.version}`);
            setTimeout(() => window.location.reload(), 800);
          } finally { dialog.close(); }
        }).then(resolve);
      };
    });
  }
  function fillName(text) { return text.replace("{name}", config.plan.name); }
  $("comment-label").hidden = !config.actions.some((a) => ["approve", "reject", "submit"].includes(a.action));
  const STEP = { create: t("created"), edit: t("edited"), rename: t("renamed"), name: t("named a community"),
    duplicate: t("duplicated"), submitted: t("submitted"), approved: t("approved"), rejected: t("rejected"),
    adopted: t("adopted"), draft: t("back to draft"), rebase: t("rebased"), undo: t("undid an edit"),
    redo: t("redid an edit") };
  function drawTimeline(steps) {
    // hand edits come in runs: one line per run
    const lines = [];
    for (const s of steps) {
      const last = lines[lines.length - 1];
      if (last && s.action === "edit" && last.action === "edit" && last.actor === s.actor) { last.count += 1; last.at = s.at; continue; }
      lines.push({ ...s, count: 1 });
    }
    $("timeline").replaceChildren(...lines.map((s) => {
      const item = el("li", null, { "data-action": s.action });
      const step = s.label || STEP[s.action] || t("changed");  // the server names the step
      const what = `${step}${s.count > 1 ? ` ×${s.count}` : ""}`
        + (s.action === "rename" && s.detail.name ? said("", s.detail.name) : "")
        + (s.action === "name" && s.detail.name ? said("", `${s.detail.community} ${s.detail.name}`) : "");
      item.append(el("time", gpLocale.date(s.at)), " ", el("strong", s.actor), " ", el("span", what));
      if (s.comment) item.append(el("q", s.comment));
      if (s.detail && s.detail.reason) item.append(" ", el("q", t("Reason: {reason}", { reason: s.detail.reason }), { class: "reason" }));
      return item;
    }));
  }
  drawTimeline(config.timeline || []);
  $("workflow").hidden = false;
  if (config.stale) {
    const stale = $("stale");
    stale.hidden = false;
    // the server names the streets and the communities that changed, names beside codes
    stale.textContent = config.stale.message;
  }
  if (config.adoption) {
    const a = config.adoption;
    const list = $("adoption");
    list.hidden = false;
    const p = a.preview;
    if (p) {  // adopted with its confirmation kept: names beside codes
      list.replaceChildren(el("h3", t("What the adoption changed")), ...previewParts(p));
      if (a.reason) list.append(el("p", t("Reason: {reason}", { reason: a.reason })));
    } else {  // adopted before confirmations were kept
      const lines = el("ul");
      lines.append(...[
        [t("Communities created"), a.created], [t("Communities retired"), a.retired], [t("Communities changed"), a.changed],
        [t("Grid cells straddling two communities"), a.straddling_cells],
        [t("Grid cells carrying a retired code"), a.cells_with_retired_code],
      ].map(([label, codes]) => el("li", `${label}: ${(codes || []).length ? gpLocale.list(codes) : "—"}`)));
      list.replaceChildren(lines);
    }
    showRegenerated(a.regenerated);
  }
  function showRegenerated(r) {
    if (!r) return;
    const names = Object.fromEntries((r.communities || []).map((c) => [c.code, c.name]));
    const cell = (code) => named(code, names[code.slice(0, 12)]);
    $("regenerated").replaceChildren(
      el("p", t("Cells regenerated on {at}: {communities} communities, {cells} cells ({kept} kept, {new} new, {removed} removed).", {
        at: gpLocale.date(r.at), communities: number(r.communities.length), cells: number(r.cells),
        kept: number(r.kept), new: number(r.new.length), removed: number(r.removed.length) })),
      ...section(t("Communities"), r.communities.map((c) => named(c.code, c.name))),
      ...section(t("Supervisors passed to successor cells"), [...r.assignments.map((x) => said(x.user, `${cell(x.from)} → ${cell(x.to)}`)),
        ...r.scopes.map((x) => said(x.name, `${x.from} → ${cell(x.to)}`))]),
      // every open case of the plan's streets is placed again, not only the ones the preview listed
      // (those in the changed cells): say which count is which, so 4 before and "3 of 5" after agree
      el("p", t("Open cases in the plan's streets checked again: {open}; {moved} of them now in another cell or community",
        { moved: number(r.cases.moved), open: number(r.cases.open) })),
      ...section(t("Cells outside the rules"), r.problems || []));
  }
  if (config.regenerate) {
    $("regeneration").hidden = false;
    const button = $("regenerate");
    button.addEventListener("click", () => act(button, async () => {
      button.disabled = true;
      const bar = $("regenerate-progress");
      try {
        const started = await request("POST", `/api/plans/${planId}/regenerate-cells`, {});
        bar.hidden = false;
        status(t("Regenerating the grid cells…"));
        for (;;) {
          await new Promise((r) => setTimeout(r, 1000));
          const job = await get(started.url);
          bar.value = job.progress || 0;
          if (job.status === "done") { showRegenerated(job.result); status(t("Grid cells regenerated")); break; }
          if (job.status === "failed") throw Object.assign(new Error(job.message), { problem: { detail: job.message } });
        }
      } finally { bar.hidden = true; button.disabled = false; }
    }));
  }

  // --- loading: every unit of a small plan; outlines, then units by view, for a large one -----------

  let outlineTicket = 0, outlineTimer = 0;
  async function loadOutlines() {
    const ticket = ++outlineTicket;
    const found = await get(`/api/plans/${planId}/outlines?zoom=${Math.round(map.getZoom())}`);
    if (ticket !== outlineTicket) return;
    outlines.clearLayers();
    outlineOf.clear();
    for (const f of found.features) outlineOf.set(f.properties.code, f);
    outlines.addData(found);
    drawLabels();
  }
  async function loadOutlinesOf(codes) {
    if (!codes.length) return;
    const ticket = outlineTicket;  // a whole reload asked meanwhile wins
    const query = new URLSearchParams({ zoom: String(Math.round(map.getZoom())), codes: codes.join(",") });
    const found = await get(`/api/plans/${planId}/outlines?${query}`);
    if (ticket !== outlineTicket) return;
    const wanted = new Set(codes);
    for (const l of outlines.getLayers()) if (wanted.has(l.feature.properties.code)) outlines.removeLayer(l);
    for (const code of codes) outlineOf.delete(code);
    for (const f of found.features) outlineOf.set(f.properties.code, f);
    outlines.addData(found);
    window.gridplan.outlineAnswerBytes = JSON.stringify(found).length;
    drawLabels();
  }
  function refreshOutlines() {
    clearTimeout(outlineTimer);
    outlineTimer = setTimeout(() => loadOutlines().catch((err) => showError(err)), 150);
  }
  let unitTicket = 0;
  async function loadUnits() {
    const ticket = ++unitTicket;
    if (!state.byView) return;
    outlinesClickable();
    if (map.getZoom() < state.unitZoom) { return; }
    const b = map.getBounds().pad(0.25);
    const bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => v.toFixed(5)).join(",");
    const zoom = Math.round(map.getZoom());
    const found = await get(`/api/plans/${planId}/units?bbox=${bbox}&zoom=${zoom}`);
    if (ticket !== unitTicket || stroke.active) return;
    // a pan keeps the units still in view and draws only the new ones; another zoom redraws all
    // (their outlines are simplified for the zoom they were sent at)
    if (zoom !== state.unitsAtZoom) {
      units.clearLayers();
      state.units.clear();
      state.unitsAtZoom = zoom;
    }
    const arrived = new Set(found.features.map((f) => f.properties.code));
    for (const [code, u] of state.units) {
      if (!arrived.has(code)) { units.removeLayer(u.layer); state.units.delete(code); }
    }
    const fresh = [];
    for (const f of found.features) {
      const shown = state.units.get(f.properties.code);
      if (!shown) { fresh.push(f); continue; }
      if (shown.feature.properties.community_code !== f.properties.community_code) {
        shown.feature.properties = f.properties;  // changed elsewhere since it was drawn
        shown.layer.setStyle(unitStyle(shown.feature));
      }
    }
    units.addData({ type: "FeatureCollection", features: fresh });
    buildGrid();
    window.gridplan.unitsLoaded = found.features.length;
    window.gridplan.unitLoads = (window.gridplan.unitLoads || 0) + 1;
  }
  let lastZoom = null;
  map.on("moveend", () => {
    drawLabels();
    if (!window.gridplan.ready) return;
    const zoom = Math.round(map.getZoom());
    if (zoom !== lastZoom) { lastZoom = zoom; refreshOutlines(); restyleOutlines(); }
    if (state.byView) loadUnits().catch((err) => showError(err));
  });

  async function start() {
    const plan = await get(`/api/plans/${planId}`);
    state.byView = plan.by_view;
    state.unitZoom = plan.unit_zoom;
    state.rules = plan.rules;
    for (const c of plan.communities) state.communities.set(c.community_code, c);
    state.version = plan.version;
    showPlan(plan.scores);
    showWhole(plan.district ? plan.plan_scores : null);
    drawTable();
    $("edit-tools").hidden = !config.editable;
    history.set(plan.history);
    const first = state.byView ? Promise.resolve(null) : get(`/api/plans/${planId}/units`);
    await loadOutlines();
    lastZoom = Math.round(map.getZoom());
    window.gridplan.firstDrawAt = performance.now();
    const found = await first;
    if (found) {
      units.addData(found);
      buildGrid();
      if (found.features.length) map.fitBounds(units.getBounds(), { animate: false });
    }
    outlinesClickable();
    fillMoveTargets();
    window.gridplan.readyAt = performance.now();  // the map is drawn: ms since navigation started
    window.gridplan.ready = true;
    if (state.byView) await loadUnits();
    status(config.editable ? (state.byView ? t("Zoom in to level {zoom} to select units", { zoom: state.unitZoom }) : t("Click units to select them"))
      : t("{status}: read-only", { status: STATUS[config.plan.status] || config.plan.status }));
  }
  start().catch((err) => { status(t("Could not load")); showError(err); });
  window.addEventListener("unhandledrejection", (event) => { event.preventDefault(); showError(event.reason || new Error("?")); });
})();
