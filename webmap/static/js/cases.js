/* The supervisor's case pages: the list of open cases (overdue first), one case with its next
   steps, history and photos, and the report form (the phone's location and camera). Due times,
   time left and overdue come from the server, computed on the working calendar; text from the
   database is only ever inserted with textContent. Every change carries the CSRF token. */
"use strict";
(function () {
  const config = JSON.parse(document.getElementById("gridplan-config").textContent);
  const page = document.querySelector("main.cases").dataset.page;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  window.gridplan = { ready: false, config };

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }
  function status(text) { document.getElementById("status").textContent = text; }
  function when(iso) { return iso ? iso.replace("T", " ").slice(0, 16) : "—"; }
  function left(c) {
    if (!c.open) return c.closed_late ? "超期结案 closed late" : "";
    if (c.hours_left === null) return "未派遣 clock not started";
    const h = Math.abs(c.hours_left);
    const text = h >= 8 ? `${(h / 8).toFixed(1)} 工作日 working days` : `${h.toFixed(1)} 工作小时 working hours`;
    return c.overdue ? `逾期 overdue ${text}` : `剩余 left ${text}`;
  }

  async function call(url, options) {
    const response = await fetch(url, Object.assign({ credentials: "same-origin" }, options || {}));
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    return { ok: response.ok, status: response.status, body };
  }
  function post(url, body) {
    const headers = { "X-CSRFToken": csrf, Accept: "application/json" };
    if (!(body instanceof FormData)) headers["Content-Type"] = "application/json";
    return call(url, { method: "POST", headers, body: body instanceof FormData ? body : JSON.stringify(body) });
  }

  /* --- the list ------------------------------------------------------------------------- */

  function item(c) {
    const li = el("li", null, { class: "case-item" + (c.overdue ? " overdue" : c.hours_left !== null && c.hours_left < 2 ? " soon" : ""),
      "data-code": c.code });
    const head = el("div", null, { class: "head" });
    head.append(el("a", c.code, { class: "code", href: `/cases/${encodeURIComponent(c.code)}` }),
      el("span", c.status_label));
    li.append(head, el("div", c.category_name), el("div", c.description || "", { class: "desc" }),
      el("div", `${c.grid_code || (c.community_code ? c.community_code + " (大致位置 approximate)" : "")} · 时限 due ${when(c.due_at)}`, { class: "muted" }),
      el("div", left(c), { class: "left" }));
    const buttons = el("div", null, { class: "action-buttons" });
    for (const a of c.actions) {
      if (a.note_required) continue; // cancelling and returning need a reason: on the case page
      const button = el("button", a.label, { type: "button", class: "primary", "data-action": a.action });
      button.addEventListener("click", () => act(c, a.action, null, button));
      buttons.append(button);
    }
    const open = el("a", "详情 open", { class: "big-button", href: `/cases/${encodeURIComponent(c.code)}` });
    buttons.append(open);
    li.append(buttons);
    return li;
  }

  async function loadList() {
    const form = new FormData(document.getElementById("case-filters"));
    const query = new URLSearchParams({ status: form.get("status") || "open", limit: "500" });
    if (form.get("mine")) query.set("mine", "1");
    const answer = await call(`/api/incidents?${query}`);
    if (!answer.ok) { status(`加载失败 failed: ${answer.body ? answer.body.detail : answer.status}`); return; }
    const list = document.getElementById("case-list");
    list.replaceChildren(...answer.body.incidents.map(item));
    const late = answer.body.incidents.filter((c) => c.overdue).length;
    document.getElementById("case-count").textContent =
      `${answer.body.incidents.length} 件 cases · 逾期 overdue ${late}` + (answer.body.cells ? ` · 网格 cells ${answer.body.cells.join(", ")}` : "");
    status(`更新于 updated ${when(answer.body.now)}`);
  }

  /* --- acting (list and case page) -------------------------------------------------------- */

  async function act(c, action, note, button) {
    if (button) button.disabled = true;
    const body = { action, version: c.version };
    if (note) body.note = note;
    const evaluation = document.getElementById("case-evaluation");
    if (action === "evaluate" && evaluation) body.evaluation = evaluation.value;
    const answer = await post(`/api/incidents/${encodeURIComponent(c.code)}/actions`, body);
    const conflict = document.getElementById("conflict");
    if (answer.ok) {
      status(`${action} ✓ ${c.code} v${answer.body.version}`);
      if (conflict) conflict.hidden = true;
    } else {
      const detail = answer.body ? answer.body.detail : `HTTP ${answer.status}`;
      const text = answer.status === 409 ? `已被他人处理，已刷新 — someone acted first; refreshed: ${detail}` : detail;
      if (conflict) { conflict.textContent = text; conflict.hidden = false; } else status(text);
    }
    if (page === "list") await loadList(); else await loadCase();
    return answer;
  }

  /* --- one case ------------------------------------------------------------------------- */

  async function loadCase() {
    const answer = await call(`/api/incidents/${encodeURIComponent(config.code)}`);
    if (!answer.ok) { status(`加载失败 failed: ${answer.body ? answer.body.detail : answer.status}`); return; }
    const c = answer.body;
    window.gridplan.case = c;
    document.getElementById("case-title").textContent = `${c.code} ${c.category_name}`;
    const clock = document.getElementById("case-clock");
    clock.textContent = left(c);
    clock.className = "clock" + (c.overdue ? " overdue-text" : "");
    const dl = document.getElementById("case-figures");
    dl.replaceChildren();
    for (const [label, value] of [["状态 status", c.status_label], ["版本 version", c.version],
      ["描述 description", c.description || "—"], ["网格 cell", c.grid_code || "— (大致位置 approximate)"],
      ["社区 community", c.community_code], ["上报 reported", `${when(c.reported_at)} ${c.reporter || ""}`],
      ["派遣 dispatched", when(c.dispatched_at)], ["时限 due", when(c.due_at)], ["结案 closed", when(c.closed_at)],
      ["返工 rework", c.rework_count]]) {
      dl.append(el("dt", label), el("dd", value === null || value === undefined ? "—" : value));
    }
    const buttons = document.getElementById("action-buttons");
    buttons.replaceChildren();
    document.getElementById("case-evaluation").hidden = !c.actions.some((a) => a.action === "evaluate");
    for (const a of c.actions) {
      const button = el("button", a.label, { type: "button", class: a.note_required ? "" : "primary", "data-action": a.action });
      button.addEventListener("click", async () => {
        const note = document.getElementById("case-note").value.trim();
        if (a.note_required && !note) { status(`${a.label}: 请填写说明 — write a note (why)`); document.getElementById("case-note").focus(); return; }
        const result = await act(window.gridplan.case, a.action, note || null, button);
        if (result.ok) document.getElementById("case-note").value = "";
      });
      buttons.append(button);
    }
    document.getElementById("case-actions").hidden = !c.actions.length;
    const history = document.getElementById("case-history");
    history.replaceChildren(...c.steps.map((s) => {
      const li = el("li", `${when(s.at)} ${s.step}${s.actor ? " · " + s.actor : ""}`);
      if (s.note) li.append(el("div", s.note, { class: "muted" }));
      return li;
    }));
    const photos = document.getElementById("case-photos");
    photos.replaceChildren(...c.photos.map((p) => {
      const a = el("a", null, { href: p.url, target: "_blank", rel: "noopener" });
      a.append(el("img", null, { src: p.url, alt: `照片 photo ${p.id}`, loading: "lazy" }));
      return a;
    }));
    if (!c.photos.length) photos.append(el("p", "无 none", { class: "muted" }));
    status(`版本 version ${c.version}`);
  }

  function startCase() {
    const input = document.querySelector("#photo-form input[type=file]");
    input.addEventListener("change", async () => {
      if (!input.files.length) return;
      const data = new FormData();
      data.append("photo", input.files[0]);
      status("上传中 uploading…");
      const answer = await post(`/api/incidents/${encodeURIComponent(config.code)}/photos`, data);
      status(answer.ok ? "照片已添加 photo added" : `照片被拒 photo refused: ${answer.body ? answer.body.detail : answer.status}`);
      input.value = "";
      await loadCase();
    });
    return loadCase();
  }

  /* --- reporting ------------------------------------------------------------------------ */

  function startNew() {
    const form = document.getElementById("report-form");
    const given = new URLSearchParams(location.search);  // from the map: "report here"
    if (given.get("lon") && given.get("lat")) { form.elements.lon.value = given.get("lon"); form.elements.lat.value = given.get("lat"); }
    const select = form.elements.category;
    for (const [code, name] of Object.entries(config.categories)) select.append(el("option", name, { value: code }));
    document.getElementById("locate").addEventListener("click", () => {
      if (!navigator.geolocation) { status("此设备不能定位 — no location on this device"); return; }
      status("定位中 locating…");
      navigator.geolocation.getCurrentPosition((pos) => {
        form.elements.lon.value = pos.coords.longitude.toFixed(7);
        form.elements.lat.value = pos.coords.latitude.toFixed(7);
        document.getElementById("accuracy").textContent = `精度 accuracy ±${Math.round(pos.coords.accuracy)} m`;
        status("已定位 located");
      }, (err) => status(`定位失败 cannot locate: ${err.message}`), { enableHighAccuracy: true, timeout: 15000 });
    });
    form.elements.photo.addEventListener("change", () => {
      const f = form.elements.photo.files[0];
      document.getElementById("photo-name").textContent = f ? `${f.name} · ${(f.size / 1048576).toFixed(1)} MB` : "";
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const data = new FormData(form);
      if (!form.elements.photo.files.length) data.delete("photo");
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      status("上报中 reporting…");
      const answer = await post("/api/incidents", data);
      button.disabled = false;
      if (!answer.ok) { status(`上报被拒 refused: ${answer.body ? answer.body.detail : answer.status}`); return; }
      const c = answer.body;
      document.getElementById("reported").hidden = false;
      const text = document.getElementById("reported-text");
      text.replaceChildren("已上报 reported: ", el("a", c.code, { href: `/cases/${encodeURIComponent(c.code)}` }),
        ` · 网格 cell ${c.grid_code || "—"}`);
      const dups = c.likely_duplicates || [];
      document.getElementById("duplicates").hidden = !dups.length;
      document.getElementById("duplicate-list").replaceChildren(...dups.map((d) => {
        const li = el("li");
        li.append(el("a", d.code, { href: `/cases/${encodeURIComponent(d.code)}` }),
          ` ${d.distance_m} m · ${d.description || ""} (新案件可作废为重复 — the new case can be cancelled as a duplicate)`);
        return li;
      }));
      form.reset();
      document.getElementById("photo-name").textContent = "";
      status(`已上报 reported ${c.code}`);
    });
    return Promise.resolve();
  }

  const start = page === "list" ? () => {
    document.getElementById("case-filters").addEventListener("change", loadList);
    return loadList();
  } : page === "case" ? startCase : startNew;
  start().then(() => { window.gridplan.ready = true; })
    .catch((err) => status(`加载失败 failed to load: ${err.message}`));
})();
