/* The case pages' small maps, made for a phone. On the report form: the map opens where the
   phone is (or on the 网格员's own cells without GPS), a tap places the pin and a drag corrects
   it; the place in words (community, nearest road, cell) and the open cases of the same category
   nearby come from the server before sending, and "this is the same case" adds a note (and the
   photo) to that case instead of reporting a new one. On a case page: the pin and its cell, the
   place in words, the distance from the 网格员 and a geo: link that opens the phone's map app.
   The base is the user's grid cells and the roads, drawn from the API, so the map is usable with
   no base map at all (tiles that fail leave them). Text from the database goes in with
   textContent only. */
"use strict";
(function () {
  const script = document.currentScript;  // on a case page it names Leaflet's files, loaded when needed
  const config = JSON.parse(document.getElementById("gridplan-config").textContent);
  const page = document.querySelector("main.cases").dataset.page;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  window.gridplan = window.gridplan || { config };
  const state = (window.gridplan.pin = { ready: false, place: null, nearby: [], lookups: 0 });
  const mine = new Set(config.myCells || []);
  const CENTRE = [30.59, 114.27];
  const LOOKUP_WAIT = 8000;  // ms a place look-up may take before the form stops waiting for it

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }
  function status(text) { document.getElementById("status").textContent = text; }
  async function call(url, options) {
    const response = await fetch(url, Object.assign({ credentials: "same-origin", headers: { Accept: "application/json" } }, options || {}));
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    return { ok: response.ok, status: response.status, body };
  }
  function post(url, body) {
    const headers = { "X-CSRFToken": csrf, Accept: "application/json" };
    if (!(body instanceof FormData)) headers["Content-Type"] = "application/json";
    return call(url, { method: "POST", headers, body: body instanceof FormData ? body : JSON.stringify(body) });
  }
  function reason(answer) { return answer.body && answer.body.detail ? answer.body.detail : `HTTP ${answer.status}`; }
  function metres(m) {
    return m >= 1000 ? t("{n} km", { n: gpLocale.number(m / 1000, 1) }) : t("{n} m", { n: gpLocale.number(Math.round(m)) });
  }
  function haversine(a, b) {
    const r = Math.PI / 180;
    const h = Math.sin((b[0] - a[0]) * r / 2) ** 2 + Math.cos(a[0] * r) * Math.cos(b[0] * r) * Math.sin((b[1] - a[1]) * r / 2) ** 2;
    return 2 * 6371008.8 * Math.asin(Math.sqrt(h));
  }
  function debounce(fn, ms) { let timer = null; return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); }; }

  /* --- the map and its base: the user's cells and the roads ------------------------------ */

  function makeMap(id, highlight, caseCode) {
    const map = L.map(id, { maxZoom: 19, zoomSnap: 1, attributionControl: Boolean(config.tiles), tap: true });
    if (config.tiles) {
      L.tileLayer(config.tiles.url, { subdomains: config.tiles.subdomains, attribution: config.tiles.attribution, maxZoom: 19 })
        .addTo(map);
    }
    L.control.scale({ imperial: false }).addTo(map);
    const roads = L.geoJSON(null, { interactive: false,
      style: (f) => ({ color: f.properties.road_class === "arterial" ? "#8c8c8c" : "#b3b3b3", weight: f.properties.road_class === "arterial" ? 4 : 2 }) }).addTo(map);
    const cells = L.geoJSON(null, { interactive: false,
      style: (f) => {
        const code = f.properties.code;
        const strong = code === highlight() || mine.has(code);
        return { color: code === highlight() ? "#d7191c" : "#e6550d", weight: strong ? 3 : 1.5, fillOpacity: code === highlight() ? 0.12 : strong ? 0.06 : 0.02 };
      } }).addTo(map);
    let loaded = null;
    let asking = null;
    async function loadBase() {
      const view = map.getBounds();
      if ((loaded && loaded.contains(view)) || (asking && asking.contains(view))) return;
      const b = view.pad(0.5);
      const box = [Math.max(b.getWest(), -180), Math.max(b.getSouth(), -90), Math.min(b.getEast(), 180), Math.min(b.getNorth(), 90)];
      if (box[2] - box[0] > 1 || box[3] - box[1] > 1) return;  // zoomed too far out for a phone's base
      asking = b;
      let answer;
      try {
        // on a case page the case's own cell comes too, whoever reads it (a department's handler)
        const ofCase = caseCode ? `&case=${encodeURIComponent(caseCode)}` : "";
        answer = await call(`/api/incidents/basemap?bbox=${box.map((v) => v.toFixed(6)).join(",")}${ofCase}`);
      } finally {
        asking = null;  // no signal: asked again when the map moves
      }
      if (!answer.ok) return;
      loaded = b;
      cells.clearLayers(); cells.addData(answer.body.cells);
      roads.clearLayers(); roads.addData(answer.body.roads);
    }
    map.on("moveend", debounce(() => loadBase().catch(() => {}), 150));
    return { map, cells, roads, loadBase, restyle: () => cells.setStyle(cells.options.style) };
  }

  function fitStart(map) {
    const e = config.extent;
    if (e) map.fitBounds([[e[1], e[0]], [e[3], e[2]]], { animate: false, maxZoom: 17 });
    else map.setView(CENTRE, 13);
  }

  function locate(options) {
    return new Promise((resolve, reject) => {
      if (!navigator.geolocation) { reject(new Error(t("This device cannot tell its location"))); return; }
      // the browser's own message is in its language, not the page's: said in the page's words
      const why = (err) => new Error(err && err.code === 1 ? t("location is not allowed for this site")
        : err && err.code === 3 ? t("no position in time") : t("the position is not available"));
      navigator.geolocation.getCurrentPosition(resolve, (err) => reject(why(err)),
        Object.assign({ enableHighAccuracy: true, timeout: 15000 }, options || {}));
    });
  }

  /* --- the report form ------------------------------------------------------------------ */

  function startNew() {
    const form = document.getElementById("report-form");
    const words = document.getElementById("place-words");
    const refusal = document.getElementById("place-refusal");
    const base = makeMap("pin-map", () => (state.place ? state.place.grid_code : null));
    const map = base.map;
    state.map = map;
    let marker = null;
    let accuracy = null;

    /* the place in words (or why it cannot be reported) brought into view above the send bar:
       on a phone it would lie under the bar, or below the screen */
    function revealPlace() {
      const shown = refusal.hidden ? words : refusal;
      if (shown.textContent) shown.scrollIntoView({ block: "nearest" });
    }

    function showPlace(answer) {
      state.place = answer.place;
      state.reportable = answer.reportable;
      words.textContent = answer.place.words;
      refusal.hidden = answer.reportable;
      refusal.textContent = answer.reportable ? "" : answer.refusal.detail;
      showNearby(answer.likely_duplicates || []);
      base.restyle();
      revealPlace();
    }

    const lookup = debounce(async () => {
      if (!marker) return;
      const at = marker.getLatLng();
      const query = new URLSearchParams({ lon: at.lng.toFixed(7), lat: at.lat.toFixed(7) });
      if (form.elements.category.value) query.set("category", form.elements.category.value);
      const asked = (state.asked = (state.asked || 0) + 1);
      let answer = null;
      // no signal: said at once (a look-up offline would only fail), and a bad signal gives up
      // after LOOKUP_WAIT rather than leave "Finding the place…" standing; either way the report
      // can still be sent (it waits on the phone) and the server checks the place when it arrives
      if (navigator.onLine) {
        words.textContent = t("Finding the place…");
        const stop = new AbortController();
        const timer = setTimeout(() => stop.abort(), LOOKUP_WAIT);
        try {
          answer = await call(`/api/incidents/place?${query}`, { signal: stop.signal });
        } catch (err) {
          answer = null;
        } finally {
          clearTimeout(timer);
        }
      }
      if (asked !== state.asked) return;  // the pin moved meanwhile: a newer look-up answers
      state.lookups += 1;
      if (!answer) {
        state.place = null; state.reportable = undefined;  // unknown, not refused
        refusal.hidden = true; refusal.textContent = "";
        words.textContent = t("No signal: the place will be checked when the report is sent");
        showNearby([]);
        base.restyle();
        return;
      }
      if (!answer.ok) {
        words.textContent = ""; refusal.hidden = false; refusal.textContent = reason(answer); revealPlace(); return;
      }
      showPlace(answer.body);
    }, 200);

    function setPin(latlng, pan) {
      if (!marker) {
        marker = L.marker(latlng, { draggable: true, autoPan: true, title: t("The case is here"), keyboard: true }).addTo(map);
        marker.on("dragend", () => setPin(marker.getLatLng(), false));
      } else {
        marker.setLatLng(latlng);
      }
      form.elements.lon.value = latlng.lng.toFixed(7);
      form.elements.lat.value = latlng.lat.toFixed(7);
      if (pan) map.panTo(latlng, { animate: false });
      // the words change after the gesture that placed the pin, not during it: typed coordinates
      // are taken when the field loses focus, i.e. in the middle of the tap on "Report", and a
      // shorter send bar (the old status gone) would move the button from under the finger, so
      // that the tap lands beside it and nothing is sent. A message said meanwhile stays.
      const said = document.getElementById("status").textContent;
      setTimeout(() => {
        document.getElementById("pin-hint").textContent = t("Drag the pin to correct it, or tap elsewhere.");
        if (document.getElementById("status").textContent === said) status("");
      }, 0);
      lookup();
    }

    function clearPin() {
      if (marker) { map.removeLayer(marker); marker = null; }
      if (accuracy) { map.removeLayer(accuracy); accuracy = null; }
      state.place = null; state.reportable = undefined; state.nearby = [];
      words.textContent = ""; refusal.hidden = true;
      showNearby([]);
      document.getElementById("pin-hint").textContent = t("Tap the map where the case is; drag the pin to correct it.");
    }

    async function here(placePin) {
      status(t("Locating…"));
      try {
        const pos = await locate();
        const at = L.latLng(pos.coords.latitude, pos.coords.longitude);
        if (accuracy) map.removeLayer(accuracy);
        accuracy = L.circle(at, { radius: pos.coords.accuracy, interactive: false, color: "#2c7bb6", weight: 1, fillOpacity: 0.08 }).addTo(map);
        map.setView(at, Math.max(map.getZoom(), 17), { animate: false });
        document.getElementById("accuracy").textContent = t("accuracy ±{m} m", { m: Math.round(pos.coords.accuracy) });
        if (placePin) setPin(at, false);
        status(t("Located"));
      } catch (err) {
        status(t("Cannot locate: {reason}", { reason: err.message }) + " · " + t("Tap the map where the case is"));
      }
    }

    map.on("click", (e) => setPin(e.latlng, false));
    document.getElementById("locate").addEventListener("click", () => here(true));
    for (const name of ["lon", "lat"]) {
      form.elements[name].addEventListener("change", () => {
        const lon = Number(form.elements.lon.value), lat = Number(form.elements.lat.value);
        if (form.elements.lon.value && form.elements.lat.value && Number.isFinite(lon) && Number.isFinite(lat)
          && Math.abs(lon) <= 180 && Math.abs(lat) <= 90) setPin(L.latLng(lat, lon), true);
      });
    }
    form.elements.category.addEventListener("change", () => lookup());
    form.addEventListener("reset", () => { clearPin(); clearPhoto(); });
    // before any other submit handler (capture, on the form itself): no report without a pin,
    // nor with a pin the server has said it will refuse
    form.addEventListener("submit", (e) => {
      const typed = form.elements.lon.value && form.elements.lat.value;
      if (!marker && !typed) {
        e.preventDefault(); e.stopImmediatePropagation();
        status(t("Place the pin first: tap the map where the case is"));
        document.getElementById("pin-map").scrollIntoView({ block: "center" });
      } else if (state.reportable === false) {
        e.preventDefault(); e.stopImmediatePropagation();
        status(refusal.textContent);
        refusal.scrollIntoView({ block: "center" });
      }
    }, true);

    /* the photo, previewed before sending (a data: URL: the page's images come from itself) */
    const photo = form.elements.photo;
    const box = document.getElementById("photo-preview-box");
    const img = document.getElementById("photo-preview");
    function clearPhoto() { box.hidden = true; img.removeAttribute("src"); }
    photo.addEventListener("change", () => {
      const file = photo.files[0];
      if (!file) { clearPhoto(); return; }
      if (!/^image\/(jpeg|png|webp)$/.test(file.type)) { clearPhoto(); status(t("Not a JPEG, PNG or WebP photo")); return; }
      const reader = new FileReader();
      reader.onload = () => { img.src = reader.result; box.hidden = false; };
      reader.readAsDataURL(file);
    });
    document.getElementById("photo-remove").addEventListener("click", () => {
      photo.value = ""; clearPhoto(); document.getElementById("photo-name").textContent = "";
    });

    /* the open cases of the category nearby, before sending */
    function showNearby(list) {
      state.nearby = list;
      const section = document.getElementById("nearby");
      section.hidden = !list.length;
      document.getElementById("nearby-list").replaceChildren(...list.map((d) => {
        const li = el("li", null, { class: "case-item", "data-code": d.code });
        const head = el("div", null, { class: "head" });
        head.append(el("a", d.code, { class: "code", href: `/cases/${encodeURIComponent(d.code)}`, target: "_blank", rel: "noopener" }),
          el("span", d.status_label));
        li.append(head, el("div", d.category_name + " · " + t("{distance} away", { distance: metres(d.distance_m) })),
          el("div", d.description || "", { class: "desc" }), el("div", t("reported {when}", { when: gpLocale.date(d.reported_at) }), { class: "muted" }));
        const same = el("button", t("This is the same case"), { type: "button", class: "primary same-case", "data-code": d.code });
        same.addEventListener("click", () => sameCase(d, same));
        const buttons = el("div", null, { class: "action-buttons" });
        buttons.append(same);
        li.append(buttons);
        return li;
      }));
    }

    /* "this is the same case": the note (and the photo, sent with it) is kept on the phone
       first, then sent (js/offline_queue.js, with a client_id): no signal loses nothing and a
       note sent twice is stored once */
    async function sameCase(d, button) {
      const description = form.elements.description.value.trim();
      const note = description || t("Seen again at the same place");
      button.disabled = true;
      status(t("Adding to case {code}…", { code: d.code }));
      const sent = await window.gpQueue.send({ kind: "note", url: `/api/incidents/${encodeURIComponent(d.code)}/notes`,
        body: { note }, photo: photo.files.length ? photo.files[0] : null, code: d.code });
      if (sent.refused) { button.disabled = false; status(t("Refused: {reason}", { reason: sent.reason })); return; }
      const text = document.getElementById("reported-text");
      document.getElementById("reported").hidden = false;
      document.getElementById("duplicates").hidden = true;
      const link = el("a", d.code, { href: `/cases/${encodeURIComponent(d.code)}` });
      if (sent.kept) {
        text.replaceChildren(t("Kept on this phone: it will be sent when the signal returns") + " · ", link,
          " · " + t("no new case was reported"));
      } else {
        text.replaceChildren(t("Added to case") + " ", link, " · " + t("no new case was reported")
          + (photo.files.length ? " · " + t("Photo added") : ""));
      }
      form.reset();
      clearPhoto();
      document.getElementById("photo-name").textContent = "";
      document.getElementById("nearby").hidden = true;
      status(sent.kept ? t("Kept on this phone: it will be sent when the signal returns") : t("Added to case {code}", { code: d.code }));
      document.getElementById("reported").scrollIntoView({ block: "center" });
    }

    /* where the map opens: a pin given in the address ("report here" from the map), else the
       phone's position, else the 网格员's own cells */
    const given = new URLSearchParams(location.search);
    const lon = Number(given.get("lon")), lat = Number(given.get("lat"));
    fitStart(map);
    base.loadBase().catch(() => {});
    if (given.get("lon") && given.get("lat") && Number.isFinite(lon) && Number.isFinite(lat)) {
      map.setView([lat, lon], 17, { animate: false });
      setPin(L.latLng(lat, lon), false);
    } else if (navigator.geolocation) {
      here(true);
    }
    state.ready = true;
  }

  /* --- a case page ----------------------------------------------------------------------- */

  function startCase() {
    let shown = null;
    let base = null;
    function show(c) {
      if (c.lon === null || c.lon === undefined) return;
      const at = L.latLng(c.lat, c.lon);
      if (!base) {
        base = makeMap("case-map", () => c.grid_code, c.code);
        state.map = base.map;
        base.map.setView(at, 17, { animate: false });
        base.loadBase().catch(() => {});
        L.marker(at, { title: c.code, keyboard: false }).addTo(base.map);
      }
      if (shown === c.code) return;
      shown = c.code;
      const place = c.place || {};
      document.getElementById("case-place").textContent = place.words || c.grid_name || c.grid_code || "";
      const link = document.getElementById("geo-link");
      link.href = `geo:${c.lat.toFixed(7)},${c.lon.toFixed(7)}?q=${c.lat.toFixed(7)},${c.lon.toFixed(7)}(${encodeURIComponent(c.code)})`;
      link.hidden = false;
      const away = document.getElementById("case-distance");
      away.textContent = t("Locating…");
      locate({ enableHighAccuracy: false, maximumAge: 60000 }).then((pos) => {
        const d = haversine([pos.coords.latitude, pos.coords.longitude], [c.lat, c.lon]);
        away.textContent = t("{distance} from you", { distance: metres(d) });
        away.dataset.metres = String(Math.round(d));
        const me = L.circleMarker([pos.coords.latitude, pos.coords.longitude], { radius: 7, color: "#2c7bb6", fillOpacity: 0.8 })
          .bindTooltip(t("You are here")).addTo(base.map);
        // near enough to walk: show both, the way there at a glance
        if (d < 3000) base.map.fitBounds(L.latLngBounds([at, me.getLatLng()]).pad(0.25), { animate: false, maxZoom: 17 });
      }).catch((err) => { away.textContent = t("Your position is unknown: {reason}", { reason: err.message }); });
      state.ready = true;
    }
    document.addEventListener("gridplan:case", (e) => show(e.detail));
    if (window.gridplan.case) show(window.gridplan.case);
    else {  // cases.js has not loaded the case yet, or has no event: ask once it has
      const wait = setInterval(() => { if (window.gridplan.case) { clearInterval(wait); show(window.gridplan.case); } }, 200);
      setTimeout(() => clearInterval(wait), 60000);
    }
  }

  /* Leaflet (its styles, then its code) added to the page: a case page loads it only when the
     case has a place to show, after its first screen. */
  function loadLeaflet() {
    if (typeof L !== "undefined") return Promise.resolve();
    const js = script && script.dataset.leafletJs;
    if (!js) return Promise.reject(new Error("no map code"));
    const add = (node) => new Promise((resolve, reject) => {
      node.onload = resolve;
      node.onerror = reject;
      document.head.append(node);
    });
    const css = Object.assign(document.createElement("link"), { rel: "stylesheet", href: script.dataset.leafletCss });
    return add(css).then(() => add(Object.assign(document.createElement("script"), { src: js })));
  }

  if (page === "case") {
    const inline = document.getElementById("case-data");
    const c = inline ? JSON.parse(inline.textContent) : null;
    if (c && (c.lon === null || c.lon === undefined)) return;  // no place: no map to draw
    loadLeaflet().then(startCase, () => status(t("The map could not load")));
    return;
  }
  if (typeof L === "undefined") { status(t("The map could not load")); return; }
  if (page === "new") startNew();
})();
