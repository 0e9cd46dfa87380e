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

  async function users() {
    const table = document.querySelector("#users tbody");
    const answer = await call("GET", "/api/admin/users");
    if (!answer.ok) { say(document.getElementById("users-message"), detail(answer.body), "bad"); return; }
    const { roles, me } = answer.body;
    const known = await call("GET", "/api/departments");
    departments = known.ok ? known.body.departments : [];
    table.replaceChildren(...answer.body.users.map((u) => userRow(u, roles, me)));

    const form = document.getElementById("new-user");
    for (const d of departments) form.elements.department_code.append(el("option", `${d.name} (${d.code})`, { value: d.code }));
    const message = document.getElementById("new-user-message");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const f = form.elements;
      const result = await call("POST", "/api/admin/users", { name: f.name.value.trim(), role: f.role.value,
        scope_code: f.scope_code.value.trim(), department_code: f.department_code.value, password: f.password.value });
      if (result.status !== 201) { say(message, detail(result.body), "bad"); return; }
      say(message, t("Created: {name} ({role})", { name: result.body.name, role: roleName(result.body.role) }), "ok");
      table.append(userRow(result.body, roles, me));
      form.reset();
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
    const scope = el("input", null, { value: u.scope_code || "", size: "15", maxlength: "15",
                                      "aria-label": t("{name}: scope", { name: u.name }) });
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
    const scopeCell = cell(scope);
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
      const body = { role: role.value, scope_code: scope.value.trim(), department_code: department.value };
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
    table.replaceChildren(...answer.body.tokens.map((tok) => tokenRow(tok, roles)));
    const once = document.getElementById("token-once");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const f = form.elements;
      once.hidden = true;
      const result = await call("POST", "/api/admin/tokens", { name: f.name.value.trim(), role: f.role.value,
        scope_code: f.scope_code.value.trim(), expires_at: f.expires_at.value || null });
      if (result.status !== 201) { say(message, detail(result.body), "bad"); return; }
      say(message, t("Created: {name} ({role})", { name: result.body.name, role: roleName(result.body.role) }), "ok");
      document.getElementById("token-once-name").textContent = result.body.name;
      document.getElementById("token-once-value").textContent = result.body.token;
      once.hidden = false;
      table.append(tokenRow(result.body, roles));
      form.reset();
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
    const scope = el("input", null, { value: tok.scope_code || "", size: "15", maxlength: "15",
                                      "aria-label": t("{name}: scope", { name: tok.name }) });
    const save = el("button", t("Save"), { type: "button", class: "save" });
    const revoke = el("button", t("Revoke"), { type: "button", class: "revoke" });
    const message = el("td", null, { class: "message", role: "status" });
    role.disabled = scope.disabled = save.disabled = revoke.disabled = revoked;
    tr.append(el("td", tok.name), cell(role), cell(scope),
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
      { role: role.value, scope_code: scope.value.trim() }, t("Saved")));
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

  /* An editor for ``value``: {node, read(path)} where read returns the edited value or throws
     an Error naming what is wrong. ``blank`` makes the inputs empty (a new entry). */
  function editor(value, opts) {
    const { blank, choices, labels, label } = opts || {};
    if (choices) {
      const select = el("select", null, { "aria-label": label || "value" });
      for (const c of choices) select.append(el("option", (labels && labels[c]) || c, { value: c }));
      select.value = value;
      return { node: select, read: () => select.value };
    }
    if (typeof value === "boolean") {
      const box = el("input", null, { type: "checkbox", "aria-label": label || "value" });
      box.checked = blank ? false : value;
      return { node: box, read: () => box.checked };
    }
    if (isNumber(value)) {
      const input = el("input", null, { type: "number", step: "any", "aria-label": label || "value" });
      input.value = blank ? "" : String(value);
      return { node: input, read: (path) => {
        if (input.value.trim() === "") fail(path, t("Enter a number"));
        const n = Number(input.value);
        if (!Number.isFinite(n)) fail(path, t("{value} is not a number", { value: input.value }));
        return n;
      } };
    }
    if (value === null || typeof value === "string") {
      const long = typeof value === "string" && value.length > 60;
      const input = el(long ? "textarea" : "input", null, { "aria-label": label || "value" });
      if (long) input.rows = 2; else input.size = Math.min(40, Math.max(10, (value || "").length + 2));
      input.value = blank || value === null ? "" : value;
      return { node: input, read: () => (value === null && input.value.trim() === "" ? null : input.value) };
    }
    if (isPair(value)) {
      const low = editor(value[0], { blank, label: t("{label} min", { label: label || "" }) });
      const high = editor(value[1], { blank, label: t("{label} max", { label: label || "" }) });
      const span = el("span");
      span.append(el("span", t("minimum") + " "), low.node, el("span", " – " + t("maximum") + " "), high.node);
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
      dl.append(el("dt", k));
      const dd = el("dd");
      parts[k] = editor(v, { blank: opts && opts.blank, label: k });
      dd.append(parts[k].node);
      dl.append(dd);
    }
    return { node: dl, read: (path) => {
      const out = {};
      for (const [k, part] of Object.entries(parts)) out[k] = part.read(`${path}.${k}`);
      return out;
    } };
  }

  /* Rows of a table (``{entry: value}``) or a list: existing rows, removable unless fixed, and
     an "add" button making a blank row shaped like the first. */
  function rowsEditor(entries, template, keyed, fixed) {
    const records = isRecords(entries.map(([, v]) => v)) ? Object.keys(template) : null;
    const table = el("table", null, { class: "rows" });
    const head = el("tr");
    if (keyed) head.append(el("th", t("Entry")));
    if (records) for (const k of records) head.append(el("th", k)); else head.append(el("th", t("Value")));
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
          tr.append(el("td", key));
        }
      }
      if (records) {
        row.parts = records.map((k) => editor(value[k], { blank: isNew, label: `${key || "new"} ${k}` }));
        for (const part of row.parts) tr.append(cell(part.node));
      } else {
        row.parts = [editor(value, { blank: isNew, label: key || "value" })];
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
    records.forEach((k, i) => { out[k] = row.parts[i].read(`${path}.${k}`); });
    return out;
  }

  function tableEditor(value, opts) {
    const fixed = new Set((opts && opts.fixed) || []);
    const entries = Object.entries(value);
    const ed = rowsEditor(entries, entries[0][1], true, fixed);
    return { node: ed.node, read: (path) => {
      const out = {};
      for (const row of ed.rows) {
        const key = row.isNew ? row.keyInput.value.trim() : row.key;
        if (!key) fail(path, t("A new entry needs a name"));
        if (row.isNew && key in out) fail(path, t("The entry {key} is there twice", { key }));
        out[key] = readRow(row, ed.records, `${path}.${key}`);
      }
      return out;
    } };
  }

  function listEditor(value, opts) {
    if (!value.length) return jsonEditor(value);
    const ed = rowsEditor(value.map((v, i) => [String(i + 1), v]), value[0], false, null);
    return { node: ed.node, read: (path) => ed.rows.map((row, i) => readRow(row, ed.records, `${path}[${i + 1}]`)) };
  }

  function jsonEditor(value) {
    const area = el("textarea", null, { rows: "4", "aria-label": "JSON" });
    area.value = JSON.stringify(value, null, 1);
    return { node: area, read: (path) => {
      try { return JSON.parse(area.value); } catch (err) { return fail(path, t("Not valid JSON ({reason})", { reason: err.message })); }
    } };
  }

  async function settings() {
    const box = document.getElementById("settings");
    const answer = await call("GET", "/api/admin/settings");
    if (!answer.ok) { box.replaceChildren(el("p", detail(answer.body), { class: "error" })); return; }
    const meta = answer.body;
    // the base map first: it is what a fresh install asks the administrator for
    const order = meta.settings.slice().sort((a, b) => (a.key === "basemap" ? -1 : b.key === "basemap" ? 1 : 0));
    box.replaceChildren(...order.map((s) => settingCard(s, meta)));
  }

  function settingCard(s, meta) {
    const card = el("section", null, { class: "setting", "data-key": s.key });
    card.append(el("h3", s.key));
    if (s.description) card.append(el("p", s.description));
    if (meta.notes[s.key]) card.append(el("p", meta.notes[s.key], { class: "muted" }));
    const holder = el("div", null, { class: "editor" });
    let ed = editor(s.value, { choices: meta.choices[s.key], labels: meta.labels[s.key],
                               fixed: meta.fixed[s.key], label: s.key });
    holder.append(ed.node);
    const asJson = el("input", null, { type: "checkbox" });
    const jsonLabel = el("label", null, { class: "muted" });
    jsonLabel.append(asJson, el("span", " " + t("Edit as JSON")));
    asJson.addEventListener("change", () => {
      let current = s.value;
      try { current = ed.read(s.key); } catch (err) { /* keep the stored value */ }
      ed = asJson.checked ? jsonEditor(current)
        : editor(current, { choices: meta.choices[s.key], labels: meta.labels[s.key], fixed: meta.fixed[s.key],
                            label: s.key });
      holder.replaceChildren(ed.node);
    });
    const source = el("input", null, { class: "source", "aria-label": t("{name}: source", { name: s.key }) });
    source.value = s.source || "";
    const sourceLabel = el("label", t("Source") + " ");
    sourceLabel.append(source);
    const save = el("button", t("Save"), { type: "button" });
    const message = el("p", null, { class: "message", role: "status" });
    save.addEventListener("click", async () => {
      let value;
      try {
        value = ed.read(s.key);
      } catch (err) {
        say(message, err.message, "bad");
        return;
      }
      save.disabled = true;
      const result = await call("PUT", `/api/admin/settings/${encodeURIComponent(s.key)}`,
                                { value, source: source.value });
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
