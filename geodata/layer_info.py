"""What the layers page shows about each layer — how many features, where they lie, the last
change and who made it (from the audit log) — and the codes and names a page offers for
choosing a street or a community, read without any geometry."""

from __future__ import annotations

from sqlalchemy import Engine, select

from geodata.audit import last_changes
from geodata.catalog import LAYERS, get_layer
from geodata.store import existing_codes, layer_counts, layer_extent


def layer_overview(engine: Engine) -> list[dict]:
    """One entry per layer of the catalogue: ``name label geometry count extent last_change``."""
    counts = layer_counts(engine)
    changes = last_changes(engine, LAYERS)
    return [{"name": name, "label": spec.label, "geometry": spec.geometry, "count": counts.get(name, 0),
             "extent": layer_extent(engine, name) if counts.get(name) else None,
             "last_change": changes.get(name),
             "fields": [{"name": f.name, "label": f.label, "dtype": f.dtype, "required": f.required}
                        for f in spec.fields]}
            for name, spec in LAYERS.items()]


def code_names(engine: Engine, layer: str, limit: int = 10_000) -> list[dict]:
    """``code`` and ``name`` of the features of ``layer`` (streets, communities), by code."""
    table = get_layer(layer).table
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.code, table.c.name).order_by(table.c.code).limit(limit)).all()
    return [{"code": r.code, "name": r.name} for r in rows]


def code_exists(engine: Engine, layer: str, code: str) -> bool:
    """Whether ``layer`` holds a feature with this code."""
    return count_stored(engine, layer, [code]) > 0


def count_stored(engine: Engine, layer: str, codes: list[str]) -> int:
    """How many of ``codes`` ``layer`` holds already."""
    with engine.connect() as conn:
        return len(existing_codes(conn, layer, codes))


__all__ = ["code_exists", "code_names", "count_stored", "layer_overview"]
