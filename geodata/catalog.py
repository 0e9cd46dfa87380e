"""The catalogue of layers that can be imported and exported: their fields, types and codes.

Each :class:`LayerSpec` says what a file of that layer must carry, how codes are checked
(the hierarchy of docs/domain.md §1: district 6 digits → street 9 → community 12 → grid cell 15),
which geometry it takes, and the ASCII short name (at most 10 bytes) each field gets in a
shapefile, with the Chinese label for the alias table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from geodata import models

#: Digits of each level's code, by the name of the field that holds it.
CODE_DIGITS = {
    "district_code": 6,
    "street_code": 9,
    "community_code": 12,
    "grid_code": 15,
}


@dataclass(frozen=True)
class Field:
    """One attribute of a layer.

    ``dtype`` is one of ``str int float bool date datetime``; ``short`` is the shapefile name
    (ASCII, at most 10 bytes); ``label`` the Chinese name shown in the alias table.
    """

    name: str
    dtype: str
    short: str
    label: str
    required: bool = False
    digits: int | None = None  # a code of exactly this many digits

    def __post_init__(self) -> None:
        assert self.short.isascii() and len(self.short) <= 10, self.short


@dataclass(frozen=True)
class LayerSpec:
    """An importable, exportable layer."""

    name: str
    label: str
    model: type
    geometry: str  # polygon | point | line | any
    fields: tuple[Field, ...]
    code_digits: int | None = None  # the layer's own code, when it is an official code
    parent_field: str | None = None  # the field whose code must prefix the layer's code
    filters: dict = field(default_factory=dict)

    @property
    def table(self):
        return self.model.__table__

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


def _f(name, dtype, short, label, required=False):
    return Field(name, dtype, short, label, required, CODE_DIGITS.get(name))


CODE = _f("code", "str", "code", "代码", True)
NAME = _f("name", "str", "name", "名称", True)
DISTRICT = _f("district_code", "str", "dist_code", "区县代码")
STREET = _f("street_code", "str", "strt_code", "街道代码", True)
COMMUNITY = _f("community_code", "str", "comm_code", "社区代码")
#: a provisional code (临时代码), given to a street or community imported by name without one
PROVISIONAL = _f("provisional", "bool", "provis", "临时代码")
#: ``approximate``: geocoded to a community or street, not an address (定位精度)
PRECISION = _f("location_precision", "str", "loc_prec", "定位精度")
#: values :data:`PRECISION` takes
LOCATION_PRECISIONS = ("exact", "approximate")

LAYERS: dict[str, LayerSpec] = {
    spec.name: spec
    for spec in [
        LayerSpec("districts", "区县", models.District, "polygon", (CODE, NAME), 6),
        LayerSpec("streets", "街道", models.Street, "polygon", (CODE, NAME, DISTRICT, PROVISIONAL), 9,
                  "district_code"),
        LayerSpec("communities", "社区", models.Community, "polygon",
                  (CODE, NAME, STREET, DISTRICT, _f("valid_from", "date", "valid_from", "生效日期"),
                   PROVISIONAL),
                  12, "street_code"),
        LayerSpec("units", "规划单元", models.Unit, "polygon", (
            CODE, _f("households", "int", "households", "户数", True),
            _f("population", "int", "population", "人口"), STREET, COMMUNITY, DISTRICT,
            _f("built_year", "int", "built_year", "建成年份"),
            _f("land_use", "str", "land_use", "用地性质"),
            _f("households_source", "str", "hh_source", "户数来源"),
        )),
        LayerSpec("buildings", "楼栋", models.Building, "any", (
            CODE, _f("households", "int", "households", "户数", True),
            _f("population", "int", "population", "人口"),
            _f("unit_code", "str", "unit_code", "单元代码"), DISTRICT,
        )),
        LayerSpec("facilities", "设施", models.Facility, "point", (
            CODE, _f("kind", "str", "kind", "设施类型", True), NAME,
            _f("floor_area_m2", "float", "floor_area", "建筑面积"), COMMUNITY, DISTRICT, PRECISION,
        )),
        LayerSpec("grid_cells", "网格", models.GridCell, "polygon", (
            CODE, Field("community_code", "str", "comm_code", "社区代码", True, 12), DISTRICT,
            _f("supervisor", "str", "supervisor", "网格员"),
        ), 15, "community_code"),
        LayerSpec("incidents", "事件", models.Incident, "point", (
            CODE, _f("category", "str", "category", "类别", True),
            _f("description", "str", "descr", "描述"), _f("status", "str", "status", "状态", True),
            _f("reported_at", "datetime", "reported", "上报时间", True),
            _f("filed_at", "datetime", "filed", "立案时间"),
            _f("dispatched_at", "datetime", "dispatched", "派遣时间"),
            _f("handled_at", "datetime", "handled", "处置时间"),
            _f("feedback_at", "datetime", "feedback", "反馈时间"),
            _f("closed_at", "datetime", "closed", "结案时间"),
            _f("due_at", "datetime", "due", "时限"), _f("grid_code", "str", "grid_code", "网格代码"),
            DISTRICT, PRECISION, COMMUNITY,
        )),
        LayerSpec("roads", "道路", models.Road, "line", (
            CODE, _f("name", "str", "name", "名称"), _f("road_class", "str", "road_class", "等级", True),
            DISTRICT,
        )),
    ]
}

_DIGITS = {n: re.compile(rf"[0-9]{{{n}}}") for n in (6, 9, 12, 15)}


def is_code(value: str, digits: int) -> bool:
    """Whether ``value`` is an official code of exactly ``digits`` digits."""
    return bool(_DIGITS[digits].fullmatch(value))  # ASCII digits only, nothing after them


def get_layer(name: str) -> LayerSpec:
    """The spec of layer ``name``; a clear error naming the known layers otherwise."""
    try:
        return LAYERS[name]
    except KeyError:
        raise ValueError(f"unknown layer {name!r}; layers are: {', '.join(LAYERS)}") from None


def clean_text(value) -> str | None:
    """A text value as stored: None when empty; an integral float (a code stored as a number in a
    .dbf) loses its '.0'."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    value = str(value).strip()
    return value or None


def as_text(series: pd.Series) -> pd.Series:
    """:func:`clean_text` over a column."""
    return pd.Series([clean_text(v) for v in series.to_numpy(dtype=object)], index=series.index, dtype=object)


def clean_code(value) -> str | None:
    """A code as stored: like :func:`clean_text`, but only the spaces a .dbf pads its fields with
    are taken off, so that a code carrying a line break, a tab or a full-width space is seen (and
    refused as not a code) rather than quietly trimmed into one."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    value = str(value).strip(" ")
    return value or None


def as_codes(series: pd.Series) -> pd.Series:
    """:func:`clean_code` over a column."""
    return pd.Series([clean_code(v) for v in series.to_numpy(dtype=object)], index=series.index, dtype=object)


def is_code_field(spec: LayerSpec, name: str) -> bool:
    """Whether field ``name`` of ``spec`` holds an official code (checked digit by digit)."""
    return bool(spec.code_digits if name == "code" else spec.field(name).digits)


def column_length(spec: LayerSpec, name: str) -> int | None:
    """The most characters field ``name`` may hold in the database (None: no limit). PostgreSQL
    refuses a longer value outright; SQLite would store it, so the import checks it for both."""
    return getattr(spec.table.c[name].type, "length", None)
