"""Export of grid cells (with the supervisors who hold them) and of incidents with their
history, as shapefile zip, GeoPackage, GeoJSON or CSV, through the same writer as every layer
(:func:`geodata.exporter.write_frame`). A GeoPackage carries the steps as a second table; the
other formats carry each case's history as one text field and, beside a shapefile, a CSV of
the steps in the same zip."""

from __future__ import annotations

import zipfile
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import shapely
from sqlalchemy import Engine

from geodata import incident_rows
from geodata.catalog import Field, get_layer
from geodata.exporter import FORMATS, write_frame
from geodata.models import SRID
from geodata.spreadsheet import frame_cells
from geodata.store import read_layer

SUFFIX = {"shp": ".zip", "gpkg": ".gpkg", "geojson": ".geojson", "csv": ".csv"}
INCIDENT_FIELDS = [
    Field("code", "str", "code", "案件编号"),
    Field("category", "str", "category", "类别"),
    Field("description", "str", "descr", "描述"),
    Field("status", "str", "status", "状态"),
    Field("reported_at", "datetime", "reported", "上报时间"),
    Field("filed_at", "datetime", "filed", "立案时间"),
    Field("dispatched_at", "datetime", "dispatched", "派遣时间"),
    Field("handled_at", "datetime", "handled", "处理时间"),
    Field("closed_at", "datetime", "closed", "结案时间"),
    Field("evaluated_at", "datetime", "evaluated", "评价时间"),
    Field("due_at", "datetime", "due", "时限"),
    Field("grid_code", "str", "grid_code", "网格代码"),
    Field("community_code", "str", "comm_code", "社区代码"),
    Field("street_code", "str", "strt_code", "街道代码"),
    Field("district_code", "str", "dist_code", "区县代码"),
    Field("location_precision", "str", "loc_prec", "定位精度"),
    Field("version", "int", "version", "版本"),
    Field("reporter", "str", "reporter", "上报人"),
    Field("rework_count", "int", "rework", "返工次数"),
    Field("evaluation", "str", "evaluation", "评价"),
    Field("department_code", "str", "dept_code", "处置部门"),
    Field("supervise_count", "int", "supervise", "督办次数"),
    Field("supervise_level", "str", "sup_level", "督办等级"),
    Field("history", "str", "history", "处置过程"),
]
STEP_COLUMNS = ["incident_code", "step", "at", "actor", "note"]


def _incidents(engine: Engine, prefix: str | None) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    cases = incident_rows.list_incidents(engine, prefix=prefix)
    steps = pd.DataFrame(
        incident_rows.steps_for(engine, [c["id"] for c in cases]),
        columns=["incident_id", "step", "at", "actor", "note"],
    )
    codes = {c["id"]: c["code"] for c in cases}
    steps.insert(0, "incident_code", steps.pop("incident_id").map(codes))
    text = (
        pd.to_datetime(steps["at"]).dt.strftime("%Y-%m-%d %H:%M")
        + " "
        + steps["step"]
        + steps["actor"].fillna("").map(lambda a: f" {a}" if a else "")
    )
    history = text.groupby(steps["incident_code"]).agg("; ".join) if len(steps) else pd.Series(dtype=object)
    frame = pd.DataFrame(cases, columns=[*incident_rows.FIELDS, "lon", "lat"])
    frame["history"] = frame["code"].map(history)
    geoms = shapely.points(frame["lon"].astype(float), frame["lat"].astype(float)) if len(frame) else []
    gdf = gpd.GeoDataFrame(
        frame.drop(columns=["id", "lon", "lat"]), geometry=gpd.GeoSeries(geoms, crs=SRID), crs=SRID
    )
    return gdf, steps


def export(engine: Engine, layer: str, fmt: str, folder: Path, *, prefix: str | None = None) -> Path:
    """Write ``layer`` (``grid_cells`` or ``incidents``) under ``prefix`` into ``folder``; the path."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    out = Path(folder) / f"{layer}{SUFFIX[fmt]}"
    if layer == "grid_cells":
        cells = read_layer(engine, "grid_cells", prefix={"code": prefix} if prefix else None)
        held = pd.DataFrame(
            incident_rows.assignments(engine, prefix=prefix),
            columns=["user_name", "cell_code", "assigned_at", "assigned_by"],
        )
        names = held.groupby("cell_code")["user_name"].agg(",".join)
        cells["supervisors"] = cells["code"].map(names)
        fields = [*get_layer("grid_cells").fields, Field("supervisors", "str", "accounts", "网格员账号")]
        write_frame(cells, fields, layer, fmt, out)
        return out
    gdf, steps = _incidents(engine, prefix)
    write_frame(gdf, INCIDENT_FIELDS, layer, fmt, out)
    steps_text = steps.assign(at=pd.to_datetime(steps["at"]).dt.strftime("%Y-%m-%d %H:%M:%S"))
    if fmt == "gpkg":
        pyogrio.write_dataframe(steps_text, out, layer="incident_steps", driver="GPKG", append=False)
    elif fmt == "shp":
        with zipfile.ZipFile(out, "a", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("incident_steps.csv", frame_cells(steps_text).to_csv(index=False).encode("utf-8-sig"))
    return out
