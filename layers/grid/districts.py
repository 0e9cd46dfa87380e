"""Grid cells of a province or a country, district by district, on the runners of ``plan --all``.

A district's task (:func:`grid_district`) generates and stores the cells of its communities
(:func:`layers.grid.cells.generate_grid` with ``district``: every statement names it; one
transaction replacing its communities' cells, so a task run again after its worker died leaves
the same cells). Cells nest in communities and every community draws from its own generator, so
the cells are those of the generation in one piece, cell for cell.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from sqlalchemy import Engine

from geodata.errors import NotFound, Refused
from geodata.i18n import _
from layers.grid.cells import CellRules, generate_grid
from layers.plans.scale import TaskOutcome, peak_memory_mb, process_engine, run_district_tasks

#: the figures of a district's answer that add up over districts
ADDITIVE = ("cells", "communities", "in_range", "kept", "gaps", "overlaps", "outside_community",
            "households_in_no_cell")


@dataclass(frozen=True)
class GridTask:
    """What a worker needs to generate one district's cells (plain values)."""

    url: str
    district: str
    rules: dict
    key: str = ""


@dataclass
class GridOutcome(TaskOutcome):
    """A district's answer (:func:`generate_grid`'s; empty: no units, skipped) and its cost."""

    answer: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def skipped(self) -> bool:
        return not self.answer


def grid_district(task: GridTask) -> GridOutcome:
    """Generate and store the cells of one district (skipped when it has no units)."""
    engine = process_engine(task.url)
    out = GridOutcome(task.district, pid=os.getpid())
    started = time.perf_counter()
    try:
        out.answer = generate_grid(engine, CellRules(**task.rules), district=task.district)
    except NotFound:  # no units in the district
        out.answer = {}
    out.seconds = time.perf_counter() - started
    out.peak_mb = peak_memory_mb()
    return out


@dataclass
class ProvinceGrid:
    """Cells generated district by district: the combined answer, the districts done and skipped."""

    answer: dict
    districts: list[str]
    skipped: list[str]
    outcomes: list[GridOutcome]
    workers: int
    seconds: float

    def summary(self) -> dict:
        return {**self.answer, "districts": len(self.districts), "skipped": self.skipped,
                "workers": self.workers, "seconds": round(self.seconds, 2)}


def combine(outcomes: list[GridOutcome], rules: CellRules) -> dict:
    """The answer of the generation in one piece from the districts' (figures summed; the share
    of cells within the rules from their counts; problems district after district)."""
    done = [o.answer for o in sorted(outcomes, key=lambda o: o.district) if not o.skipped]
    sums = {k: sum(int(a.get(k, 0)) for a in done) for k in ADDITIVE}
    share = sums["in_range"] / sums["cells"] if sums["cells"] else 1.0
    return {"cells": sums["cells"], "communities": sums["communities"], "in_range_share": round(share, 4),
            "in_range": sums["in_range"], "kept": sums["kept"], "gaps": sums["gaps"],
            "overlaps": sums["overlaps"], "outside_community": sums["outside_community"],
            "households_in_no_cell": sums["households_in_no_cell"],
            "problems": [p for a in done for p in a.get("problems", [])][:200],
            "rules": {"minimum": rules.minimum, "maximum": rules.maximum, "area_m2": rules.area_m2}}


def grid_all(engine: Engine, rules: CellRules, *, runner=None, cluster: str | None = None,
             workers: int | None = None,
             progress: Callable[[int, int, GridOutcome], None] | None = None) -> ProvinceGrid:
    """Generate the cells of every district, a task per district on ``runner`` (default
    :func:`layers.plans.scale.runner_for`: the scheduler is reached before anything is written);
    a district without units is skipped and named."""
    generate_grid_check(rules)
    started = time.perf_counter()
    made = run_district_tasks(engine, "grid", lambda url, d, key: GridTask(url, d, asdict(rules), key),
                              grid_district, runner=runner, cluster=cluster, workers=workers,
                              progress=progress)
    return ProvinceGrid(combine(made.outcomes, rules), made.done, made.skipped, made.outcomes, made.workers,
                        time.perf_counter() - started)


def generate_grid_check(rules: CellRules) -> None:
    """Refuse rules no cell can meet before any worker is asked (as :func:`generate_grid` does)."""
    if rules.minimum > rules.maximum or rules.minimum <= 0:
        raise Refused(_("household range {minimum}–{maximum} is not 0 < minimum ≤ maximum",
                        minimum=rules.minimum, maximum=rules.maximum))


__all__ = ["GridOutcome", "GridTask", "ProvinceGrid", "combine", "grid_all", "grid_district"]
