/* Nothing lost to a bad signal: reports and steps are first kept on the phone (IndexedDB, a
   "queue"), then sent; what could not be sent waits and goes when the signal returns, each with
   an id the phone made (client_id), so the server stores it once however often it arrives.
   The top of every page says what waits; an item the server refused (a step on a case that moved
   meanwhile: 409 with the case as it is now) stays, explained, until it is redone or discarded.

   Also here: the service worker's registration (/sw.js), and the shared phone: signing out
   empties the queue and the kept pages (after asking when something still waits), and another
   user signing in does not see the previous user's kept pages or items.

   window.gpQueue: send(item) → {sent, kept, refused, answer}; items(); discard(id); redo(id);
   flush(). An item: {client_id, kind: "report" | "step" | "note", url, fields | body, photo,
   code, category_name}; the list names it in the page's language when it is shown (label()),
   not in the language it was made in. */
"use strict";
(function () {
  const script = document.currentScript;
  const user = (script && script.dataset.user) || "";
  const DB = "gridplan-offline";
  const STORE = "queue";
  let flushing = null;

  // the page's catalogue (js/i18n.js, loaded in the head)
  const t = window.t || ((msgid) => msgid);

  /* --- the phone's store ------------------------------------------------------------------ */

  function open() {
    return new Promise((resolve, reject) => {
      const request = indexedDB.open(DB, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: "client_id" });
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }
  async function tx(mode, work) {
    const db = await open();
    return new Promise((resolve, reject) => {
      const t = db.transaction(STORE, mode);
      const store = t.objectStore(STORE);
      let result;
      Promise.resolve(work(store)).then((r) => { result = r; });
      t.oncomplete = () => { db.close(); resolve(result); };
      t.onerror = () => { db.close(); reject(t.error); };
    });
  }
  function req(request) {
    return new Promise((resolve, reject) => { request.onsuccess = () => resolve(request.result); request.onerror = () => reject(request.error); });
  }
  const put = (item) => tx("readwrite", (s) => req(s.put(item)));
  const remove = (id) => tx("readwrite", (s) => req(s.delete(id)));
  const everything = () => tx("readonly", (s) => req(s.getAll()));
  /* this user's items, oldest first (another user's items on a shared phone are neither shown nor sent) */
  async function items() {
    return (await everything()).filter((i) => i.user === user).sort((a, b) => a.made - b.made);
  }

  function newId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));  // a page on plain http has no randomUUID
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  /* --- sending ---------------------------------------------------------------------------- */

  let csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  async function freshToken() {  // a page kept offline may carry a token past its hour
    const html = await (await fetch("/cases/new", { credentials: "same-origin", cache: "no-store" })).text();
    const found = /name="csrf-token" content="([^"]+)"/.exec(html);
    if (found) csrf = found[1];
  }

  function request(item) {
    const headers = { "X-CSRFToken": csrf, Accept: "application/json" };
    let body;
    if (item.kind === "report" || item.photo) {  // a step with its after-photo goes as a form too
      body = new FormData();
      for (const [k, v] of Object.entries(item.fields || item.body)) if (v !== null && v !== undefined && v !== "") body.append(k, v);
      body.append("client_id", item.client_id);
      if (item.photo) body.append("photo", item.photo, item.photo.name || "photo.jpg");
    } else {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify({ ...item.body, client_id: item.client_id });
    }
    return fetch(item.url, { method: "POST", credentials: "same-origin", headers, body });
  }

  /* One try: "sent" (stored, or stored before: 201/200), "waiting" (no signal, signed out, the
     server busy: tried again later) or "refused" (the server said no: kept with its reason). */
  async function attempt(item) {
    let response;
    try {
      response = await request(item);
      if (response.status === 400) {
        const copy = await response.clone().json().catch(() => ({}));
        if (/CSRF/i.test(copy.detail || "")) { await freshToken(); response = await request(item); }
      }
    } catch (err) {
      return { outcome: "waiting", reason: t("no signal") };
    }
    let answer = null;
    try { answer = await response.json(); } catch (e) { answer = null; }
    if (response.ok) return { outcome: "sent", answer };
    if (response.status === 401) return { outcome: "waiting", reason: t("sign in again to send") };
    if (response.status >= 500 || response.status === 429) return { outcome: "waiting", reason: t("the server is busy") };
    return { outcome: "refused", answer, status: response.status,
      reason: (answer && answer.detail) || `HTTP ${response.status}` };
  }

  function announce(name, detail) { document.dispatchEvent(new CustomEvent(name, { detail })); }

  /* Keep ``item`` on the phone, then try to send it at once. */
  async function send(item) {
    item = { ...item, client_id: item.client_id || newId(), user, made: Date.now(), state: "waiting" };
    await put(item);
    const got = await attempt(item);
    if (got.outcome === "sent") {
      await remove(item.client_id);
      announce("gridplan:sent", { item, answer: got.answer });
    } else if (got.outcome === "refused") {
      // refused while the user watches: said on the spot, nothing left waiting
      await remove(item.client_id);
    } else {
      await put({ ...item, reason: got.reason });
    }
    await render();
    return { sent: got.outcome === "sent", kept: got.outcome === "waiting", refused: got.outcome === "refused",
      answer: got.answer, status: got.status, reason: got.reason, client_id: item.client_id };
  }

  /* Send what waits, oldest first; stop at the first item that finds no signal. */
  function flush() {
    if (flushing) return flushing;
    flushing = (async () => {
      let sent = 0;
      const refused = [];
      for (const item of await items()) {
        if (item.state !== "waiting") continue;
        const got = await attempt(item);
        if (got.outcome === "waiting") { await put({ ...item, reason: got.reason }); break; }
        if (got.outcome === "sent") {
          await remove(item.client_id);
          sent += 1;
          announce("gridplan:sent", { item, answer: got.answer });
        } else {
          const kept = { ...item, state: "refused", status: got.status, reason: got.reason,
            current: got.answer && got.answer.current ? got.answer.current : null };
          await put(kept);
          refused.push(kept);
        }
      }
      await render();
      // a refusal too: the page shows the case as it is now and why the step was not taken, at
      // once (not the "kept on this phone" of before, until a reload)
      if (sent || refused.length) announce("gridplan:flushed", { sent, refused });
      return sent;
    })().finally(() => { flushing = null; });
    return flushing;
  }

  async function discard(id) { await remove(id); await render(); announce("gridplan:flushed", { sent: 0 }); }

  /* Redo a refused step on the case as it is now (its current version); sent at once. */
  async function redo(id) {
    const item = (await items()).find((i) => i.client_id === id);
    if (!item) return null;
    const again = { ...item, state: "waiting", reason: null, status: null };
    if (item.kind === "step" && item.current) again.body = { ...item.body, version: item.current.version };
    await put(again);
    return flush();
  }

  /* --- what the page says ----------------------------------------------------------------- */

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  /* The loop's actions, named in the page's language (the server's msgids: same catalogue). */
  const ACTIONS = { file: t("File the case"), cancel: t("Cancel the case"), dispatch: t("Dispatch"),
    handle: t("Mark as handled"), close: t("Check and close"), "return": t("Return for rework"),
    evaluate: t("Evaluate"), supervise: t("Chase up"), send_back: t("Send back to the command centre") };

  /* A category's name in the page's language when the page names the categories (the case
     pages), else the name the item was made with (the catalogue's own words). */
  function categoryName(item) {
    const config = document.getElementById("gridplan-config");
    let names = {};
    try { names = config ? JSON.parse(config.textContent).categories || {} : {}; } catch (e) { names = {}; }
    const code = (item.fields || {}).category || "";
    return names[code] || item.category_name || code;
  }

  /* What an item is, in words of the page's language (an item made in Chinese reads in English
     after the switch, and back). */
  function label(item) {
    if (item.kind === "report") {
      return t("Report: {category} · {description}", { category: categoryName(item),
        description: ((item.fields || {}).description || "").slice(0, 40) });
    }
    if (item.kind === "note") {
      return t("The same case {code}: {note}", { code: item.code, note: ((item.body || {}).note || "").slice(0, 40) });
    }
    if (item.kind === "step") {
      const action = (item.body || {}).action;
      return t("{step} · case {code}", { step: ACTIONS[action] || action, code: item.code });
    }
    return item.label || "";
  }

  function explain(item) {
    if (item.state !== "refused") return item.reason ? t("waiting: {reason}", { reason: item.reason }) : t("waiting");
    const c = item.current;
    if (c && item.status === 409) {
      return t("not taken: the case changed meanwhile and is now {status} (version {version}); your step was on version {mine}",
        { status: c.status_label || c.status, version: c.version, mine: item.body.version });
    }
    return t("refused: {reason}", { reason: item.reason });
  }

  function canRedo(item) {
    if (item.state !== "refused" || item.kind !== "step" || !item.current) return false;
    return (item.current.actions || []).some((a) => a.action === item.body.action);
  }

  async function render() {
    const panel = document.getElementById("offline-panel");
    if (!panel) return;
    const mine = user ? await items() : [];
    const waiting = mine.filter((i) => i.state === "waiting").length;
    const offlineNow = !navigator.onLine;
    panel.hidden = !mine.length && !offlineNow;
    panel.classList.toggle("offline", offlineNow);
    const head = document.getElementById("offline-summary");
    head.textContent = [
      offlineNow ? t("Offline: reports and steps are kept on this phone and sent when the signal returns.") : "",
      waiting ? t("{n} waiting to be sent", { n: waiting }) : "",
      mine.length > waiting ? t("{n} not taken: see why below", { n: mine.length - waiting }) : "",
    ].filter(Boolean).join(" · ");
    const list = document.getElementById("offline-items");
    list.replaceChildren(...mine.map((item) => {
      const li = el("li", null, { class: "offline-item " + item.state, "data-client-id": item.client_id, "data-state": item.state });
      li.append(el("div", label(item), { class: "label" }), el("div", explain(item), { class: "muted reason" }));
      const buttons = el("div", null, { class: "action-buttons" });
      if (canRedo(item)) {
        const b = el("button", t("Redo on the current version"), { type: "button", class: "primary", "data-do": "redo" });
        b.addEventListener("click", () => redo(item.client_id));
        buttons.append(b);
      }
      if (item.code) buttons.append(el("a", t("Open"), { class: "big-button", href: `/cases/${encodeURIComponent(item.code)}` }));
      const d = el("button", t("Discard"), { type: "button", "data-do": "discard" });
      d.addEventListener("click", () => { if (confirm(t("Discard this item? It will not be sent."))) discard(item.client_id); });
      buttons.append(d);
      if (item.state === "waiting") {
        const s = el("button", t("Send now"), { type: "button", "data-do": "send" });
        s.addEventListener("click", () => flush());
        buttons.append(s);
      }
      li.append(buttons);
      return li;
    }));
    announce("gridplan:queue", { items: mine });
  }

  /* --- the shared phone ------------------------------------------------------------------- */

  async function forget() {  // the kept pages and list, and this phone's queue
    if (window.caches) for (const name of await caches.keys()) if (!name.startsWith("gridplan-static-")) await caches.delete(name);
    await tx("readwrite", (s) => req(s.clear()));
  }

  async function signOut(event) {
    const form = event.target;
    if (form.dataset.forgotten) return;  // the second, real submit
    event.preventDefault();
    let left = [];
    try { left = await items(); } catch (e) { left = []; }
    if (left.length && !confirm(t("{n} reports or steps have not been sent and will be deleted from this phone. Sign out?", { n: left.length }))) return;
    try { await forget(); } catch (e) { /* the server's Clear-Site-Data empties them too */ }
    form.dataset.forgotten = "1";
    form.submit();
  }

  /* The kept pages are in the language they were made in: another language drops them. */
  async function switchLanguage(event) {
    const form = event.target;
    if (form.dataset.forgotten || !window.caches) return;
    event.preventDefault();
    await caches.delete("gridplan-pages").catch(() => {});
    form.dataset.forgotten = "1";
    form.requestSubmit(event.submitter);
  }

  async function start() {
    const previous = localStorage.getItem("gridplan-user");
    if (previous !== user) {  // another user (or nobody) on this phone: the kept pages are not theirs
      if (window.caches) for (const name of await caches.keys()) if (name === "gridplan-pages" || name === "gridplan-data") await caches.delete(name);
      localStorage.setItem("gridplan-user", user);
    }
    if (!user) return;
    const logout = document.querySelector("form.logout");
    if (logout) logout.addEventListener("submit", signOut);
    const language = document.querySelector("form.locale-switch");
    if (language) language.addEventListener("submit", switchLanguage);
    const reporter = !!document.getElementById("offline-panel");  // a role that reports and acts
    if (reporter && "serviceWorker" in navigator) {
      const first = !navigator.serviceWorker.controller;
      navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => {});
      const grid = location.pathname === "/supervisor";  // the 网格员's grid map is kept too
      if (first && (document.querySelector("main.cases") || grid)) {
        // the first visit went past the service worker: it keeps the case pages now, so that
        // they open without a signal (and without a round trip) from the next time on
        navigator.serviceWorker.ready.then((registration) => {
          const paths = grid ? ["/cases", "/cases/new", "/supervisor"] : ["/cases", "/cases/new"];
          if (/^\/cases\/[^/]+$/.test(location.pathname) && !paths.includes(location.pathname)) paths.push(location.pathname);
          if (registration.active) registration.active.postMessage({ type: "keep", paths });
        }).catch(() => {});
      }
    }
    window.addEventListener("online", () => { render(); flush(); });
    window.addEventListener("offline", () => render());
    setInterval(() => { if (navigator.onLine) flush(); }, 30000);
    await render();
    if (navigator.onLine) flush();
  }

  window.gpQueue = { send, flush, items, discard, redo, render, newId, freshToken, token: () => csrf,
    ready: start().catch(() => {}) };
})();
