/* The grid page: the grid cells (网格) of one community or one street, on the map and in a table
   — households against the cells' range, grid supervisor, problems in words — with generate,
   split, merge and assign for planners and administrators. Every button calls the grid API, so
   the page makes the same checks as the API; a refusal is shown where the user acted, in the
   server's words. Text from the database is only ever inserted with textContent. */
"use strict";
(function () {
  const { config, map, el, figures, number, status } = window.gp;
  const token = document.querySelector("meta[name=csrf-token]").content;
  const $ = (id) => document.getElementById(id);
  const scope = config.scope;
  const state = { cells: new Map(), selected: null, data: null, busy: 0 };
  window.gridplan = { map, state, ready: false };
  const { minimum: MIN, maximum: MAX } = config.rules;

  // --- talking to the API ----------------------------------------------------------------------

  async function request(method, url, body) {
    let response;
    try {
      response = await fetch(url, { method, credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": token },
        body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) { throw Object.assign(new Error(t("Could not reach the server: check the connection and try again.")), { network: true }); }
    let answer = null;
    try { answer = await response.json(); } catch (err) { answer = null; }
    if (!response.ok) {
      const problem = { status: response.status, ...(answer || {}) };
      throw Object.assign(new Error(problem.detail || problem.title || response.statusText), { problem });
    }
    return answer;
  }

  function showError(err, where) {
    const host = (where && where.closest && where.closest("section")) || $("panel");
    let box = host.querySelector(":scope > .banner");
    if (!box) {
      box = el("div", null, { class: "banner", role: "alert" });
      const heading = host.querySelector(":scope > h2");
      if (heading) heading.after(box); else host.prepend(box);
    }
    const status = err.problem?.status;
    const headline = status === 403 ? t("Your role does not allow this.") : status >= 500
      ? t("The server failed: try again later, and tell an administrator if it happens again.") : t("This could not be done.");
    const close = el("button", "×", { type: "button", class: "close", "aria-label": t("Close") });
    close.addEventListener("click", () => box.remove());
    box.replaceChildren(close, el("strong", headline), el("div", err.message, { class: "detail" }));
    box.scrollIntoView({ block: "nearest" });
    window.gridplan.lastError = { headline, detail: err.message, status };
  }
  async function act(where, fn) {
    state.busy += 1;
    for (const b of document.querySelectorAll(".banner")) b.remove();
    const buttons = [...document.querySelectorAll("#panel button")];
    buttons.forEach((b) => { b.dataset.wasDisabled = b.disabled ? "1" : ""; b.disabled = true; });
    try { return await fn(); } catch (err) { showError(err, where); return undefined; } finally {
      buttons.forEach((b) => { b.disabled = b.dataset.wasDisabled === "1"; });
      state.busy -= 1;
      showCell();
    }
  }

  // --- the scope picker: street, then community -------------------------------------------------

  const named = (x) => (x.name ? `${x.name} · ${x.code}` : x.code);
  $("pick-street").replaceChildren(...config.streets.map((s) => el("option", named(s), { value: s.code })));
  $("pick-street").value = config.street.code;
  $("pick-community").replaceChildren(el("option", t("All communities of the street"), { value: "" }),
    ...config.communities.map((c) => el("option", named(c), { value: c.code })));
  $("pick-community").value = scope.community || "";
  $("pick-street").addEventListener("change", (e) => { window.location = `/grid?street=${encodeURIComponent(e.target.value)}`; });
  $("pick-community").addEventListener("change", (e) => {
    window.location = e.target.value ? `/grid?community=${encodeURIComponent(e.target.value)}`
      : `/grid?street=${encodeURIComponent(config.street.code)}`;
  });
  const place = config.community ? named(config.community) : named(config.street);
  $("grid-title").textContent = t("Grid cells of {scope}", { scope: place });
  $("generate-help").textContent = t("Cells of {minimum}–{maximum} households, made of whole planning units; a cell that still meets the range keeps its units and its code.",
    { minimum: number(MIN), maximum: number(MAX) });
  $("grid-actions").hidden = !config.editable;
  for (const box of document.querySelectorAll("#cell .editing")) box.hidden = !config.editable;

  // --- the map ---------------------------------------------------------------------------------

  const look = (p) => (p.households < MIN ? "below" : p.households > MAX ? "above" : "within");
  const FILL = { within: "#b8e186", below: "#92c5de", above: "#f4a582" };
  function cellStyle(f) {
    const chosen = f.properties.code === state.selected;
    const broken = f.properties.problems.length > 0;
    return { color: chosen ? "#000" : broken ? "#b2182b" : "#4d4d4d", weight: chosen ? 4 : broken ? 2 : 1.2,
      dashArray: look(f.properties) === "below" && !chosen ? "5 4" : null,
      fillColor: FILL[look(f.properties)], fillOpacity: chosen ? 0.75 : 0.55 };
  }
  const cellPane = map.createPane("gridCells");
  cellPane.style.zIndex = 410;
  const outlinePane = map.createPane("gridCommunities");
  outlinePane.style.zIndex = 420;
  outlinePane.style.pointerEvents = "none";
  const cells = L.geoJSON(null, { pane: "gridCells", renderer: L.svg({ pane: "gridCells" }), style: cellStyle,
    onEachFeature: (f, layer) => {
      state.cells.set(f.properties.code, { feature: f, layer });
      layer.bindTooltip(() => el("div", `${f.properties.code} · ${t("{n} households", { n: number(f.properties.households) })}`), { sticky: true });
      layer.on("click", () => select(f.properties.code, false));
    } }).addTo(map);
  // communities clearly heavier than the cells they hold
  const communities = L.geoJSON(null, { pane: "gridCommunities", renderer: L.svg({ pane: "gridCommunities" }),
    interactive: false, style: { color: "#222", weight: 3.5, fill: false } }).addTo(map);
  const labels = L.layerGroup().addTo(map);
  window.gp.addLabels({ group: labels, minZoom: 0, priority: 0, max: 400, entries: () => [...state.cells.values()]
    .sort((a, b) => b.feature.properties.area_m2 - a.feature.properties.area_m2)
    .map((c) => ({ latlng: c.layer.getCenter(), className: "cell-label",
      content: (() => { const box = el("div"); box.append(el("strong", `…${c.feature.properties.code.slice(-3)}`), el("div", number(c.feature.properties.households))); return box; })() })) });
  L.control.layers(null, Object.assign({ [t("Grid cells")]: cells, [t("Communities")]: communities, [t("Cell labels")]: labels },
    window.gp.base.group ? { [t("Roads and water")]: window.gp.base.group } : {}), { collapsed: false }).addTo(map);
  window.gp.legend(t("Legend"), (box) => {
    box.append(el("strong", t("Households per cell")));
    const row = (style, text) => { const r = el("div"); const i = el("i"); i.style.cssText = style; r.append(i, text); box.append(r); };
    row(`background:${FILL.below};border:2px dashed #4d4d4d`, t("below {n} households", { n: number(MIN) }));
    row(`background:${FILL.within};border:1px solid #4d4d4d`, t("{minimum}–{maximum} households", { minimum: number(MIN), maximum: number(MAX) }));
    row(`background:${FILL.above};border:1px solid #4d4d4d`, t("above {n} households", { n: number(MAX) }));
    row("border:2px solid #b2182b", t("Cell with a problem"));
    row("border:3px solid #222", t("Community boundary"));
  });

  // --- the table and the selected cell ------------------------------------------------------------

  function bar(p) {
    const top = Math.max(MAX * 1.25, p.households);
    const box = el("div", null, { class: "hh-bar", title: `${p.households} / ${MIN}–${MAX}` });
    const fill = el("span", null, { class: `fill ${look(p)}` });
    fill.style.width = `${(100 * p.households) / top}%`;
    box.append(fill);
    for (const [value, cls] of [[MIN, "min"], [MAX, "max"]]) {
      const tick = el("i", null, { class: cls });
      tick.style.left = `${(100 * value) / top}%`;
      box.append(tick);
    }
    return box;
  }
  function drawTable() {
    const rows = [...state.cells.values()].map(({ feature: { properties: p } }) => {
      const row = el("tr", null, { "data-code": p.code, class: p.code === state.selected ? "chosen" : "" });
      const code = el("td");
      code.append(el("div", p.code, { class: "code" }), el("div", p.community_name || "", { class: "muted" }));
      const hh = el("td", null, { class: "count" });
      hh.append(el("span", number(p.households)), bar(p));
      const problems = el("td");
      problems.append(...p.problems.map((text) => el("div", text, { class: "flag-above" })));
      row.append(code, hh, el("td", gpLocale.list(p.supervisors) || "—"), problems);
      row.addEventListener("click", () => select(p.code, true));
      return row;
    });
    $("cells-table").tBodies[0].replaceChildren(...rows);
    if (!rows.length) {
      const empty = el("tr"); empty.append(el("td", t("No grid cells yet."), { colspan: "4", class: "muted" }));
      $("cells-table").tBodies[0].append(empty);
    }
    $("cells-count").textContent = t("{n} cells", { n: number(rows.length) });
  }
  function showSummary() {
    const v = state.data.validation;
    const all = [...state.cells.values()].map((c) => c.feature.properties);
    const within = all.filter((p) => look(p) === "within").length;
    figures($("grid-figures"), [
      [t("Grid cells"), number(v.cells)],
      [t("Within {minimum}–{maximum} households", { minimum: number(MIN), maximum: number(MAX) }), `${number(within)} / ${number(all.length)}`,
        within < all.length ? "flag-above" : ""],
      [t("Cells with a supervisor"), `${number(all.filter((p) => p.supervisors.length).length)} / ${number(all.length)}`],
      [t("Households in no cell"), number(v.households_in_no_cell), v.households_in_no_cell ? "flag-above" : ""],
      [t("Gaps"), number(v.gaps), v.gaps ? "flag-above" : ""],
      [t("Overlaps"), number(v.overlaps), v.overlaps ? "flag-above" : ""],
    ]);
  }

  function select(code, frame) {
    state.selected = state.cells.has(code) ? code : null;
    cells.eachLayer((l) => l.setStyle(cellStyle(l.feature)));
    const entry = state.cells.get(code);
    if (entry) {
      entry.layer.bringToFront();
      if (frame) map.fitBounds(entry.layer.getBounds(), { maxZoom: 17, animate: false });
    }
    for (const row of $("cells-table").tBodies[0].rows) row.classList.toggle("chosen", row.dataset.code === code);
    const row = $("cells-table").querySelector(`tr[data-code="${CSS.escape(code || "")}"]`);
    if (row) row.scrollIntoView({ block: "nearest" });
    showCell();
    window.gridplan.selected = state.selected;
  }

  function showCell() {
    const entry = state.cells.get(state.selected);
    $("cell").hidden = !entry;
    if (!entry) return;
    const p = entry.feature.properties;
    $("cell-title").textContent = t("Cell {code}", { code: p.code });
    figures($("cell-figures"), [
      [t("Community"), `${p.community_name || ""} · ${p.community_code}`],
      [t("Households"), number(p.households), look(p) === "within" ? "" : "flag-above"],
      [t("Planning units"), number(p.units)],
      [t("Area"), `${number(Math.round(p.area_m2))} m²`],
      [t("Grid supervisor"), gpLocale.list(p.supervisors) || "—"],
    ]);
    $("cell-problems").replaceChildren(...p.problems.map((text) => el("li", text)));
    if (!config.editable) return;
    const others = [...state.cells.values()].map((c) => c.feature.properties)
      .filter((o) => o.code !== p.code && o.community_code === p.community_code);
    const keep = $("merge-into").value;
    $("merge-into").replaceChildren(...others.map((o) => el("option", t("{code} ({n} households)", { code: o.code, n: number(o.households) }), { value: o.code })));
    if (others.some((o) => o.code === keep)) $("merge-into").value = keep;
    $("merge").disabled = !others.length || state.busy > 0;
    $("split").disabled = state.busy > 0;
    // only supervisors whose scope holds the cell (the API refuses the others), and those who hold
    // it already (to take them off); each with their scope's name beside its code
    const fits = (s) => s.scope && p.code.startsWith(s.scope);
    const assigned = p.assigned || [];
    const who = $("assign-who").value;
    const people = config.supervisors.filter((s) => fits(s) || assigned.includes(s.name))
      .sort((a, b) => a.name.localeCompare(b.name));
    const label = (s) => [s.name, s.scope_name, s.scope].filter(Boolean).join(" · ");
    $("assign-who").replaceChildren(...(people.length ? people.map((s) => el("option", label(s), { value: s.name }))
      : [el("option", t("No supervisor's scope holds this cell"), { value: "", disabled: "" })]));
    if (people.some((s) => s.name === who)) $("assign-who").value = who;
    const chosen = $("assign-who").value;
    $("assign").disabled = !people.some((s) => s.name === chosen && fits(s)) || state.busy > 0;
    $("unassign").disabled = !assigned.includes(chosen) || state.busy > 0;
  }

  // --- loading -----------------------------------------------------------------------------------

  const query = scope.community ? `community=${scope.community}` : `street=${scope.street}`;
  async function load() {
    const data = await request("GET", `/api/grid/cells?${query}`);
    state.data = data;
    state.cells.clear();
    cells.clearLayers();
    cells.addData(data);
    drawTable();
    showSummary();
    if (!state.cells.has(state.selected)) state.selected = null;
    select(state.selected, false);
    window.gp.relabel();
    window.gridplan.loads = (window.gridplan.loads || 0) + 1;
    return data;
  }
  async function loadCommunities() {
    const params = scope.community ? { code: scope.community } : { street_code: scope.street };
    communities.addData(await window.gp.features("communities", params));
  }

  // --- the actions: each the grid API's own call ----------------------------------------------------

  $("generate").addEventListener("click", (e) => act(e.currentTarget, async () => {
    const answer = await request("POST", "/api/grid", scope.community ? { community: scope.community } : { street: scope.street });
    $("generate-problems").replaceChildren(...(answer.problems || []).slice(0, 20).map((p) => el("li", p.reason)));
    await load();
    status(t("{cells} cells generated; {share} within the range", { cells: number(answer.cells), share: gpLocale.percent(answer.in_range_share) }));
    window.gridplan.lastAnswer = answer;
  }));
  $("split").addEventListener("click", (e) => act(e.currentTarget, async () => {
    const code = state.selected;
    const answer = await request("POST", "/api/grid/split", { cell: code });
    await load();
    status(t("Cell {code} split in two", { code }));
    window.gridplan.lastAnswer = answer;
  }));
  $("merge").addEventListener("click", (e) => act(e.currentTarget, async () => {
    const merge = state.selected, keep = $("merge-into").value;
    const answer = await request("POST", "/api/grid/merge", { keep, merge });
    state.selected = keep;
    await load();
    status(t("Cell {merge} merged into {keep}", { merge, keep }));
    window.gridplan.lastAnswer = answer;
  }));
  $("assign-who").addEventListener("change", () => showCell());  // assign or take off: who is chosen
  for (const [id, remove] of [["assign", false], ["unassign", true]]) {
    $(id).addEventListener("click", (e) => act(e.currentTarget, async () => {
      const cell = state.selected, user = $("assign-who").value;
      const answer = await request("POST", "/api/grid/assignments", { user, cells: [cell], remove });
      await load();
      status(remove ? t("{user} no longer holds cell {cell}", { user, cell }) : t("{user} now holds cell {cell}", { user, cell }));
      window.gridplan.lastAnswer = answer;
    }));
  }

  async function start() {
    await Promise.all([load(), loadCommunities()]);
    const drawn = cells.getLayers().length ? cells : communities;
    if (drawn.getLayers().length) map.fitBounds(drawn.getBounds(), { animate: false });
    status(config.editable ? t("Click a cell on the map or in the table") : t("Read-only"));
    window.gridplan.ready = true;
  }
  start().catch((err) => { status(t("Could not load")); showError(err); window.gridplan.ready = true; });
})();
