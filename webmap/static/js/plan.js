/* A plan on the map: units coloured by their community in the plan; click to select units and
   move them (to a neighbouring or a new community), split, merge, undo and redo, with the
   touched communities' figures and broken rules shown at once; the approval actions. */
"use strict";
(function () {
  const { config, map, el, figures, number, getJSON, status } = window.gp;
  const planId = config.plan.id;
  const token = document.querySelector("meta[name=csrf-token]").content;
  const state = { version: config.plan.version, units: new Map(), communities: new Map(), selected: new Set(),
    undo: [], redo: [], community: null, changed: new Set() };
  window.gridplan = { map, state, ready: false };

  function colour(code) {
    // codes of one street differ in their last digits: spread those round the colour wheel
    const n = parseInt((code || "0").replace(/\D/g, "").slice(-4), 10) || 0;
    return `hsl(${(n * 137.508) % 360}, 60%, ${55 + (n % 3) * 8}%)`;
  }
  const broken = (code) => (state.communities.get(code)?.violations || []).length > 0;

  function style(f) {
    const p = f.properties;
    const changed = state.changed.has(p.code);
    return {
      color: state.selected.has(p.code) ? "#000" : changed ? "#d7191c" : broken(p.community_code) ? "#d7191c" : "#666",
      weight: state.selected.has(p.code) ? 3 : changed ? 2.5 : 0.6, dashArray: changed ? "4 3" : null,
      fillColor: p.land_use === "water" ? "#74a9cf" : colour(p.community_code), fillOpacity: 0.7,
    };
  }
  const layer = L.geoJSON(null, {
    style,
    onEachFeature: (f, l) => {
      state.units.set(f.properties.code, { feature: f, layer: l });
      l.bindTooltip(() => el("div", `${f.properties.code} · ${number(f.properties.households)} 户 · ${f.properties.community_code}`));
      l.on("click", () => click(f.properties.code));
    },
  }).addTo(map);
  window.gridplan.layer = layer;

  function restyle() { layer.eachLayer((l) => l.setStyle(style(l.feature))); }

  function showPlan(scores) {
    document.getElementById("plan-title").textContent = `${config.plan.name} · ${config.plan.status} · v${state.version}`;
    figures(document.getElementById("plan-figures"), [
      ["社区 communities", number(scores.communities)],
      ["超出户数范围 outside the bounds", number(scores.outside_bounds), scores.outside_bounds ? "flag-above" : ""],
      ["不连通 not contiguous", number(scores.non_contiguous), scores.non_contiguous ? "flag-above" : ""],
      ["迁移户数 households moved", `${number(scores.households_moved)} (${(100 * scores.households_moved_share).toFixed(1)}%)`],
      ["户数 min / median / max", `${number(scores.households_min)} / ${number(scores.households_median)} / ${number(scores.households_max)}`],
      ["紧凑度 Polsby–Popper mean", scores.pp_mean],
    ]);
    window.gridplan.scores = scores;
  }

  function showCommunity(code) {
    state.community = code;
    const c = state.communities.get(code);
    if (!c) return;
    document.getElementById("selected").hidden = false;
    document.getElementById("selected-name").textContent = code;
    figures(document.getElementById("selected-figures"), [
      ["户数 households", number(c.households)], ["人口 population", number(c.population)],
      ["面积 area", `${((c.area_m2 || 0) / 1e6).toFixed(3)} km²`], ["紧凑度 Polsby–Popper", c.polsby_popper]]);
    const list = document.getElementById("violations");
    list.replaceChildren(...(c.violations || []).map((v) => el("li", v)));
    document.getElementById("split").disabled = !config.editable;
    document.getElementById("split-line").disabled = !config.editable;
    const merge = document.getElementById("merge-with");
    merge.replaceChildren(...[...state.communities.keys()].filter((k) => k !== code).map((k) => el("option", k, { value: k })));
    document.getElementById("merge").disabled = !config.editable;
  }

  function click(code) {
    if (state.mode) return;  // drawing a lasso or a line
    const unit = state.units.get(code).feature.properties;
    if (config.editable) {
      if (state.selected.has(code)) state.selected.delete(code); else state.selected.add(code);
      document.getElementById("selection").textContent = state.selected.size
        ? `${state.selected.size} 个单元 units selected` : "未选择 nothing selected";
      restyle();
    }
    showCommunity(unit.community_code);
  }

  function fillMoveTargets() {
    const select = document.getElementById("move-to");
    const options = [...state.communities.keys()].sort().map((k) => el("option", k, { value: k }));
    select.replaceChildren(el("option", "新社区 new community", { value: "new" }), ...options);
  }

  async function post(path, body) {
    const response = await fetch(`/api/plans/${planId}/${path}`, { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": token }, body: JSON.stringify({ ...body, version: state.version }) });
    const answer = await response.json();
    if (!response.ok) {
      const message = answer.detail || answer.description || response.statusText;
      status(`${response.status}: ${message}`);
      throw new Error(message);
    }
    return answer;
  }

  function apply(answer, moved) {
    state.version = answer.version;
    for (const code of moved) state.units.get(code).feature.properties.community_code = answer.to;
    for (const c of answer.communities) {
      if (c.removed) state.communities.delete(c.community_code); else state.communities.set(c.community_code, c);
    }
    showPlan(answer.plan);
    fillMoveTargets();
    restyle();
    showCommunity(answer.to);
    status(`v${state.version}: ${moved.length} 个单元移到 units moved to ${answer.to}`);
  }

  // undo and redo: one history of steps (units with the community each came from, and where they went)
  const history = {
    undo: state.undo, redo: state.redo,
    record(before, to) { this.undo.push({ before, to }); this.redo.length = 0; this.show(); },
    show() {
      document.getElementById("undo").disabled = !this.undo.length;
      document.getElementById("redo").disabled = !this.redo.length;
    },
    async back() {
      const step = this.undo.pop();
      if (!step) return;
      const groups = new Map();
      for (const [u, c] of step.before) groups.set(c, [...(groups.get(c) || []), u]);
      try { for (const [c, units] of groups) await move(units, c, false); } catch (err) { this.undo.push(step); this.show(); return; }
      this.redo.push(step);
      this.show();
    },
    async forward() {
      const step = this.redo.pop();
      if (!step) return;
      try { await move([...step.before.keys()], step.to, false); } catch (err) { this.redo.push(step); this.show(); return; }
      this.undo.push(step);
      this.show();
    },
  };

  async function move(units, to, record = true) {
    const before = new Map(units.map((u) => [u, state.units.get(u).feature.properties.community_code]));
    const answer = await post("moves", { units, to });
    apply(answer, units);
    if (record) history.record(before, answer.to);
    return answer;
  }

  async function undo() { await history.back(); }
  async function redo() { await history.forward(); }

  document.getElementById("move").addEventListener("click", () => {
    if (state.selected.size) move([...state.selected], document.getElementById("move-to").value).then(() => {
      state.selected.clear(); restyle(); document.getElementById("selection").textContent = "未选择 nothing selected";
    }).catch(() => {});  // the refusal is shown by post()
  });
  document.getElementById("clear").addEventListener("click", () => { state.selected.clear(); restyle(); });
  document.getElementById("undo").addEventListener("click", undo);
  document.getElementById("redo").addEventListener("click", redo);
  document.getElementById("split").addEventListener("click", async () => {
    const code = state.community;
    const answer = await post("split", { community: code });
    apply(answer, answer.units);
    history.record(new Map(answer.units.map((u) => [u, code])), answer.to);
  });
  document.getElementById("merge").addEventListener("click", async () => {
    const merge = document.getElementById("merge-with").value;
    const units = [...state.units.values()].filter((u) => u.feature.properties.community_code === merge)
      .map((u) => u.feature.properties.code);
    await move(units, state.community);
  });
  // compare with the current boundaries or another plan: changed units dashed, a table of scores
  getJSON("/api/plans").then((data) => {
    const select = document.getElementById("compare-with");
    for (const p of data.plans) if (p.id !== planId) select.append(el("option", `#${p.id} ${p.name}`, { value: p.id }));
  });
  document.getElementById("compare").addEventListener("click", async () => {
    const other = document.getElementById("compare-with").value;
    const diff = await getJSON(`/api/plans/${planId}/compare?with=${other}`);
    state.changed = new Set(diff.changed_units.map((d) => d.unit));
    restyle();
    const table = document.getElementById("compare-table");
    table.hidden = false;
    table.tBodies[0].replaceChildren(...Object.entries(diff.scores).map(([key, v]) => {
      const row = el("tr");
      row.append(el("td", key), el("td", v.plan), el("td", v.other), el("td", v.difference));
      return row;
    }));
    const households = diff.changed_units.reduce((n, d) => n + (state.units.get(d.unit)?.feature.properties.households || 0), 0);
    document.getElementById("compare-summary").textContent =
      `${diff.changed_units.length} 个单元改变社区 units change community (${number(households)} 户 households)`;
    window.gridplan.comparison = diff;
  });

  // lasso: drag a loop round units to select them (the map does not pan meanwhile)
  function inside(point, ring) {
    let hit = false;
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [xi, yi] = ring[i], [xj, yj] = ring[j];
      if ((yi > point[1]) !== (yj > point[1]) && point[0] < ((xj - xi) * (point[1] - yi)) / (yj - yi) + xi) hit = !hit;
    }
    return hit;
  }
  function selectWithin(ring) {
    for (const [code, u] of state.units) {
      if (inside([u.feature.properties.lon, u.feature.properties.lat], ring)) state.selected.add(code);
    }
    document.getElementById("selection").textContent = `${state.selected.size} 个单元 units selected`;
    restyle();
  }
  window.gridplan.selectWithin = selectWithin;
  document.getElementById("lasso").addEventListener("click", () => {
    map.dragging.disable();
    state.mode = "lasso";
    status("按住鼠标圈选单元 drag a loop round the units");
    let ring = null, line = null;
    const down = (e) => { ring = [[e.latlng.lng, e.latlng.lat]]; line = L.polyline([e.latlng], { color: "#000", dashArray: "4 4" }).addTo(map); };
    const move = (e) => { if (ring) { ring.push([e.latlng.lng, e.latlng.lat]); line.addLatLng(e.latlng); } };
    const up = () => {
      if (ring && ring.length > 2) selectWithin(ring);
      if (line) line.remove();
      map.off("mousedown", down); map.off("mousemove", move); map.off("mouseup", up);
      map.dragging.enable();
      state.mode = null;
    };
    map.on("mousedown", down); map.on("mousemove", move); map.on("mouseup", up);
  });

  // split along a line: click points across the selected community, double-click to finish
  document.getElementById("split-line").addEventListener("click", () => {
    const code = state.community;
    const points = [];
    const line = L.polyline([], { color: "#000", weight: 3 }).addTo(map);
    map.doubleClickZoom.disable();
    state.mode = "line";
    status(`点击画线穿过 ${code}，双击结束 click a line across ${code}, double-click to finish`);
    const add = (e) => { points.push([e.latlng.lng, e.latlng.lat]); line.addLatLng(e.latlng); };
    const finish = async () => {
      map.off("click", add); map.off("dblclick", finish); map.doubleClickZoom.enable(); line.remove();
      state.mode = null;
      const answer = await post("split", { community: code, line: points });
      apply(answer, answer.units);
      history.record(new Map(answer.units.map((u) => [u, code])), answer.to);
    };
    map.on("click", add); map.on("dblclick", finish);
  });
  document.getElementById("export-gpkg").href = `/api/plans/${planId}/export?format=gpkg`;
  document.getElementById("export-shp").href = `/api/plans/${planId}/export?format=shp`;

  // the workflow actions this user may take on this plan now: the server's transitions decide
  const box = document.getElementById("actions");
  for (const { action, label, confirm: ask } of config.actions) {
    const button = el("button", label, { type: "button", "data-action": action });
    button.addEventListener("click", async () => {
      if (ask && !window.confirm("采用后将替换这些街道的现状社区边界。确定采用？ Adopting replaces the current boundaries of the plan's streets. Adopt?")) return;
      try {
        const answer = action === "rebase" ? await post("rebase", {})
          : await post("status", { action, comment: document.getElementById("comment").value });
        status(`${answer.status || action}: v${answer.version}`);
        setTimeout(() => window.location.reload(), 800);
      } catch (err) { /* shown by post() */ }
    });
    box.append(button);
  }
  document.getElementById("workflow").hidden = !config.actions.length && !config.stale && !config.adoption;
  if (config.stale) {
    const stale = document.getElementById("stale");
    stale.hidden = false;
    stale.textContent = `现状边界已变化 the boundaries of streets ${config.stale.streets.join(", ")} changed since this plan was made`
      + (config.stale.communities.length ? ` (communities ${config.stale.communities.join(", ")})` : "")
      + ": 请按现状重算 rebase it before submitting.";
  }
  if (config.adoption) {
    const a = config.adoption;
    const list = document.getElementById("adoption");
    list.hidden = false;
    list.replaceChildren(...[
      ["新建社区 created", a.created], ["撤销社区 retired", a.retired], ["调整社区 changed", a.changed],
      ["跨社区网格 cells straddling two communities", a.straddling_cells],
      ["带撤销代码的网格 cells carrying a retired code", a.cells_with_retired_code],
    ].map(([label, codes]) => el("li", `${label}: ${(codes || []).length ? codes.join(", ") : "—"}`)));
  }

  async function start() {
    const [plan, units] = await Promise.all([getJSON(`/api/plans/${planId}`), getJSON(`/api/plans/${planId}/units`)]);
    for (const c of plan.communities) state.communities.set(c.community_code, c);
    state.version = plan.version;
    layer.addData(units);
    if (units.features.length) map.fitBounds(layer.getBounds(), { animate: false });
    showPlan(plan.scores);
    fillMoveTargets();
    document.getElementById("edit-tools").hidden = !config.editable;
    status(config.editable ? "点击单元选择 click units to select them" : `${config.plan.status}: 只读 read-only`);
    window.gridplan.ready = true;
  }
  start().catch((err) => status(`加载失败 failed to load: ${err.message}`));
  window.addEventListener("unhandledrejection", (event) => { event.preventDefault(); });
})();
