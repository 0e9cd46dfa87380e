/* gridplan's service worker (served at /sw.js, scope /): the 网格员's case pages readable
   without a signal. The server writes the build's hash into BUILD (a hash of the static files):
   a new deploy is a new service worker whose cache has a new name, and the old caches go when it
   takes over.

   What it keeps, and nothing else:
   - the static files (scripts, styles, icons) in "gridplan-static-<build>", fetched at install;
   - the case pages the signed-in user opened (/cases, /cases/new, /cases/<code>: frames, their
     data comes from the API), in "gridplan-pages": the network's copy when it comes quickly,
     the kept one when the signal is bad or gone;
   - the answers of the case list (GET /api/incidents?…: the user's cases and cells), in
     "gridplan-data": served when the network fails;
   - the 网格员's grid map (/supervisor) the same way: its frame, and its grid cells and who
     holds them (GET /api/collections/grid_cells/items, /api/grid/assignments) in "gridplan-data"
     (the page says when its kept data is from). No other API answer is ever kept; a case's
     own page offline is made from the kept list.
   Signing out empties the last two (the page does it, and the server's Clear-Site-Data), and so
   does another user signing in on the same phone. Requests other than GET never pass through. */
"use strict";
const BUILD = "__BUILD__";
const ASSETS = __ASSETS__;
const STATIC = `gridplan-static-${BUILD}`;
const PAGES = "gridplan-pages";
const DATA = "gridplan-data";

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(STATIC).then((cache) => cache.addAll(ASSETS)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  // another build's static files go; the pages go too (they name the old build's files)
  event.waitUntil(caches.keys().then((names) => Promise.all(names
    .filter((name) => (name.startsWith("gridplan-static-") && name !== STATIC) || name === PAGES)
    .map((name) => caches.delete(name)))).then(() => self.clients.claim()));
});

const CASE_PAGE = /^\/cases(\/new|\/[^/]+)?$/;
// the grid map and its cells: kept like the case pages and the case list
const GRID_PAGE = "/supervisor";
const GRID_DATA = /^\/api\/(collections\/grid_cells\/items|grid\/assignments)$/;
const keptPage = (path) => CASE_PAGE.test(path) || path === GRID_PAGE;

self.addEventListener("message", (event) => {
  if (event.data && event.data.type === "forget") {  // signing out, or another user
    event.waitUntil(Promise.all([caches.delete(PAGES), caches.delete(DATA)]));
  }
  if (event.data && event.data.type === "keep") {  // the first visit, before this worker was in control
    const paths = (event.data.paths || []).filter((p) => typeof p === "string" && keptPage(p));
    event.waitUntil(Promise.all(paths.map((p) => {
      const url = new URL(p, self.location.origin);
      return fetchPage(new Request(url, { credentials: "same-origin" }), url).catch(() => {});
    })));
  }
});
const CASE_API = /^\/api\/incidents\/([^/]+)$/;
// the report form's look-ups and the city-wide map by view, never kept (they answer for a place or a
// view, not a case)
const NOT_A_CASE = new Set(["duplicates", "place", "basemap", "map"]);

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname.startsWith("/static/")) {
    event.respondWith(fromCacheFirst(request));
  } else if (request.mode === "navigate" && keptPage(url.pathname)) {
    event.respondWith(page(request, url));
  } else if (url.pathname === "/api/incidents" || GRID_DATA.test(url.pathname)) {
    event.respondWith(caseList(request));
  } else if (CASE_API.test(url.pathname) && !NOT_A_CASE.has(CASE_API.exec(url.pathname)[1])) {
    event.respondWith(oneCase(request, decodeURIComponent(CASE_API.exec(url.pathname)[1])));
  }
});

async function fromCacheFirst(request) {
  const hit = await caches.match(request, { cacheName: STATIC, ignoreSearch: true });
  return hit || fetch(request);
}

/* A fresh answer is kept only when it is the signed-in user's own (not a redirect to the sign-in
   page, not an error). */
function keepable(response) {
  return response.ok && !response.redirected && response.type === "basic";
}

/* A case page is only a frame (its data comes from the API), but the frame carries the top
   bar's counts and the user's cells: the network's copy is shown when it comes within WAIT (a
   good signal), the kept one when it does not (a bad signal, or none), the network's copy then
   kept for next time; none kept, the network's. */
const WAIT = 1200;

async function fetchPage(request, url) {
  const response = await fetch(request);
  if (keepable(response)) {
    const headers = new Headers(response.headers);
    headers.set("X-Gridplan-Kept-At", String(Date.now()));
    const body = await response.clone().blob();
    await (await caches.open(PAGES)).put(url.pathname, new Response(body, { status: response.status, headers }));
  }
  return response;
}

async function page(request, url) {
  const cache = await caches.open(PAGES);
  const kept = url.search ? null : await cache.match(url.pathname);
  if (kept) {
    const fresh = fetchPage(request, url);
    fresh.catch(() => {});  // no signal: the kept copy stands
    const late = new Promise((resolve) => setTimeout(() => resolve(null), WAIT));
    const first = await Promise.race([fresh.catch(() => null), late]);
    return first && first.ok ? first : kept;
  }
  try {
    return await fetchPage(request, url);
  } catch (err) {
    const hit = await cache.match(url.pathname) || await cache.match("/cases");
    if (hit) return hit;
    return new Response("<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
      + "<p>离线：此页尚未在本机保存。Offline: this page is not kept on this phone.</p><p><a href=/cases>我的案件 My cases</a></p>",
      { status: 503, headers: { "Content-Type": "text/html; charset=utf-8" } });
  }
}

function offline(response) {
  const headers = new Headers(response.headers);
  headers.set("X-Gridplan-Offline", "1");
  return response.blob().then((body) => new Response(body, { status: response.status, headers }));
}

async function caseList(request) {
  try {
    const response = await fetch(request);
    if (keepable(response)) (await caches.open(DATA)).put(request, response.clone());
    return response;
  } catch (err) {
    const hit = await caches.match(request, { cacheName: DATA });
    if (hit) return offline(hit);
    throw err;
  }
}

/* A case's own answer is never kept: offline it is the case as the kept list shows it (no
   history, no photos). */
async function oneCase(request, code) {
  try {
    return await fetch(request);
  } catch (err) {
    const cache = await caches.open(DATA);
    for (const key of await cache.keys()) {
      const list = await (await cache.match(key)).json();
      const found = (list.incidents || []).find((c) => c.code === code);
      if (found) {
        return new Response(JSON.stringify({ ...found, steps: [], photos: [], offline: true }),
          { headers: { "Content-Type": "application/json", "X-Gridplan-Offline": "1" } });
      }
    }
    throw err;
  }
}
