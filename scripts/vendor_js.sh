#!/usr/bin/env bash
# Re-fetch the JavaScript and CSS the map pages use into webmap/static/vendor/, from pinned npm
# packages (npm pack: no install scripts run). The files are committed, so the app works on an
# intranet with no internet; run this only to change a version.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=webmap/static/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
packages=(leaflet@1.9.4 leaflet.markercluster@1.5.3 leaflet.heat@0.2.0 chart.js@4.4.7)
(cd "$tmp" && for p in "${packages[@]}"; do npm pack --silent "$p" >/dev/null; done && for t in *.tgz; do mkdir "${t%.tgz}" && tar -xzf "$t" -C "${t%.tgz}"; done)
rm -rf "$dest" && mkdir -p "$dest/leaflet/images" "$dest/markercluster" "$dest/heat" "$dest/chartjs"
cp "$tmp"/leaflet-1.9.4/package/dist/leaflet.js "$tmp"/leaflet-1.9.4/package/dist/leaflet.css "$dest/leaflet/"
cp "$tmp"/leaflet-1.9.4/package/dist/images/* "$dest/leaflet/images/"
cp "$tmp"/leaflet-1.9.4/package/LICENSE "$dest/leaflet/LICENSE"
cp "$tmp"/leaflet.markercluster-1.5.3/package/dist/leaflet.markercluster.js \
   "$tmp"/leaflet.markercluster-1.5.3/package/dist/MarkerCluster.css \
   "$tmp"/leaflet.markercluster-1.5.3/package/dist/MarkerCluster.Default.css "$dest/markercluster/"
cp "$tmp"/leaflet.markercluster-1.5.3/package/MIT-LICENCE.txt "$dest/markercluster/LICENSE"
cp "$tmp"/leaflet.heat-0.2.0/package/dist/leaflet-heat.js "$dest/heat/"
cp "$tmp"/leaflet.heat-0.2.0/package/LICENSE "$dest/heat/LICENSE" 2>/dev/null || true
cp "$tmp"/chart.js-4.4.7/package/dist/chart.umd.js "$dest/chartjs/"
cp "$tmp"/chart.js-4.4.7/package/LICENSE.md "$dest/chartjs/LICENSE.md"
ls -R "$dest"
