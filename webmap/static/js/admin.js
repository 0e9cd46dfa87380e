/* The administrator's pages: users, API tokens, settings and standards. Text from the database
   is only ever inserted with textContent, never as HTML; every change carries the CSRF token and
   its outcome is shown next to what was changed. */
"use strict";
window.gridplanAdmin = (function () {
  const csrf = document.querySelector("meta[name=csrf-token]").content;
  const tab = document.getElementById("admin").dataset.tab;

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function say(node, text, kind) {
    node.textContent = text || "";
    node.className = "message" + (kind ? " " + kind : "");
  }

  async function call(method, url, body) {
    const options = { method, credentials: "same-origin",
                      headers: { Accept: "application/json", "X-CSRFToken": csrf } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (err) {
      return { ok: false, status: 0, body: { detail: t("The connection failed: try again") } };
    }
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    return { ok: response.ok, status: response.status, body: data || { detail: `HTTP ${response.status}` } };
  }

  function detail(body) {
    if (Array.isArray(body.problems) && body.problems.length > 1) return body.problems.join("；");
    return body.detail || t("Something went wrong");
  }

  function when(text) { return text ? gpLocale.date(text) : ""; }

  const ROLE_NAMES = { admin: t("administrator"), planner: t("planner"), supervisor: t("grid supervisor"),
    viewer: t("viewer"), dispatcher: t("command centre (dispatcher)"), handler: t("department handler") };
  function roleName(role) { return ROLE_NAMES[role] || role; }

  function roleSelect(roles, value, label) {
    const select = el("select", null, { "aria-label": label });
    for (const r of roles) select.append(el("option", roleName(r), { value: r }));
    select.value = value;
    return select;
  }

  function cell(child) { const td = el("td"); td.append(child); return td; }

  // --- users ---------------------------------------------------------------------------------

  // --- a scope chosen by name: street → community → grid cell ---------------------------------

  let PLACES = { streets: [], communities: [] };
  const cellsOf = new Map();  // community code → its cells (loaded when first asked for)

  async function loadCells(community) {
    if (!cellsOf.has(community)) {
      cellsOf.set(community, call("GET", `/api/collections/grid_cells/items?f=records&limit=1000&community_code=${encodeURIComponent(community)}`)
        .then((answer) => (answer.ok ? answer.body.items.map((c) => c.code).sort() : [])));
    }
    return cellsOf.get(community);
  }

  function placeName(code) {
    if (!code) return t("whole city");
    const street = PLACES.streets.find((s) => s.code === code.slice(0, 9));
    const community = PLACES.communities.find((c) => c.code === code.slice(0, 12));
    const parts = [street ? street.name : code.slice(0, 9)];
    if (code.length >= 12) parts.push(community ? community.name : code.slice(0, 12));
    if (code.length === 15) parts.push(t("cell {number}", { number: Number(code.slice(12)) }));
    return `${parts.join(" › ")} · ${code}`;
  }

  /* Three choices, 街道 → 社区 → 网格, by name: {node, value()} where value is the code of the
     deepest place chosen ("" for none). An unknown stored code is kept as it is. */
  function scopePicker(code, label) {
    const box = el("span", null, { class: "scope-picker", "data-scope": code || "" });
    const street = el("select", null, { "aria-label": t("{name}: street", { name: label }), class: "street" });
    const community = el("select", null, { "aria-label": t("{name}: community", { name: label }), class: "community" });
    const cellPick = el("select", null, { "aria-label": t("{name}: grid cell", { name: label }), class: "cell" });
    street.append(el("option", t("— no scope —"), { value: "" }));
    for (const s of PLACES.streets) street.append(el("option", `${s.name} ${s.code}`, { value: s.code }));
    const isStreet = (v) => PLACES.streets.some((s) => s.code === v);
    function fillCommunities(chosen) {
      community.replaceChildren(el("option", t("whole street"), { value: "" }));
      for (const c of PLACES.communities.filter((x) => x.street_code === street.value)) {
        community.append(el("option", `${c.name} ${c.code}`, { value: c.code }));
      }
      community.value = chosen || "";
      community.hidden = !isStreet(street.value);
    }
    async function fillCells(chosen) {
      cellPick.replaceChildren(el("option", t("whole community"), { value: "" }));
      cellPick.hidden = !community.value;
      if (!community.value) return;
      for (const c of await loadCells(community.value)) {
        cellPick.append(el("option", t("cell {number}", { number: Number(c.slice(12)) }) + ` ${c}`, { value: c }));
      }
      cellPick.value = chosen || "";
    }
    // a stored code of no known street (boundaries not imported yet) is kept whole
    const known = !code || isStreet(code.slice(0, 9));
    if (!known) street.append(el("option", code, { value: code }));
    street.value = !code ? "" : known ? code.slice(0, 9) : code;
    fillCommunities(code && code.length >= 12 ? code.slice(0, 12) : "");
    const ready = fillCells(code && code.length === 15 ? code : "");
    street.addEventListener("change", () => { fillCommunities(""); fillCells(""); });
    community.addEventListener("change", () => fillCells(""));
    box.append(street, " ", community, " ", cellPick);
    return { node: box, ready, value: () => cellPick.value || community.value || street.value,
             reset: () => { street.value = ""; fillCommunities(""); fillCells(""); } };
  }

  async function users() {
    const table = document.querySelector("#users tbody");
    const answer = await call("GET", "/api/admin/users");
    if (!answer.ok) { say(document.getElementById("users-message"), detail(answer.body), "bad"); return; }
    const { roles, me } = answer.body;
    const known = await call("GET", "/api/departments");
    departments = known.ok ? known.body.departments : [];
    PLACES = answer.body.places || PLACES;
    const newScope = scopePicker("", t("New user"));
    const scopeInput = document.querySelector("#new-user input[name=scope_code]");
    scopeInput.replaceWith(newScope.node);
    table.replaceChildren(...answer.body.users.map((u) => userRow(u, roles, me)));

    const form = document.getElementById("new-user");
    for (const d of departments) form.elements.department_code.append(el("option", `${d.name} (${d.code})`, { value: d.code }));
    const message = document.getElementById("new-user-message");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const f = form.elements;
      const result = await call("POST", "/api/admin/users", { name: f.name.value.trim(), role: f.role.value,
        scope_code: newScope.value(), department_code: f.department_code.value, password: f.password.value });
      if (result.status !== 201) { say(message, detail(result.body), "bad"); return; }
      say(message, t("Created: {name} ({role})", { name: result.body.name, role: roleName(result.body.role) }), "ok");
      table.append(userRow(result.body, roles, me));
      form.reset();
      newScope.reset();
    });
  }

  let departments = [];
  function departmentSelect(value, label) {
    const select = el("select", null, { "aria-label": label, class: "department" });
    select.append(el("option", t("no department"), { value: "" }));
    for (const d of departments) select.append(el("option", `${d.name} (${d.code})`, { value: d.code }));
    select.value = value || "";
    return select;
  }

  function userRow(u, roles, me) {
    const tr = el("tr", null, { "data-user": u.name });
    const department = departmentSelect(u.department_code, t("{name}: department", { name: u.name }));
    const role = roleSelect(roles, u.role, t("{name}: role", { name: u.name }));
    const scope = scopePicker(u.scope_code || "", u.name);
    scope.node.title = placeName(u.scope_code || "");
    const password = el("input", null, { type: "password", autocomplete: "new-password", size: "12",
                                         placeholder: t("unchanged"), "aria-label": t("{name}: new password", { name: u.name }) });
    const state = el("td", u.disabled ? t("disabled") : t("active"), { class: "state" });
    const save = el("button", t("Save"), { type: "button", class: "save" });
    const toggle = el("button", u.disabled ? t("Enable") : t("Disable"), { type: "button", class: "toggle" });
    const message = el("td", null, { class: "message", role: "status" });
    if (u.name === me) {
      toggle.disabled = true;
      toggle.title = t("You cannot disable your own account");
    }
    tr.className = u.disabled ? "disabled" : "";
    const scopeCell = cell(scope.node);
    scopeCell.append(department);
    tr.append(el("td", u.name), cell(role), scopeCell, cell(password), state, el("td", when(u.created_at)),
              el("td", u.last_sign_in_at ? when(u.last_sign_in_at) : t("never signed in"), { class: "last-sign-in" }),
              cell(save), cell(toggle), message);

    async function change(body, done) {
      save.disabled = toggle.disabled = true;
      const result = await call("PATCH", `/api/admin/users/${u.id}`, body);
      save.disabled = false;
      toggle.disabled = u.name === me;
      if (!result.ok) { say(message, detail(result.body), "bad"); return; }
      const fresh = userRow(result.body, roles, me);
      tr.replaceWith(fresh);
      say(fresh.querySelector("td.message"), done, "ok");
    }

    save.addEventListener("click", () => {
      const body = { role: role.value, scope_code: scope.value(), department_code: department.value };
      if (password.value) body.password = password.value;
      change(body, password.value ? t("Saved; the password is changed") : t("Saved"));
    });
    toggle.addEventListener("click", () => change({ disabled: !u.disabled },
                                                  u.disabled ? t("Enabled") : t("Disabled")));
    return tr;
  }

  // --- tokens --------------------------------------------------------------------------------

  async function tokens() {
    const table = document.querySelector("#tokens tbody");
    const answer = await call("GET", "/api/admin/tokens");
    const form = document.getElementById("new-token");
    const message = document.getElementById("new-token-message");
    if (!answer.ok) { say(message, detail(answer.body), "bad"); return; }
    const { roles } = answer.body;
    PLACES = answer.body.places || PLACES;
    const newScope = scopePicker("", t("New token"));
    form.querySelector("input[name=scope_code]").replaceWith(newScope.node);
    table.replaceChildren(...answer.body.tokens.map((tok) => tokenRow(tok, roles)));
    const once = document.getElementById("token-once");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const f = form.elements;
      once.hidden = true;
      const result = await call("POST", "/api/admin/tokens", { name: f.name.value.trim(), role: f.role.value,
        scope_code: newScope.value(), expires_at: f.expires_at.value || null });
      if (result.status !== 201) { say(message, detail(result.body), "bad"); return; }
      say(message, t("Created: {name} ({role})", { name: result.body.name, role: roleName(result.body.role) }), "ok");
      document.getElementById("token-once-name").textContent = result.body.name;
      document.getElementById("token-once-value").textContent = result.body.token;
      once.hidden = false;
      table.append(tokenRow(result.body, roles));
      form.reset();
      newScope.reset();
    });
    document.getElementById("token-copy").addEventListener("click", async () => {
      const text = document.getElementById("token-once-value").textContent;
      try {
        await navigator.clipboard.writeText(text);
        say(message, t("Copied"), "ok");
      } catch (err) {
        const range = document.createRange();
        range.selectNodeContents(document.getElementById("token-once-value"));
        window.getSelection().removeAllRanges();
        window.getSelection().addRange(range);
        say(message, t("Selected: press Ctrl+C to copy"));
      }
    });
  }

  function tokenRow(tok, roles) {
    const revoked = Boolean(tok.revoked_at);
    const state = revoked ? t("revoked {when}", { when: when(tok.revoked_at) })
      : tok.expired ? t("expired {when}", { when: when(tok.expires_at) }) : t("valid");
    const tr = el("tr", null, { "data-token": tok.name, class: revoked ? "revoked" : "" });
    const role = roleSelect(roles, tok.role, t("{name}: role", { name: tok.name }));
    const scope = scopePicker(tok.scope_code || "", tok.name);
    const save = el("button", t("Save"), { type: "button", class: "save" });
    const revoke = el("button", t("Revoke"), { type: "button", class: "revoke" });
    const message = el("td", null, { class: "message", role: "status" });
    role.disabled = save.disabled = revoke.disabled = revoked;
    for (const select of scope.node.querySelectorAll("select")) select.disabled = revoked;
    tr.append(el("td", tok.name), cell(role), cell(scope.node),
              el("td", state, { class: "state" }), el("td", when(tok.created_at)),
              el("td", tok.expires_at ? when(tok.expires_at) : t("no expiry"), { class: "expires" }),
              el("td", tok.last_used_at ? when(tok.last_used_at) : t("never used"), { class: "last-used" }),
              cell(save), cell(revoke), message);

    async function change(method, url, body, done) {
      const result = await call(method, url, body);
      if (!result.ok) { say(message, detail(result.body), "bad"); return; }
      const fresh = tokenRow(result.body, roles);
      tr.replaceWith(fresh);
      say(fresh.querySelector("td.message"), done, "ok");
    }

    save.addEventListener("click", () => change("PATCH", `/api/admin/tokens/${tok.id}`,
      { role: role.value, scope_code: scope.value() }, t("Saved")));
    let armed = null;
    revoke.addEventListener("click", () => {
      if (!armed) {  // a second click confirms: no native dialog
        revoke.textContent = t("Confirm revoke?");
        say(message, t("Click again to revoke: the token stops working at once"));
        armed = setTimeout(() => { armed = null; revoke.textContent = t("Revoke"); say(message, ""); }, 6000);
        return;
      }
      clearTimeout(armed);
      armed = null;
      change("POST", `/api/admin/tokens/${tok.id}/revoke`, undefined, t("Revoked"));
    });
    return tr;
  }

  // --- settings ------------------------------------------------------------------------------

  const isNumber = (v) => typeof v === "number";
  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

  /* A value's shape, as geodata.settings._signature has it. */
  function signature(v) {
    if (v === null) return "null";
    if (typeof v === "boolean") return "bool";
    if (isNumber(v)) return "number";
    if (typeof v === "string") return "text";
    if (Array.isArray(v)) return "list[" + (v.length ? signature(v[0]) : "") + "]";
    return "{" + Object.keys(v).sort().map((k) => `${k}:${signature(v[k])}`).join(",") + "}";
  }

  function isTable(v) {
    const values = Object.values(v);
    if (!values.length) return false;
    if (values.length === 1) return isObject(values[0]);
    return new Set(values.map(signature)).size === 1;
  }

  const isPair = (v) => Array.isArray(v) && v.length === 2 && v.every(isNumber);
  const isRecords = (items) => items.length > 0 && items.every(isObject)
    && new Set(items.map((x) => Object.keys(x).sort().join("\u0000"))).size === 1;

  function fail(path, text) { throw new Error(`${path}: ${text}`); }

  // what the settings page calls fields and values (filled in from the server's answer)
  let FIELDS = {}, VALUES = {}, GROUPS = [];
  const fieldName = (k) => FIELDS[k] || k;
  const valueName = (v) => VALUES[v] || FIELDS[v] || v;

  /* How many character widths a text takes in a box: a Chinese character takes two. */
  const textWidth = (text) => [...text].reduce((n, c) => n + (/[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef]/.test(c) ? 2 : 1), 0);

  /* An editor for ``value``: {node, read(path)} where read returns the edited value or throws
     an Error naming what is wrong. ``blank`` makes the inputs empty (a new entry); ``field`` is
     the record field or table column the value stands in (its key); ``unit`` follows a number. */
  function editor(value, opts) {
    const { blank, choices, labels, label, field, unit, display } = opts || {};
    const named = { "aria-label": label || t("Value") };
    if (field) named["data-field"] = field;
    const group = typeof value === "string" ? GROUPS.find((g) => g.includes(value)) : null;
    if (choices || group) {
      const options = choices || group;
      const select = el("select", null, named);
      for (const c of options) select.append(el("option", (labels && labels[c]) || valueName(c), { value: c }));
      select.value = value;
      return { node: select, read: () => select.value };
    }
    if (typeof value === "boolean") {
      const box = el("input", null, { type: "checkbox", ...named });
      box.checked = blank ? false : value;
      return { node: box, read: () => box.checked };
    }
    if (isNumber(value)) {
      const input = el("input", null, { type: "number", step: "any", ...named });
      input.value = blank ? "" : String(value);
      const node = unit ? el("span") : input;
      if (unit) node.append(input, el("span", " " + unit, { class: "unit" }));
      return { node, read: (path) => {
        if (input.value.trim() === "") fail(path, t("Enter a number"));
        const n = Number(input.value);
        if (!Number.isFinite(n)) fail(path, t("{value} is not a number", { value: input.value }));
        return n;
      } };
    }
    if (value === null || typeof value === "string") {
      // ``display``: the stored text as the reader reads it (a bilingual name in their language);
      // left unchanged, the stored text is kept whole
      const text = blank || value === null ? "" : (display || value);
      const long = text.length > 60;
      const input = el(long ? "textarea" : "input", null, named);
      if (long) input.rows = 2; else input.size = Math.min(40, Math.max(10, textWidth(text) + 2));
      input.value = text;
      return { node: input, read: () => {
        if (value === null && input.value.trim() === "") return null;
        return !blank && display && input.value === display ? value : input.value;
      } };
    }
    if (isPair(value)) {
      const low = editor(value[0], { blank, label: t("{label} min", { label: label || "" }) });
      const high = editor(value[1], { blank, label: t("{label} max", { label: label || "" }) });
      const span = el("span");
      span.append(el("span", t("minimum") + " "), low.node, el("span", " – " + t("maximum") + " "), high.node);
      if (unit) span.append(el("span", " " + unit, { class: "unit" }));
      return { node: span, read: (path) => {
        const pair = [low.read(t("{label} min", { label: path })), high.read(t("{label} max", { label: path }))];
        if (pair[0] > pair[1]) fail(path, t("The minimum is above the maximum ({low} > {high})", { low: pair[0], high: pair[1] }));
        return pair;
      } };
    }
    if (Array.isArray(value)) return listEditor(value, opts);
    if (isObject(value)) return isTable(value) ? tableEditor(value, opts) : recordEditor(value, opts);
    return jsonEditor(value);
  }

  function recordEditor(value, opts) {
    const dl = el("dl", null, { class: "record" });
    const parts = {};
    for (const [k, v] of Object.entries(value)) {
      dl.append(el("dt", fieldName(k)));
      const dd = el("dd");
      parts[k] = editor(v, { blank: opts && opts.blank, label: fieldName(k), field: k });
      dd.append(parts[k].node);
      dl.append(dd);
    }
    return { node: dl, read: (path) => {
      const out = {};
      for (const [k, part] of Object.entries(parts)) out[k] = part.read(`${path} · ${fieldName(k)}`);
      return out;
    } };
  }

  /* Rows of a table (``{entry: value}``) or a list: existing rows, removable unless fixed, and
     an "add" button making a blank row shaped like the first. */
  function rowsEditor(entries, template, keyed, fixed, unit, shown) {
    const records = isRecords(entries.map(([, v]) => v)) ? Object.keys(template) : null;
    const table = el("table", null, { class: "rows" });
    const head = el("tr");
    if (keyed) head.append(el("th", (shown && shown.entryLabel) || t("Entry")));
    if (records) for (const k of records) head.append(el("th", fieldName(k))); else head.append(el("th", t("Value")));
    head.append(el("th"));
    table.append(head);
    const rows = [];

    function addRow(key, value, isNew) {
      const tr = el("tr");
      const row = { tr, key, isNew, parts: null, keyInput: null };
      if (keyed) {
        if (isNew) {
          row.keyInput = el("input", null, { size: "10", "aria-label": t("Entry"), placeholder: t("New entry") });
          tr.append(cell(row.keyInput));
        } else {
          tr.append(el("td", valueName(key), { "data-entry": key }));
        }
      }
      const rowName = key ? valueName(key) : t("New entry");
      if (records) {
        row.parts = records.map((k) => editor(value[k], { blank: isNew, label: `${rowName} ${fieldName(k)}`, field: k,
                                                          display: k === "name" && key && shown ? (shown.names || {})[key] : undefined }));
        for (const part of row.parts) tr.append(cell(part.node));
      } else {
        row.parts = [editor(value, { blank: isNew, label: rowName, unit })];
        tr.append(cell(row.parts[0].node));
      }
      const remove = el("button", t("Remove"), { type: "button" });
      if (keyed && !isNew && fixed && fixed.has(key)) {
        remove.disabled = true;
        remove.title = t("Standard entries cannot be removed");
      }
      remove.addEventListener("click", () => { tr.remove(); rows.splice(rows.indexOf(row), 1); });
      tr.append(cell(remove));
      table.append(tr);
      rows.push(row);
    }

    for (const [k, v] of entries) addRow(k, v, false);
    const add = el("button", t("Add"), { type: "button", class: "add" });
    add.addEventListener("click", () => addRow(null, template, true));
    const box = el("div");
    box.append(table, add);
    return { node: box, rows, records, keyed };
  }

  function readRow(row, records, path) {
    if (!records) return row.parts[0].read(path);
    const out = {};
    records.forEach((k, i) => { out[k] = row.parts[i].read(`${path} · ${fieldName(k)}`); });
    return out;
  }

  function tableEditor(value, opts) {
    const fixed = new Set((opts && opts.fixed) || []);
    const entries = Object.entries(value);
    const ed = rowsEditor(entries, entries[0][1], true, fixed, opts && opts.unit, opts && opts.shown);
    return { node: ed.node, read: (path) => {
      const out = {};
      for (const row of ed.rows) {
        const key = row.isNew ? row.keyInput.value.trim() : row.key;
        if (!key) fail(path, t("A new entry needs a name"));
        if (row.isNew && key in out) fail(path, t("The entry {key} is there twice", { key }));
        out[key] = readRow(row, ed.records, `${path} · ${valueName(key)}`);
      }
      return out;
    } };
  }

  function listEditor(value, opts) {
    if (!value.length) return jsonEditor(value);
    const ed = rowsEditor(value.map((v, i) => [String(i + 1), v]), value[0], false, null, opts && opts.unit);
    return { node: ed.node, read: (path) => ed.rows.map((row, i) => readRow(row, ed.records, `${path} ${i + 1}`)) };
  }

  function jsonEditor(value) {
    const area = el("textarea", null, { rows: "4", "aria-label": "JSON" });
    area.value = JSON.stringify(value, null, 1);
    return { node: area, read: (path) => {
      try { return JSON.parse(area.value); } catch (err) { return fail(path, t("Not valid JSON ({reason})", { reason: err.message })); }
    } };
  }

  // --- the working calendar: hours of a day, weekdays, and a calendar of holidays ----------------

  const iso = (y, m, d) => `${y}-${String(m + 1).padStart(2, "0")}-${String(d).padStart(2, "0")}`;

  /* Public holidays and make-up working days as a calendar of a year: a click on a day makes it
     a holiday, a second a make-up working day, a third an ordinary day again. */
  function calendarEditor(holidays, workdays, weekdaysOf) {
    const days = new Map();
    for (const d of holidays) days.set(d, "holiday");
    for (const d of workdays) days.set(d, "workday");
    const years = new Set([...days.keys()].map((d) => Number(d.slice(0, 4))));
    const now = new Date().getFullYear();
    years.add(now); years.add(now + 1);
    const box = el("div", null, { class: "calendar" });
    const pick = el("select", null, { "aria-label": t("Year") });
    for (const y of [...years].sort()) pick.append(el("option", String(y), { value: String(y) }));
    pick.value = String(years.has(now) ? now : Math.max(...years));
    const count = el("span", null, { class: "muted" });
    const legend = el("p", null, { class: "legend muted" });
    legend.append(el("span", t("holiday"), { class: "day holiday" }), " ", el("span", t("make-up working day"), { class: "day workday" }),
                  " ", el("span", t("Click a day to mark it; click again to change or clear it")));
    const months = el("div", null, { class: "months" });
    const dayNames = [1, 2, 3, 4, 5, 6, 7].map((d) => new Intl.DateTimeFormat(gpLocale.lang, { weekday: "narrow" })
      .format(new Date(2024, 0, d)));  // 2024-01-01 is a Monday
    const monthName = new Intl.DateTimeFormat(gpLocale.lang, { month: "long" });

    function draw() {
      const year = Number(pick.value);
      months.replaceChildren();
      for (let m = 0; m < 12; m += 1) {
        const table = el("table", null, { class: "month" });
        table.append(el("caption", monthName.format(new Date(year, m, 1))));
        const head = el("tr");
        for (const n of dayNames) head.append(el("th", n));
        table.append(head);
        let row = el("tr");
        const offset = (new Date(year, m, 1).getDay() + 6) % 7;  // Monday first
        for (let i = 0; i < offset; i += 1) row.append(el("td"));
        const last = new Date(year, m + 1, 0).getDate();
        for (let d = 1; d <= last; d += 1) {
          const key = iso(year, m, d);
          const weekday = (offset + d - 1) % 7 + 1;
          const kind = days.get(key) || "";
          const button = el("button", String(d), { type: "button", "data-date": key,
            class: `day ${kind}${weekdaysOf().includes(weekday) ? "" : " weekend"}`,
            title: kind === "holiday" ? t("holiday") : kind === "workday" ? t("make-up working day") : "" });
          button.addEventListener("click", () => {
            const now = days.get(key);
            if (!now) days.set(key, "holiday"); else if (now === "holiday") days.set(key, "workday"); else days.delete(key);
            draw();
          });
          row.append(cell(button));
          if (weekday === 7) { table.append(row); row = el("tr"); }
        }
        if (row.children.length) table.append(row);
        months.append(table);
      }
      const inYear = [...days.entries()].filter(([d]) => d.startsWith(`${year}-`));
      count.textContent = t("{holidays} holidays and {workdays} make-up working days in {year}", {
        holidays: inYear.filter(([, k]) => k === "holiday").length,
        workdays: inYear.filter(([, k]) => k === "workday").length, year });
    }
    pick.addEventListener("change", draw);
    const bar = el("p");
    bar.append(pick, " ", count);
    box.append(bar, legend, months);
    draw();
    const sorted = (kind) => [...days.entries()].filter(([, k]) => k === kind).map(([d]) => d).sort();
    return { node: box, redraw: draw, read: () => ({ holidays: sorted("holiday"), workdays: sorted("workday") }) };
  }

  function workingCalendarEditor(value) {
    const box = el("div", null, { class: "working-calendar" });
    // the hours of a working day: periods from – to
    const hours = el("div", null, { class: "hours" });
    const periods = [];
    function addPeriod(from, to) {
      const line = el("p");
      const a = el("input", null, { type: "time", value: from || "", "aria-label": t("from") });
      const b = el("input", null, { type: "time", value: to || "", "aria-label": t("to") });
      const remove = el("button", t("Remove"), { type: "button" });
      const period = { a, b };
      remove.addEventListener("click", () => { line.remove(); periods.splice(periods.indexOf(period), 1); });
      line.append(a, " – ", b, " ", remove);
      periods.push(period);
      hours.append(line);
    }
    for (const [from, to] of value.hours || []) addPeriod(from, to);
    const add = el("button", t("Add"), { type: "button", class: "add" });
    add.addEventListener("click", () => addPeriod("", ""));
    // the working weekdays
    const weekdays = el("p", null, { class: "weekdays" });
    const boxes = [1, 2, 3, 4, 5, 6, 7].map((d) => {
      const label = el("label");
      const check = el("input", null, { type: "checkbox", value: String(d) });
      check.checked = (value.weekdays || []).includes(d);
      label.append(check, " " + new Intl.DateTimeFormat(gpLocale.lang, { weekday: "long" }).format(new Date(2024, 0, d)));
      weekdays.append(label, " ");
      return check;
    });
    const chosen = () => boxes.filter((b) => b.checked).map((b) => Number(b.value));
    const calendar = calendarEditor(value.holidays || [], value.workdays || [], chosen);
    for (const b of boxes) b.addEventListener("change", calendar.redraw);
    box.append(el("h4", fieldName("hours")), hours, add, el("h4", fieldName("weekdays")), weekdays,
               el("h4", `${fieldName("holidays")} · ${fieldName("workdays")}`), calendar.node);
    const known = new Set(["hours", "weekdays", "holidays", "workdays"]);
    return { node: box, read: (path) => {
      const out = { ...Object.fromEntries(Object.entries(value).filter(([k]) => !known.has(k))) };
      out.hours = periods.map((p, i) => {
        if (!p.a.value || !p.b.value) fail(`${path} · ${fieldName("hours")} ${i + 1}`, t("Enter both times"));
        return [p.a.value.slice(0, 5), p.b.value.slice(0, 5)];
      });
      out.weekdays = chosen();
      Object.assign(out, calendar.read());
      return out;
    } };
  }

  async function settings() {
    const box = document.getElementById("settings");
    const answer = await call("GET", "/api/admin/settings");
    if (!answer.ok) { box.replaceChildren(el("p", detail(answer.body), { class: "error" })); return; }
    const meta = answer.body;
    FIELDS = meta.fields || {};
    VALUES = meta.values || {};
    GROUPS = meta.groups || [];
    // the base map first: it is what a fresh install asks the administrator for
    const order = meta.settings.slice().sort((a, b) => (a.key === "basemap" ? -1 : b.key === "basemap" ? 1 : 0));
    box.replaceChildren(...order.map((s) => settingCard(s, meta)));
  }

  function formEditor(s, meta, value) {
    if (s.key === "working_calendar" && isObject(value) && Array.isArray(value.holidays)) {
      return workingCalendarEditor(value);
    }
    const pick = (meta.pickers || {})[s.key];
    if (pick && Array.isArray(value) && value.every((v) => typeof v === "string")) {
      return codePicker(value, meta[pick] || {}, s.label || s.key);
    }
    return editor(value, { choices: meta.choices[s.key], labels: meta.labels[s.key], fixed: meta.fixed[s.key],
                           label: s.label || s.key, unit: s.unit,
                           shown: { entryLabel: (meta.entry_labels || {})[s.key], names: (meta.shown_names || {})[s.key] } });
  }

  /* A list of codes (case categories) chosen by ticking them, each "code · name"; a stored code
     the catalogue no longer holds stays listed, ticked, so that nothing is dropped unseen. */
  function codePicker(value, names, label) {
    const box = el("div", null, { class: "picker", role: "group", "aria-label": label });
    const codes = [...Object.keys(names), ...value.filter((c) => !(c in names))];
    const boxes = codes.map((code) => {
      const line = el("label", null, { class: "pick" });
      const check = el("input", null, { type: "checkbox", value: code });
      check.checked = value.includes(code);
      line.append(check, " " + (names[code] ? `${code} · ${names[code]}` : code));
      box.append(line);
      return check;
    });
    return { node: box, read: () => boxes.filter((b) => b.checked).map((b) => b.value) };
  }

  function settingCard(s, meta) {
    const card = el("section", null, { class: "setting", "data-key": s.key });
    const title = el("h3", s.label || s.key);
    if (s.unit) title.append(el("span", ` (${s.unit})`, { class: "muted" }));
    card.append(title);
    if (s.text) card.append(el("p", s.text));
    if (meta.notes[s.key]) card.append(el("p", meta.notes[s.key], { class: "muted" }));
    const holder = el("div", null, { class: "editor" });
    let ed = formEditor(s, meta, s.value);
    holder.append(ed.node);
    // JSON for experts, behind a switch: the form is what everyone else uses
    const asJson = el("input", null, { type: "checkbox", class: "as-json" });
    const jsonLabel = el("label", null, { class: "muted" });
    jsonLabel.append(asJson, el("span", " " + t("Edit as JSON (for experts)")));
    asJson.addEventListener("change", () => {
      let current = s.value;
      try { current = ed.read(s.label || s.key); } catch (err) { /* keep the stored value */ }
      ed = asJson.checked ? jsonEditor(current) : formEditor(s, meta, current);
      holder.replaceChildren(ed.node);
    });
    const shown = s.source_text !== undefined ? s.source_text : (s.source || "");
    const source = el("input", null, { class: "source", "aria-label": t("{name}: source", { name: s.label || s.key }) });
    source.value = shown;
    const sourceLabel = el("label", t("Source") + " ");
    sourceLabel.append(source);
    const save = el("button", t("Save"), { type: "button", class: "save" });
    const message = el("p", null, { class: "message", role: "status" });
    save.addEventListener("click", async () => {
      let value;
      try {
        value = ed.read(s.label || s.key);
      } catch (err) {
        say(message, err.message, "bad");
        return;
      }
      save.disabled = true;
      // the source is sent only when the administrator changed it (the default reads translated)
      const body = source.value !== shown ? { value, source: source.value } : { value };
      const result = await call("PUT", `/api/admin/settings/${encodeURIComponent(s.key)}`, body);
      save.disabled = false;
      if (!result.ok) { say(message, detail(result.body), "bad"); return; }
      const fresh = settingCard(result.body, meta);
      card.replaceWith(fresh);
      say(fresh.querySelector(".message"), t("Saved"), "ok");
    });
    card.append(holder, jsonLabel, el("br"), sourceLabel, save, message);
    return card;
  }

  // --- departments (处置部门) -------------------------------------------------------------------

  async function departmentsTab() {
    const form = document.getElementById("department-form");
    const message = document.getElementById("department-message");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const f = form.elements;
      const checked = (name) => [...form.querySelectorAll(`input[name=${name}]:checked`)].map((i) => i.value);
      const limits = {};
      for (const input of form.querySelectorAll("input[name=limit]")) {
        if (input.value !== "") limits[input.dataset.category] = Number(input.value);
      }
      const body = { code: f.code.value.trim(), name: f.name.value.trim(), contact: f.contact.value.trim(),
        categories: checked("handles"), default_for: checked("default"), limits };
      const result = await call("POST", "/api/departments", body);
      if (!result.ok) { say(message, detail(result.body), "bad"); return; }
      say(message, t("Saved: {name} ({code})", { name: result.body.name, code: result.body.code }), "ok");
      setTimeout(() => location.reload(), 600);
    });
  }

  const ready = { users, tokens, settings, departments: departmentsTab }[tab];
  const loaded = ready ? ready() : Promise.resolve();
  loaded.then(() => { document.getElementById("admin").dataset.ready = "1"; });
  return { loaded };
})();
