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
  /* The page carries its first answer (the list, or the case) and the server has drawn it: the
     script takes it instead of asking again. A copy the phone kept (the service worker's) may be
     old: offline it says so; with a signal it is asked for afresh. */
  const inline = document.getElementById("case-data");
  let first = inline ? { ok: true, status: 200, body: JSON.parse(inline.textContent), url: inline.dataset.url || null,
    inline: true, offline: navigator.onLine === false } : null;
  function takeFirst(url) {
    const f = first;
    first = null;
    return f && (!f.url || f.url === url) ? f : null;
  }
  const STALE_MS = 120000;
  function stale(answer) {
    const at = Date.parse(answer.body && answer.body.now);
    return answer.inline && !answer.offline && Number.isFinite(at) && Date.now() - at > STALE_MS;
  }
  /* the inline list kept with the service worker's list answers (the case pages read them
     offline), unless a newer one is kept */
  async function keepList(url, body) {
    if (!window.caches) return;
    const cache = await caches.open("gridplan-data");
    const had = await cache.match(url);
    if (had) { try { if ((await had.json()).now >= body.now) return; } catch (e) { /* replaced */ } }
    await cache.put(url, new Response(JSON.stringify(body), { headers: { "Content-Type": "application/json" } }));
  }

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }
  function status(text) { document.getElementById("status").textContent = text; }
  // the steps of a case's history
  const STEPS = { reported: t("was reported"), filed: t("was filed"), dispatched: t("was dispatched"),
    handled: t("was handled"), returned: t("was returned for rework"), closed: t("was checked and closed"),
    evaluated: t("was evaluated"), cancelled: t("was cancelled"), supervised: t("was chased up") };
  STEPS.noted = t("was seen again (a note added)");  // "this is the same case" on the report form
  function when(iso) { return iso ? gpLocale.date(iso) : "—"; }
  function left(c) {
    if (!c.open) return c.closed_late ? t("closed late") : "";
    if (c.hours_left === null) return t("not dispatched: the clock has not started");
    const h = Math.abs(c.hours_left);
    const text = h >= 8 ? t("{n} working days", { n: gpLocale.number(h / 8, 1) }) : t("{n} working hours", { n: gpLocale.number(h, 1) });
    return c.overdue ? t("overdue by {time}", { time: text }) : t("{time} left", { time: text });
  }

  async function call(url, options) {
    let response;
    try {
      response = await fetch(url, Object.assign({ credentials: "same-origin" }, options || {}));
    } catch (err) {  // no signal, and nothing kept on the phone for this address
      return { ok: false, status: 0, body: { detail: t("no signal") } };
    }
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    // the service worker's copy kept on the phone, answered without a signal
    return { ok: response.ok, status: response.status, body, offline: response.headers.get("X-Gridplan-Offline") === "1" };
  }
  async function post(url, body) {
    const send = () => {
      // a page the phone kept may carry a token past its hour: js/offline_queue.js has a fresh one
      const headers = { "X-CSRFToken": window.gpQueue ? window.gpQueue.token() : csrf, Accept: "application/json" };
      if (!(body instanceof FormData)) headers["Content-Type"] = "application/json";
      return call(url, { method: "POST", headers, body: body instanceof FormData ? body : JSON.stringify(body) });
    };
    const answer = await send();
    if (answer.status === 400 && window.gpQueue && /CSRF/i.test((answer.body && answer.body.detail) || "")) {
      await window.gpQueue.freshToken();
      return send();
    }
    return answer;
  }
  /* signed out meanwhile (a kept page outlives its session): to the sign-in page, then back */
  function signInAgain(answer) {
    if (answer.status !== 401) return false;
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    return true;
  }

  /* --- the list ------------------------------------------------------------------------- */

  function item(c) {
    const li = el("li", null, { class: "case-item" + (c.overdue ? " overdue" : c.hours_left !== null && c.hours_left < 2 ? " soon" : ""),
      "data-code": c.code });
    const head = el("div", null, { class: "head" });
    head.append(el("a", c.code, { class: "code", href: `/cases/${encodeURIComponent(c.code)}` }),
      el("span", c.status_label));
    li.append(head, el("div", c.category_name), el("div", c.description || "", { class: "desc" }),
      el("div", [c.grid_name || c.grid_code || (c.community_code ? t("{code} (approximate location)", { code: c.community_code }) : ""),
        t("due {when}", { when: when(c.due_at) })].join(" · "), { class: "muted" }),
      el("div", left(c), { class: "left" }));
    if (c.department_name) li.append(el("div", t("department {name}", { name: c.department_name }), { class: "muted" }));
    if (c.supervise_count) li.append(el("div", t("chased {n} times · {level}", { n: c.supervise_count, level: c.supervise_label }), { class: "chased" }));
    const buttons = el("div", null, { class: "action-buttons" });
    for (const a of c.actions) {
      // only filing is one tap: the other steps want a department, a note or a photo, on the case page
      if (a.action !== "file") continue;
      const button = el("button", a.label, { type: "button", class: "primary", "data-action": a.action });
      button.addEventListener("click", () => act(c, a.action, null, button));
      buttons.append(button);
    }
    const open = el("a", t("Open"), { class: "big-button", href: `/cases/${encodeURIComponent(c.code)}` });
    buttons.append(open);
    li.append(buttons);
    return li;
  }

  async function loadList() {
    const form = new FormData(document.getElementById("case-filters"));
    const query = new URLSearchParams({ status: form.get("status") || "open", limit: "500" });
    if (form.get("mine")) query.set("mine", "1");
    const url = `/api/incidents?${query}`;
    const answer = takeFirst(url) || await call(url);
    if (signInAgain(answer)) return;
    if (!answer.ok) { status(t("Could not load: {reason}", { reason: answer.body ? answer.body.detail : answer.status })); return; }
    const list = document.getElementById("case-list");
    list.replaceChildren(...answer.body.incidents.map(item));
    await markWaiting();
    const late = answer.body.incidents.filter((c) => c.overdue).length;
    const many = { n: gpLocale.number(answer.body.incidents.length), late: gpLocale.number(late) };
    document.getElementById("case-count").textContent =  // one case is not "1 cases"
      (answer.body.incidents.length === 1 ? t("{n} case · {late} overdue", many) : t("{n} cases · {late} overdue", many)) + (answer.body.cells ? " · " + t("grid cells {cells}", { cells: gpLocale.list(answer.body.cells.map((code) => (answer.body.cell_names || {})[code] || code)) }) : "");
    status(answer.offline ? t("Offline: the list as it was at {when}", { when: when(answer.body.now) })
      : t("Updated {when}", { when: when(answer.body.now) }));
    const handedOver = sessionStorage.getItem("gp-said");  // said on a case page that is gone
    if (handedOver) { sessionStorage.removeItem("gp-said"); status(handedOver); }
    if (answer.inline && !answer.offline) keepList(url, answer.body).catch(() => {});
    if (stale(answer)) { loadList(); return; }  // a kept copy: shown at once, then afresh
    if (!answer.offline && query.get("status") !== "open") {
      // the phone keeps the open cases too (the service worker keeps list answers), so that any
      // open case reads offline, not only those of the filter the list opened on
      query.set("status", "open");
      call(`/api/incidents?${query}`).catch(() => {});
    }
  }

  /* A case with a step waiting on the phone says so, and takes no other step until it is sent
     (a second step would start from a version the server has not reached). */
  async function markWaiting() {
    if (!window.gpQueue) return;
    const steps = new Map((await window.gpQueue.items()).filter((i) => i.kind === "step").map((i) => [i.code, i.state]));
    for (const old of document.querySelectorAll(".waiting-note")) old.remove();
    const nodes = page === "case" ? [[config.code, document.getElementById("case-actions")]]
      : [...document.querySelectorAll(".case-item")].map((node) => [node.dataset.code, node]);
    for (const [code, node] of nodes) {
      if (!node || !steps.has(code)) continue;
      if (steps.get(code) === "refused") {  // not taken: the case may be acted on afresh
        node.append(el("p", t("A step of this case was not taken: see the top of the page"), { class: "waiting-note error" }));
        continue;
      }
      node.append(el("p", t("A step of this case waits on this phone to be sent"), { class: "waiting-note muted" }));
      for (const b of node.querySelectorAll("button[data-action]")) b.disabled = true;
    }
  }

  /* A photo's size as people read it: kB under 1 MB (a 9 kB photo is not "0.0 MB"). */
  function fileSize(bytes) {
    return bytes < 1048576 ? `${Math.max(1, Math.round(bytes / 1024))} kB` : `${(bytes / 1048576).toFixed(1)} MB`;
  }

  /* Why a step kept on the phone was not taken, when it was sent (409: someone acted first). */
  function refusedText(item) {
    return item.status === 409 ? t("Someone acted first; the case is shown afresh: {reason}", { reason: item.reason })
      : t("refused: {reason}", { reason: item.reason });
  }

  /* --- acting (list and case page) -------------------------------------------------------- */

  /* The top bar's "needs me" counts asked again after a step or a note: a case just filed,
     dispatched or handled no longer waits on this account */
  async function refreshAttention() {
    const badge = document.getElementById("attention");
    if (!badge) return;
    let counts = null;
    try {
      const response = await fetch("/api/incidents/attention", { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) return;
      counts = await response.json();
    } catch (err) { return; }  // no signal: the counts stay as they were
    badge.hidden = !counts || !counts.total;
    if (badge.hidden) return;
    for (const chip of badge.querySelectorAll(".chip[data-kind]")) {
      const n = counts[chip.dataset.kind] || 0;
      chip.hidden = !n;
      chip.dataset.n = String(n);
      chip.textContent = chip.textContent.replace(/[\d,]+$/, gpLocale.number(n));
    }
    badge.setAttribute("aria-label", t("Needs me: {new} new, {returned} returned, {overdue} overdue",
      { new: counts.new, returned: counts.returned, overdue: counts.overdue }));
  }
  window.gridplan.refreshAttention = refreshAttention;

  async function act(c, action, note, button) {
    if (button) button.disabled = true;
    let body = { action, version: c.version };
    if (note) body.note = note;
    const evaluation = document.getElementById("case-evaluation");
    if (action === "evaluate" && evaluation) body.evaluation = evaluation.value;
    const department = document.getElementById("case-department");
    if (action === "dispatch" && department && department.value) body.department = department.value;
    const photo = document.getElementById("case-after-photo");
    // the after-photo goes with the handling; kept on the phone first, then sent
    // (js/offline_queue.js): a bad signal loses nothing
    const afterPhoto = action === "handle" && photo && photo.files.length ? photo.files[0] : null;
    const named = (c.actions || []).find((a) => a.action === action);
    const sent = await window.gpQueue.send({ kind: "step", url: `/api/incidents/${encodeURIComponent(c.code)}/actions`,
      body, photo: afterPhoto, code: c.code });
    if (sent.kept) {
      if (page === "list") await loadList(); else await markWaiting();
      status(t("Kept on this phone: it will be sent when the signal returns"));
      return { ok: false, kept: true };
    }
    const answer = { ok: sent.sent, status: sent.status, body: sent.answer };
    const conflict = document.getElementById("conflict");
    // what was done, in words, said after the list or case is shown afresh (which says "updated")
    let said = null;
    if (answer.ok) {
      refreshAttention();
      said = t("{step}: case {code}", { step: named ? named.label : action, code: c.code }) + " ✓";
      if (conflict) conflict.hidden = true;
    } else {
      const detail = answer.body ? answer.body.detail : `HTTP ${answer.status}`;
      const text = answer.status === 409 ? t("Someone acted first; the case is shown afresh: {reason}", { reason: detail }) : detail;
      if (conflict) { conflict.textContent = text; conflict.hidden = false; } else said = text;
    }
    if (answer.ok && action === "send_back" && page !== "list") {
      // the case is no longer this department's: its page would answer 404, so back to the list
      sessionStorage.setItem("gp-said", said);
      window.location.assign("/cases");
      return answer;
    }
    if (page === "list") await loadList(); else await loadCase();
    if (said) status(said);
    return answer;
  }

  /* --- one case ------------------------------------------------------------------------- */

  async function loadCase() {
    const answer = takeFirst(null) || await call(`/api/incidents/${encodeURIComponent(config.code)}`);
    if (signInAgain(answer)) return;
    if (!answer.ok) { status(t("Could not load: {reason}", { reason: answer.body ? answer.body.detail : answer.status })); return; }
    const c = answer.body;
    window.gridplan.case = c;
    document.getElementById("case-title").textContent = `${c.code} ${c.category_name}`;
    const clock = document.getElementById("case-clock");
    clock.textContent = left(c);
    clock.className = "clock" + (c.overdue ? " overdue-text" : "");
    const dl = document.getElementById("case-figures");
    dl.replaceChildren();
    for (const [label, value] of [[t("Status"), c.status_label],
      [t("Description"), c.description || "—"], [t("Grid cell"), c.grid_name || c.grid_code || t("— (approximate location)")],
      [t("Community"), [c.place && c.place.community_name, c.community_code].filter(Boolean).join(" · ")], [t("Reported"), `${when(c.reported_at)} ${c.reporter || ""}`],
      [t("Dispatched"), when(c.dispatched_at)], [t("Department"), c.department_name],
      [t("Due"), when(c.due_at)], [t("Closed"), when(c.closed_at)],
      [t("Chased up"), c.supervise_count ? `${c.supervise_count} · ${c.supervise_label}` : null],
      [t("Reworked"), c.rework_count]]) {
      dl.append(el("dt", label), el("dd", value === null || value === undefined ? "—" : value));
    }
    const buttons = document.getElementById("action-buttons");
    buttons.replaceChildren();
    document.getElementById("case-evaluation-label").hidden = !c.actions.some((a) => a.action === "evaluate");
    const department = document.getElementById("case-department");
    const dispatching = c.actions.some((a) => a.action === "dispatch") && (c.department_choices || []).length > 0;
    document.getElementById("case-department-label").hidden = !dispatching;
    department.replaceChildren(...(c.department_choices || []).map((d, i) =>
      el("option", i === 0 ? t("{name} (default)", { name: d.name }) : d.name, { value: d.code })));
    const handling = c.actions.some((a) => a.action === "handle");
    document.getElementById("case-after-photo-label").hidden = !handling;
    document.getElementById("case-after-photo-text").textContent = c.after_photo_required
      ? t("Photo after handling (required)") : t("Photo after handling");
    for (const a of c.actions) {
      const button = el("button", a.label, { type: "button", class: a.note_required ? "" : "primary", "data-action": a.action });
      button.addEventListener("click", async () => {
        const note = document.getElementById("case-note").value.trim();
        if (a.note_required && !note) { status(t("{action}: write a note saying why", { action: a.label })); document.getElementById("case-note").focus(); return; }
        if (a.action === "handle" && c.after_photo_required && !document.getElementById("case-after-photo").files.length) {
          status(t("Take the photo after handling first")); document.getElementById("case-after-photo").focus(); return;
        }
        const result = await act(window.gridplan.case, a.action, note || null, button);
        if (result.ok) {
          document.getElementById("case-note").value = "";
          document.getElementById("case-after-photo").value = "";
          document.getElementById("case-after-photo-name").textContent = "";
        }
      });
      buttons.append(button);
    }
    if (c.may_note) {  // a note (补充说明) with no step taken: what was seen, for whoever acts next
      const button = el("button", t("Add the note"), { type: "button", "data-action": "note" });
      button.addEventListener("click", async () => {
        const note = document.getElementById("case-note").value.trim();
        if (!note) { status(t("Write the note first")); document.getElementById("case-note").focus(); return; }
        button.disabled = true;
        const sent = await window.gpQueue.send({ kind: "note", url: `/api/incidents/${encodeURIComponent(c.code)}/notes`,
          body: { note }, photo: null, code: c.code });
        button.disabled = false;
        if (sent.refused) { status(t("Refused: {reason}", { reason: sent.reason })); return; }
        document.getElementById("case-note").value = "";
        if (sent.kept) { status(t("Kept on this phone: it will be sent when the signal returns")); return; }
        await loadCase();
        refreshAttention();
        status(t("Note added to case {code}", { code: c.code }));
      });
      buttons.append(button);
    }
    document.getElementById("case-actions").hidden = !c.actions.length && !c.may_note;
    const history = document.getElementById("case-history");
    history.replaceChildren(...c.steps.map((s) => {
      const li = el("li", `${when(s.at)} ${s.label || STEPS[s.step] || s.step}${s.actor ? " · " + (s.actor_label || s.actor) : ""}`,
        { "data-step": s.step });
      if (s.detail_label) li.append(el("div", s.detail_label, { class: "detail" }));
      if (s.note) li.append(el("div", s.note, { class: "muted" }));
      return li;
    }));
    for (const phase of ["before", "after"]) {  // before and after side by side
      const photos = document.getElementById(`case-photos-${phase}`);
      const mine = c.photos.filter((p) => p.phase === phase);
      photos.replaceChildren(...mine.map((p) => {
        const a = el("a", null, { href: p.url, target: "_blank", rel: "noopener", "data-step": p.step || "" });
        a.append(el("img", null, { src: p.url, alt: t("Photo {n}", { n: p.id }), loading: "lazy" }));
        return a;
      }));
      if (!mine.length) photos.append(el("p", t("none"), { class: "muted" }));
    }
    await markWaiting();
    status(answer.offline && answer.inline ? t("Offline: the case as it was at {when}", { when: when(c.now) })
      : answer.offline ? t("Offline: the case as the kept list shows it (no history or photos)")
        : t("Version {n}", { n: c.version }));
    if (stale(answer)) await loadCase();  // a kept copy: shown at once, then afresh
  }

  function startCase() {
    const after = document.getElementById("case-after-photo");
    after.addEventListener("change", () => {  // shown before it is sent with the handling
      const f = after.files[0];
      document.getElementById("case-after-photo-name").textContent = f ? `${f.name} · ${fileSize(f.size)}` : "";
    });
    const input = document.querySelector("#photo-form input[type=file]");
    input.addEventListener("change", async () => {
      if (!input.files.length) return;
      const data = new FormData();
      data.append("photo", input.files[0]);
      status(t("Uploading…"));
      const answer = await post(`/api/incidents/${encodeURIComponent(config.code)}/photos`, data);
      status(answer.ok ? t("Photo added") : t("Photo refused: {reason}", { reason: answer.body ? answer.body.detail : answer.status }));
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
      if (!navigator.geolocation) { status(t("This device cannot tell its location")); return; }
      status(t("Locating…"));
      navigator.geolocation.getCurrentPosition((pos) => {
        form.elements.lon.value = pos.coords.longitude.toFixed(7);
        form.elements.lat.value = pos.coords.latitude.toFixed(7);
        document.getElementById("accuracy").textContent = t("accuracy ±{m} m", { m: Math.round(pos.coords.accuracy) });
        status(t("Located"));
      }, (err) => status(t("Cannot locate: {reason}", { reason: err.code === 1 ? t("location is not allowed for this site")
        : err.code === 3 ? t("no position in time") : t("the position is not available") })),
      { enableHighAccuracy: true, timeout: 15000 });
    });
    form.elements.photo.addEventListener("change", () => {
      const f = form.elements.photo.files[0];
      document.getElementById("photo-name").textContent = f ? `${f.name} · ${fileSize(f.size)}` : "";
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const data = new FormData(form);
      const photo = form.elements.photo.files[0] || null;
      data.delete("photo");
      data.delete("csrf_token");
      const fields = Object.fromEntries([...data.entries()].filter(([, v]) => typeof v === "string"));
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      status(t("Reporting…"));
      // kept on the phone first, then sent (js/offline_queue.js): a bad signal loses nothing
      const sent = await window.gpQueue.send({ kind: "report", url: "/api/incidents", fields, photo,
        category_name: config.categories[fields.category] || "" });
      button.disabled = false;
      if (sent.kept) {
        form.reset();
        document.getElementById("photo-name").textContent = "";
        status(t("Kept on this phone: it will be sent when the signal returns"));
        return;
      }
      const answer = { ok: sent.sent, status: sent.status, body: sent.answer };
      if (!answer.ok) { status(t("Refused: {reason}", { reason: answer.body ? answer.body.detail : answer.status })); return; }
      const c = answer.body;
      document.getElementById("reported").hidden = false;
      const text = document.getElementById("reported-text");
      text.replaceChildren(t("Reported:") + " ", el("a", c.code, { href: `/cases/${encodeURIComponent(c.code)}` }),
        " · " + (c.grid_name || t("grid cell {code}", { code: c.grid_code || "—" })));
      const dups = c.likely_duplicates || [];
      document.getElementById("duplicates").hidden = !dups.length;
      document.getElementById("duplicate-list").replaceChildren(...dups.map((d) => {
        const li = el("li");
        li.append(el("a", d.code, { href: `/cases/${encodeURIComponent(d.code)}` }),
          ` ${d.distance_m} m · ${d.description || ""} ` + t("(the new case can be cancelled as a duplicate)"));
        return li;
      }));
      form.reset();
      document.getElementById("photo-name").textContent = "";
      status(t("Reported {code}", { code: c.code }));
    });
    return Promise.resolve();
  }

  const start = page === "list" ? () => {
    const filters = document.getElementById("case-filters");
    filters.addEventListener("change", loadList);
    // without scripts the filters are a form sent with a button; here they act as they change
    const show = document.getElementById("case-filters-show");
    if (show) show.hidden = true;
    filters.addEventListener("submit", (e) => { e.preventDefault(); loadList(); });
    document.addEventListener("gridplan:flushed", async (e) => {  // what waited was sent, or refused
      await loadList();
      const refused = (e.detail && e.detail.refused) || [];
      if (refused.length) status(refusedText(refused[refused.length - 1]));
    });
    return loadList();
  } : page === "case" ? () => {
    document.addEventListener("gridplan:flushed", async (e) => {
      await loadCase();  // the case as it is now
      const mine = ((e.detail && e.detail.refused) || []).filter((i) => i.code === config.code);
      if (!mine.length) return;
      const text = refusedText(mine[mine.length - 1]);
      const conflict = document.getElementById("conflict");
      if (conflict) { conflict.textContent = text; conflict.hidden = false; }
      status(text);
    });
    return startCase();
  } : startNew;
  // the scripts are deferred: the queue (js/offline_queue.js, after this one) is there once the
  // document is parsed
  const begin = () => (window.gpQueue || document.readyState !== "loading" && document.readyState !== "interactive"
    ? start() : new Promise((resolve) => document.addEventListener("DOMContentLoaded", () => resolve(start()), { once: true })));
  begin().then(() => { window.gridplan.ready = true; window.gridplan.readyAt = performance.now(); })
    .catch((err) => status(t("Could not load: {reason}", { reason: err.message })));
})();
