"""A layer written to a file for another department (导出): the shapefile, GeoPackage, GeoJSON or
CSV that ArcGIS and QGIS open, and its record in the audit log — who took which part of which
layer, in what format — made the same way from the page and from the command line."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from geodata import audit
from geodata.exporter import ExportReport, export_layer


def export_recorded(engine: Engine, actor: str, layer: str, fmt: str, out: Path, *,
                    encoding: str = "utf-8", crs: str | None = None, street: str | None = None,
                    community: str | None = None) -> ExportReport:
    """Write ``layer`` (or one street's or community's part of it) to ``out`` as ``fmt`` and record
    the export under ``actor``; what :func:`geodata.exporter.export_layer` reports. A refused or
    failed export (:class:`geodata.exporter.ExportError`, ``ValueError``) records nothing."""
    report = export_layer(engine, layer, fmt, out, encoding=encoding, crs=crs, street=street,
                          community=community)
    audit.log(engine, actor, "export", layer=layer, object_code=community or street,
              detail={"format": fmt, "encoding": encoding, "crs": crs, "street": street,
                      "community": community, "features": report.features})
    return report
