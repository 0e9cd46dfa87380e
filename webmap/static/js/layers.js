/* The layers page: import with a preview and field mapping, export with options, each layer's
   count, extent and last change. Text from files and the database is only ever inserted with
   textContent, never as HTML; every state-changing request carries the CSRF token. */
"use strict";
window.gridplanLayers = (function () {
  const config = JSON.parse(document.getElementById("layers-config").textContent);
  const csrf = document.querySelector("meta[name=csrf-token]").content;
  const state = { upload: null, preview: null, job: null, busy: false };

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

  function number(n) { return gpLocale.number(n); }
  /* an import mode as the form's radio button names it */
  function modeName(mode) {
    const input = document.querySelector(`input[name=mode][value="${mode}"]`);
    return input ? input.parentNode.textContent.trim() : mode;
  }
  /* an import mode's name alone (追加, 替换, 更新), as its radio button begins */
  function modeWord(mode) {
    return modeName(mode).split(/[:：]/)[0].trim();
  }

  /* A fetch whose failures become one sentence a planner understands. */
  async function call(url, options) {
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin", ...options,
        headers: { Accept: "application/json", "X-CSRFToken": csrf, ...((options || {}).headers || {}) } });
    } catch (err) {
      return { ok: false, status: 0, body: { detail: t("The connection failed (is the server running, or was the file larger than the limit of {limit}?)", { limit: config.maxUploadText }) } };
    }
    let body = null;
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("json")) {
      try { body = await response.json(); } catch (err) { body = null; }
    }
    if (!body) body = { detail: `HTTP ${response.status}` };
    return { ok: response.ok, status: response.status, body, response };
  }

  function problemsOf(body) {
    if (Array.isArray(body.problems) && body.problems.length) return body.problems;
    return [body.detail || body.description || t("Something went wrong")];
  }

  function showProblems(list, problems, total) {
    list.replaceChildren();
    for (const p of problems) list.append(el("li", p));
    if (total && total > problems.length) list.append(el("li", t("… and {n} more", { n: number(total - problems.length) })));
    list.hidden = problems.length === 0;
  }

  // --- the table -----------------------------------------------------------------------------

  function changeText(change) {
    if (!change) return "—";
    return `${change.at.replace("T", " ").slice(0, 16)} · ${change.actor_name || change.actor} · ${change.action_name || change.action}`;
  }

  async function refreshTable() {
    const answer = await call("/api/layers");
    if (!answer.ok) return;
    for (const row of answer.body.layers) {
      const tr = document.querySelector(`#layers tr[data-layer="${row.name}"]`);
      if (!tr) continue;
      tr.querySelector(".count").textContent = number(row.count);
      tr.querySelector(".extent").textContent = row.extent
        ? `${row.extent[0].toFixed(4)}, ${row.extent[1].toFixed(4)} – ${row.extent[2].toFixed(4)}, ${row.extent[3].toFixed(4)}`
        : "—";
      tr.querySelector(".change").textContent = changeText(row.last_change);
    }
  }

  for (const button of document.querySelectorAll(".pick-export")) {
    button.addEventListener("click", () => {
      const form = document.getElementById("export-form");
      form.elements.layer.value = button.dataset.layer;
      form.scrollIntoView({ behavior: "smooth" });
      form.elements.format.focus();
    });
  }
  for (const button of document.querySelectorAll(".pick-import")) {
    button.addEventListener("click", () => {
      const form = document.getElementById("import-form");
      form.elements.layer.value = button.dataset.layer;
      form.elements.layer.dispatchEvent(new Event("change"));
      form.scrollIntoView({ behavior: "smooth" });
      form.elements.file.focus();
    });
  }

  // --- import --------------------------------------------------------------------------------

  const importForm = document.getElementById("import-form");
  if (importForm) {
    const message = document.getElementById("import-message");
    const problems = document.getElementById("import-problems");
    const preview = document.getElementById("preview");
    const startButton = document.getElementById("import-start");
    const result = document.getElementById("import-result");
    const bar = document.getElementById("import-progress");
    const confirmBox = document.getElementById("replace-confirm");
    const forceBox = document.getElementById("force-confirm");
    const staleWarning = document.getElementById("stale-warning");
    const modeWarning = document.getElementById("mode-warning");
    const layerField = document.getElementById("source-layer-field");
    const layerSelect = importForm.elements.source_layer;

    /* A GeoPackage of several layers: the one chosen ("" until the file has been seen). */
    function sourceLayer() { return layerField.hidden ? "" : layerSelect.value; }
    function offerLayers(layers) {
      const chosen = layerSelect.value;
      layerSelect.replaceChildren(el("option", t("— choose a layer"), { value: "" }));
      for (const name of layers) layerSelect.append(el("option", name, { value: name }));
      layerSelect.value = layers.includes(chosen) ? chosen : "";
      layerField.hidden = false;
    }

    function mode() { return importForm.elements.mode.value; }

    /* Streets and communities may come by name: the district their provisional codes go under. */
    const BY_NAME = ["streets", "communities"];
    const districtField = document.getElementById("district-field");
    function district() {
      return BY_NAME.includes(importForm.elements.layer.value) ? importForm.elements.district.value.trim() : "";
    }
    function showDistrict() { districtField.hidden = !BY_NAME.includes(importForm.elements.layer.value); }
    showDistrict();

    function forget() {
      if (state.upload && !state.job) {
        call(`/api/layers/uploads/${state.upload}`, { method: "DELETE" });  // best effort
      }
      state.upload = null;
      state.preview = null;
      state.job = null;
      preview.hidden = true;
      layerField.hidden = true;
      layerSelect.replaceChildren();
      showProblems(problems, []);
      say(message, "");
      say(result, "");
    }

    function currentMapping() {
      const mapping = {};
      for (const select of document.querySelectorAll("#mapping select")) {
        if (select.value) mapping[select.dataset.column] = select.value;
      }
      return mapping;
    }

    async function runPreview(withMapping) {
      const file = importForm.elements.file.files[0];
      if (!state.upload && !file) { say(message, t("Choose a file first"), "bad"); return; }
      if (!state.upload && config.maxUpload && file.size > config.maxUpload) {
        say(message, t("{name} is {size} MB, over the upload limit of {limit}: split it, or import it with the command line", { name: file.name, size: gpLocale.number(file.size / 1048576, 1), limit: config.maxUploadText }), "bad");
        return;
      }
      const data = new FormData();
      if (state.upload) data.append("upload", state.upload); else data.append("file", file);
      data.append("crs", importForm.elements.crs.value.trim());
      data.append("mode", mode());
      data.append("district", district());
      data.append("source_layer", sourceLayer());
      if (withMapping) data.append("mapping", JSON.stringify(currentMapping()));
      state.busy = true;
      startButton.disabled = true;
      say(message, state.upload ? t("Checking…") : t("Uploading and checking…"));
      showProblems(problems, []);
      const answer = await call(`/api/layers/${importForm.elements.layer.value}/preview`,
                                { method: "POST", body: data });
      state.busy = false;
      if (!answer.ok) {
        if (Array.isArray(answer.body.layers) && answer.body.upload) {  // kept: choose a layer of it
          state.upload = answer.body.upload;
          offerLayers(answer.body.layers);
          // nothing is wrong with the file yet: the planner has a choice to make, not an error
          say(message, t("This file holds several layers: choose the one to import."));
          showProblems(problems, []);
          return;
        }
        if (answer.status === 404) state.upload = null;  // gone: the next preview sends the file again
        if (answer.status === 400 && !state.upload) preview.hidden = true;
        say(message, answer.status === 413 ? "" : t("This file cannot be imported; nothing was written:"),
            "bad");
        showProblems(problems, problemsOf(answer.body));
        return;
      }
      state.upload = answer.body.upload;
      state.preview = answer.body;
      render(answer.body);
    }

    // a value of the file as people read it: a facility kind (service_centre) by its name
    function shown(column) {
      const kinds = importForm.elements.layer.value === "facilities" && (state.preview?.mapping || {})[column] === "kind";
      return (v) => (kinds && config.facilityKinds[v]) || v;
    }

    function render(p) {
      preview.hidden = false;
      const types = Object.entries(p.geometry_types).map(([k, v]) => `${k} ${number(v)}`).join(", ");
      const crs = p.declared_crs || p.crs || t("not declared");
      document.getElementById("preview-summary").textContent =
        t("{file}: {n} features ({types}) · coordinate system {crs}", { file: p.file, n: number(p.features), types, crs });
      const stored = document.getElementById("preview-stored");
      if (p.stored) {
        const clash = p.stored.already;
        stored.textContent = clash
          ? (p.mode === "append"
            ? t("{n} codes of the file are stored already: append will refuse them; choose update or replace", { n: number(clash) })
            : t("{n} codes of the file are stored already: they will be updated or replaced", { n: number(clash) }))
          : (p.mode === "update" ? t("None of the file's codes is stored yet: update will refuse them")
            : t("None of the file's codes is stored yet"));
      } else {
        stored.textContent = "";
      }
      if (p.provisional_count) {
        stored.textContent += (stored.textContent ? " · " : "") +
          t("{n} features given by name get provisional codes ({names})", { n: number(p.provisional_count),
            names: gpLocale.list(p.provisional.slice(0, 5)) + (p.provisional_count > 5 ? " …" : "") });
      }
      // mapping: one row per source column, a select of the layer's fields
      const body = document.querySelector("#mapping tbody");
      body.replaceChildren();
      p.columns.forEach((column, i) => {
        const tr = el("tr");
        tr.append(el("td", column));
        const select = el("select", null, { "data-column": column, "aria-label": `${column} →` });
        select.append(el("option", t("— not imported"), { value: "" }));
        for (const f of p.fields) {
          // the field by its label; its key stays in the value and the tooltip
          select.append(el("option", `${f.label}${f.required ? " *" : ""}`, { value: f.name, title: f.name }));
        }
        select.value = p.mapping[column] || "";
        select.addEventListener("change", () => runPreview(true));
        const td = el("td");
        td.append(select);
        tr.append(td);
        const sample = p.rows.map((r) => r[i]).filter((v) => v !== null && v !== "").slice(0, 3).map(shown(column)).join(" · ");
        tr.append(el("td", sample, { class: "muted" }));
        body.append(tr);
      });
      const mapped = new Set(Object.values(p.mapping).filter(Boolean));
      const missing = p.fields.filter((f) => f.required && !mapped.has(f.name) && f.name !== "district_code");
      document.getElementById("missing-fields").textContent = missing.length && !p.ok
        ? t("Required fields no column fills:") + " " + missing.map((f) => f.label).join(t(", "))
        : "";
      // first rows
      const head = document.querySelector("#preview-rows thead");
      const rows = document.querySelector("#preview-rows tbody");
      head.replaceChildren();
      rows.replaceChildren();
      const tr = el("tr");
      for (const c of [...p.columns, "geometry"]) tr.append(el("th", c));
      head.append(tr);
      for (const r of p.rows) {
        const row = el("tr");
        r.forEach((v, i) => row.append(el("td", v === null ? "" : shown(p.columns[i])(v), { title: v === null ? "" : String(v) })));
        rows.append(row);
      }
      if (p.ok) {
        const repaired = p.repaired_count ? " " + t("{n} invalid geometries will be repaired.", { n: number(p.repaired_count) }) : "";
        say(message, t("The file passes the checks.") + repaired, "ok");
        showProblems(problems, []);
      } else {
        say(message, t("The file does not pass the checks; fix these first:"), "bad");
        showProblems(problems, p.problems, p.problem_count);
      }
      staleWarning.hidden = !p.stale;
      staleWarning.textContent = p.stale ? p.stale.message : "";
      forceBox.hidden = !p.stale;
      if (!p.stale) forceBox.querySelector("input").checked = false;
      updateStart();
    }

    function updateStart() {
      const p = state.preview;
      const replacing = mode() === "replace";
      const forced = !(p && p.stale) || forceBox.querySelector("input").checked;
      confirmBox.hidden = !replacing;
      if (replacing) {
        const tr = document.querySelector(`#layers tr[data-layer="${importForm.elements.layer.value}"] .count`);
        document.getElementById("replace-count").textContent = tr ? tr.textContent : "?";
      }
      const confirmed = !replacing || confirmBox.querySelector("input").checked;
      // the preview counted the file's codes already stored: a mode that will refuse them is not offered
      const refusal = modeRefusal(p);
      modeWarning.hidden = !refusal;
      modeWarning.textContent = refusal;
      startButton.disabled = !(p && p.ok && confirmed && forced && !refusal && !state.busy && !state.job);
    }

    /* Why the chosen mode will refuse the previewed file, in the page's words; "" when it will not. */
    function modeRefusal(p) {
      if (!p || !p.stored) return "";
      const { already, in_file: inFile } = p.stored;
      if (mode() === "append" && already > 0) {
        return t("{n} codes of the file are stored in this layer already: adding them would be refused. Choose “{update}” or “{replace}” above.",
                 { n: number(already), update: modeWord("update"), replace: modeWord("replace") });
      }
      if (mode() === "update" && already < inFile) {
        return t("{n} codes of the file are not in this layer: updating would refuse them. Choose “{append}” or “{replace}” above.",
                 { n: number(inFile - already), append: modeWord("append"), replace: modeWord("replace") });
      }
      return "";
    }

    importForm.addEventListener("submit", (event) => { event.preventDefault(); runPreview(false); });
    importForm.elements.file.addEventListener("change", () => { forget(); if (importForm.elements.file.files[0]) runPreview(false); });
    importForm.elements.layer.addEventListener("change", () => { showDistrict(); if (state.upload || importForm.elements.file.files[0]) runPreview(false); });
    importForm.elements.district.addEventListener("change", () => { if (state.upload || importForm.elements.file.files[0]) runPreview(true); });
    importForm.elements.crs.addEventListener("change", () => { if (state.upload || importForm.elements.file.files[0]) runPreview(true); });
    for (const radio of importForm.elements.mode) {
      radio.addEventListener("change", () => { if (state.preview) runPreview(true); else updateStart(); });
    }
    confirmBox.querySelector("input").addEventListener("change", updateStart);
    forceBox.querySelector("input").addEventListener("change", updateStart);
    layerSelect.addEventListener("change", () => { if (state.upload && layerSelect.value) runPreview(false); });

    startButton.addEventListener("click", async () => {
      startButton.disabled = true;
      say(result, t("Queued…"));
      const answer = await call(`/api/layers/${importForm.elements.layer.value}/import`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ upload: state.upload, mode: mode(), crs: importForm.elements.crs.value.trim(),
                               mapping: currentMapping(), district: district(), source_layer: sourceLayer(),
                               force: Boolean(state.preview && state.preview.stale && forceBox.querySelector("input").checked) }) });
      if (answer.status !== 202) {
        say(result, answer.body.detail || `HTTP ${answer.status}`, "bad");
        if (answer.status === 404) { state.upload = null; }
        updateStart();
        return;
      }
      state.job = answer.body.job;
      bar.hidden = false;
      bar.value = 0;
      follow(answer.body.url);
    });

    async function follow(url) {
      const answer = await call(url);
      if (!answer.ok) { say(result, answer.body.detail, "bad"); return; }
      const job = answer.body;
      bar.value = job.progress;
      if (job.status === "queued") {
        say(result, job.message || t("Queued…"));  // the server tells when no worker takes jobs
      } else if (job.status === "running") {
        say(result, job.phase === "writing"
          ? t("Writing {done} / {total}", { done: number(job.done), total: number(job.total) })
          : t("Reading and checking…"));
      } else if (job.status === "failed") {
        say(result, t("The import failed; nothing was written: {reason}", { reason: job.message }), "bad");
        finish();
        return;
      } else if (job.status === "done") {
        const r = job.result;
        if (r.refused) {
          // the reason right after the colon, by the button; several reasons listed as well
          say(result, t("The import was refused; nothing was written: {reason}", { reason: r.problems[0] || "—" }), "bad");
          showProblems(problems, r.count > 1 ? r.problems : [], r.count);
        } else {
          say(result, t("Imported: {n} features written ({mode})", { n: number(r.written), mode: modeName(r.mode) }) +
            (r.deleted ? t(", {n} replaced", { n: number(r.deleted) }) : "") +
            (r.repaired.length ? t(", {n} repaired", { n: number(r.repaired.length) }) : "") +
            (r.ignored_fields.length ? " · " + t("fields not imported: {fields}", { fields: gpLocale.list(r.ignored_fields) }) : ""), "ok");
          bar.value = 1;
          refreshTable();
        }
        finish();
        return;
      }
      setTimeout(() => follow(url), 500);
    }

    function finish() {
      // the upload is gone after an import: a new import starts from a file again
      state.upload = null;
      state.preview = null;
      state.job = null;
      startButton.disabled = true;
      importForm.elements.file.value = "";
    }
  }

  // --- export --------------------------------------------------------------------------------

  const exportForm = document.getElementById("export-form");
  const exportMessage = document.getElementById("export-message");
  let places = { streets: [], communities: [] };

  function fillCommunities() {
    const street = exportForm.elements.street.value;
    const select = exportForm.elements.community;
    const keep = select.value;
    select.replaceChildren(el("option", t("all"), { value: "" }));
    for (const c of places.communities) {
      if (!street || c.code.startsWith(street)) select.append(el("option", `${c.name} ${c.code}`, { value: c.code }));
    }
    select.value = [...select.options].some((o) => o.value === keep) ? keep : "";
  }

  function fitOptions() {
    const fmt = exportForm.elements.format.value;
    exportForm.elements.encoding.disabled = !(fmt === "shp" || fmt === "csv");
    exportForm.elements.crs.disabled = fmt === "geojson";
    if (fmt === "geojson") exportForm.elements.crs.value = "";
  }

  (async function loadPlaces() {
    const answer = await call("/api/layers/places");
    if (!answer.ok) return;
    places = answer.body;
    for (const s of places.streets) exportForm.elements.street.append(el("option", `${s.name} ${s.code}`, { value: s.code }));
    fillCommunities();
    exportForm.dataset.ready = "1";
  })();
  exportForm.elements.street.addEventListener("change", fillCommunities);
  exportForm.elements.format.addEventListener("change", fitOptions);
  fitOptions();

  function filename(response, fallback) {
    const header = response.headers.get("Content-Disposition") || "";
    const star = header.match(/filename\*=UTF-8''([^;]+)/i);
    if (star) return decodeURIComponent(star[1]);
    const plain = header.match(/filename="?([^";]+)"?/i);
    return plain ? plain[1] : fallback;
  }

  exportForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = exportForm.elements;
    const query = new URLSearchParams({ format: f.format.value });
    if (!f.encoding.disabled) query.set("encoding", f.encoding.value);
    if (!f.crs.disabled && f.crs.value.trim()) query.set("crs", f.crs.value.trim());
    if (f.street.value) query.set("street", f.street.value);
    if (f.community.value) query.set("community", f.community.value);
    say(exportMessage, t("Exporting…"));
    const button = exportForm.querySelector("button[type=submit]");
    button.disabled = true;
    let response;
    try {
      response = await fetch(`/api/layers/${f.layer.value}/export?${query}`, { credentials: "same-origin" });
    } catch (err) {
      say(exportMessage, t("The connection failed: try again"), "bad");
      button.disabled = false;
      return;
    }
    button.disabled = false;
    if (!response.ok) {
      let detail = `HTTP ${response.status}`;
      try { detail = (await response.json()).detail || detail; } catch (err) { /* not JSON */ }
      say(exportMessage, detail, "bad");
      return;
    }
    const blob = await response.blob();
    const name = filename(response, `${f.layer.value}.${f.format.value === "shp" ? "zip" : f.format.value}`);
    const link = el("a", null, { href: URL.createObjectURL(blob), download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    const features = response.headers.get("X-Gridplan-Features");
    const cut = response.headers.get("X-Gridplan-Truncated");
    say(exportMessage, t("Exported {name}: {n} features", { name, n: number(features) }) +
      (cut ? " · " + t("{n} text values cut at 254 bytes", { n: number(cut) }) : ""), "ok");
  });

  return { state, config };
})();
