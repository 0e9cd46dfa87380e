"""Coverage gaps (覆盖缺口) on the command line: ``coverage [--street CODE | --all] -o report.json``
(the whole gap report; ``--all``: district by district, on a dask cluster or this machine's
cores) and ``site KIND K [--street CODE | --district CODE | --all] [--candidates PATH] -o sites.geojson``
(where to build next; ``--all``: K sites in each district, a task per district)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from geodata.errors import Refused
from geodata.i18n import N_, _, speaks_english
from layers.coverage import gaps as coverage
from layers.coverage import siting
from webmap.commands import command, district_options, every_district, plain
from webmap.extensions import engine
from webmap.i18n import facility_kind_name

METHOD = click.Choice(["auto", "straight", "roads"])
#: a distance measure and a solver as a Chinese summary names them (an English one: by their keys)
WORDS = {"roads": N_("walking along the roads"), "straight": N_("straight-line"),
         "exact": N_("exact solver"), "greedy": N_("greedy solver")}


def worded(key: str, kind: bool = False) -> str:
    """``key`` (a distance measure, a solver or, with ``kind``, a facility kind) as the summary's
    reader reads it: the key itself in English (scripts read it), its name in Chinese."""
    if speaks_english():
        return key
    return facility_kind_name(key) if kind else _(WORDS[key]) if key in WORDS else key


@command("coverage", help=N_(
    "Write the whole gap report (reach, missing kinds, facilities, blind spots, cell problems) as JSON; "
    "print a one-line summary."))
@click.option("--street", help=N_("only this street (9-digit code)"))
@click.option("--method", type=METHOD, default="auto", show_default=True,
              help=N_("distance: along the roads when loaded (auto), straight-line, or roads"))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help=N_("report.json"))
@district_options(N_("the whole database, one task per district (facilities and roads across a district's "
                          "edge counted)"))
def coverage_command(street, method, output: Path, every_district, cluster, workers) -> None:
    if every_district:
        if street:
            raise Refused(_("--all reports every district of the database: leave out --street"))
        report = _report_every_district(method, cluster, workers)
    else:
        report = coverage.report_for(engine(), street, method)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, ensure_ascii=False, indent=1, default=plain), encoding="utf-8")
    worst = min(report["reach"], key=lambda r: r["share"], default=None)
    lowest = _("lowest reach {kind} {radius} m {share}; ", kind=worded(worst["kind"], kind=True),
               radius=f"{worst['radius_m']:g}", share=f"{worst['share']:.1%}") if worst else ""
    click.echo(_("{households} households, method {method}: {lowest}{missing} communities missing a kind, "
                 "{facilities} facilities under standard, {blind} blind-spot units, {findings} cell findings "
                 "→ {output}", households=f"{report['households']:,}", method=worded(report["method"]),
                 lowest=lowest, missing=len(report["missing"]), facilities=len(report["facilities"]),
                 blind=report["blind_spots"]["units"], findings=len(report["cell_problems"]["findings"]),
                 output=output))


def _report_every_district(method, cluster, workers) -> dict:
    """``coverage --all``: the report district by district (:mod:`layers.coverage.districts`);
    districts without units named on stderr, the districts and workers after the summary."""
    from layers.coverage.districts import report_all

    with every_district(_("reporting districts")) as progress:
        made = report_all(engine(), method, cluster=cluster, workers=workers, progress=progress)
    click.echo(_("{districts} districts on {workers} workers in {seconds} s; skipped: {skipped}",
                 districts=len(made.districts), workers=made.workers, seconds=f"{made.seconds:.1f}",
                 skipped=", ".join(made.skipped) or "-"), err=True)
    return made.report


@command("site", help=N_(
    "Choose K sites for facilities of KIND that bring the most uncovered households within reach; write "
    "them as GeoJSON (order, households_added, households_covered_after)."))
@click.argument("kind")
@click.argument("k")
@click.option("--street", help=N_("only this street (9-digit code)"))
@click.option("--district", help=N_("only this district (6-digit code; facilities and roads across its "
                                    "edge counted)"))
@click.option("--radius", type=float, help=N_("reach in metres (default: the kind's in the standards "
                                              "table)"))
@click.option("--candidates", "candidates_path", type=click.Path(path_type=Path),
              help=N_("candidate sites (points file); default: every unit's representative point"))
@click.option("--crs", help=N_("CRS of --candidates when its file does not say"))
@click.option("--method", type=METHOD, default="auto", show_default=True, help=N_("distance measure"))
@click.option("--solver", type=click.Choice(["auto", "exact", "greedy"]), default="auto", show_default=True)
@click.option("--time-limit", type=float, default=60.0, show_default=True,
              help=N_("seconds for the exact solver"))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help=N_("sites.geojson"))
@district_options(N_("K sites in each district of the database, one task per district (each district's "
                          "as --district gives it)"))
def site_command(kind, k, street, district, radius, candidates_path, crs, method, solver, time_limit,
                 output, every_district, cluster, workers) -> None:
    k = siting.check_k(k)
    if street and district:
        raise Refused(_("give a street or a district, not both"))
    if every_district and (street or district):
        raise Refused(_("--all sites in every district of the database: leave out --street and --district"))
    if radius is not None and not (math.isfinite(radius) and radius > 0):
        raise Refused(_("--radius must be above 0"))
    candidates = siting.read_candidates(candidates_path, crs) if candidates_path else None
    if every_district:
        _site_every_district(kind, k, radius, candidates, method, solver, time_limit, output, cluster,
                             workers)
        return
    standards = coverage.load_standards(engine())
    if district:
        from layers.coverage.districts import candidates_of_district, check_district, district_inputs

        check_district(engine(), district)
        if candidates is not None:  # those standing in the district, as `site --all` offers them
            candidates, left = candidates_of_district(engine(), candidates, district)
            if left:
                click.echo(_("{left} of the {total} candidate sites lie outside district {district}: "
                             "left out", left=left, total=len(candidates) + left, district=district),
                           err=True)
        inputs = district_inputs(engine(), district, standards)
    else:
        inputs = coverage.load_inputs(engine(), street, standards)
    run = coverage.compute_reach(inputs, standards, method)
    result, used, radius = siting.site_for(run, kind, k, radius_m=radius, candidates=candidates,
                                           units=inputs.units, method=solver, time_limit=time_limit)
    body = siting.sites_answer(result, used, kind, radius, k, run.method, engine())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(body, ensure_ascii=False, default=plain), encoding="utf-8")
    click.echo(_sites_line(len(body["features"]), body["properties"], output))


def _sites_line(n: int, p: dict, output: Path) -> str:
    """The one-line summary of ``n`` sites whose collection's properties are ``p``."""
    return _("{n} sites for {kind} ({radius} m, {method}): +{added} households, {covered} of "
             "{households} within reach; {bound} (gap {gap}, {solver}) → {output}",
             n=n, kind=worded(p["kind"], kind=True), radius=f"{p['radius_m']:g}",
             method=worded(p["distance"]),
             added=f"{p['households_added']:,}", covered=f"{p['households_covered_after']:,}",
             households=f"{p['households']:,}",
             bound=_("optimal {n}", n=f"{p['bound_households_added']:,}") if p["optimal"]
             else _("bound {n}", n=f"{p['bound_households_added']:,}"),
             gap=f"{p['gap']:.2%}", solver=worded(p["solver"]),
             output=output)


def _site_every_district(kind, k, radius, candidates, method, solver, time_limit, output: Path, cluster,
                         workers) -> None:
    """``site KIND K --all``: K sites in each district, a task per district
    (:func:`layers.coverage.districts.site_all`); every district's sites in one GeoJSON file
    (each feature with its ``district_code``), a summary line per district, districts without
    units named on stderr. Candidate sites given are offered each to the district it stands in
    (one on a boundary to one district): those in no district are counted on stderr, a district
    with none named on stdout. Nothing is written when any district fails."""
    from layers.coverage.districts import site_all

    with every_district(_("siting districts")) as progress:
        made = site_all(engine(), kind, k, radius=radius, method=method, solver=solver, time_limit=time_limit,
                        candidates=candidates, cluster=cluster, workers=workers, progress=progress)
    body = made.collection()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(body, ensure_ascii=False, default=plain), encoding="utf-8")
    for code, answer in sorted(made.answers.items()):
        click.echo(_("district {district}: {summary}", district=code,
                     summary=_sites_line(len(answer["features"]), answer["properties"], output)))
    for code in made.without_candidates:
        click.echo(_("district {district}: no candidate site stands in it, no sites proposed", district=code))
    if made.left_out:
        click.echo(_("{left} of the {total} candidate sites lie in no district of the database: left out",
                     left=made.left_out, total=made.candidates), err=True)
    click.echo(_("{districts} districts on {workers} workers in {seconds} s; skipped: {skipped}",
                 districts=len(made.answers), workers=made.workers, seconds=f"{made.seconds:.1f}",
                 skipped=", ".join(made.skipped) or "-"), err=True)


COMMANDS = (coverage_command, site_command)
