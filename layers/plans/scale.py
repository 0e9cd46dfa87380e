"""Plans of a province or a country: one task per district, on as many workers as there are.

A district (≈ 14 streets) is the grain: a street's work (5–60 ms) is too small beside a task's
cost on a scheduler (2–5 ms), a district's is not. Each task (:func:`plan_district`) reads its
own district from the database (every statement names ``district_code``), plans its streets in a
loop with the serial engine (:func:`layers.plans.engine.make_plan`), and writes its part of the
plan in one transaction that replaces that district's rows (:func:`geodata.plan_parts.write_district`):
a task run again after its worker died leaves the same rows. Because every street draws from its
own generator (seeded from the plan's seed and the street's code) and starts from its own data,
the plan is the same, row for row, whether it is made serially, on one worker or on many.

Where the tasks run (:func:`runner_for`):

- ``cluster`` (or ``GRIDPLAN_DASK_SCHEDULER``) — a dask.distributed scheduler's address: the
  tasks go to its workers, which need this code and a database URL they can reach; a worker that
  dies has its task run again elsewhere by the scheduler;
- neither — dask's ``LocalCluster`` on the machine's cores when dask.distributed is installed,
  else the standard library's process pool (a worker that dies breaks the pool: a new pool runs
  the districts not yet done, up to :data:`ATTEMPTS` times);
- one district, or ``workers=1`` — in this process, the serial engine itself.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field

import pandas as pd
from sqlalchemy import Engine

from geodata import plan_parts, plan_rows
from geodata.db import get_engine
from geodata.errors import NotFound, Refused
from geodata.i18n import _
from geodata.revisions import current_revision
from geodata.store import community_codes_of_district, known_districts, unit_district_codes
from layers.plans.engine import Rules, make_plan
from layers.plans.figures import combine, part_figures
from layers.plans.files import units_from_database
from layers.plans.memory import plan_rules
from layers.plans.partition import UnitGraph

#: how many times the districts of a broken process pool are run again before the plan fails
ATTEMPTS = 3
#: environment variable naming the dask scheduler (``tcp://host:8786``) when ``--cluster`` does not
SCHEDULER_ENV = "GRIDPLAN_DASK_SCHEDULER"
#: how long to try reaching the scheduler before the plan is refused (seconds; environment
#: ``GRIDPLAN_DASK_CONNECT_TIMEOUT``)
CONNECT_TIMEOUT_S = 10


class ClusterUnavailable(Refused):
    """The dask scheduler cannot be reached, or dask.distributed is not installed."""


class DistrictFailed(RuntimeError):
    """A district's task failed (not its worker: the task itself): the plan is discarded."""


@dataclass(frozen=True)
class DistrictTask:
    """What a worker needs to plan one district: where the database is, which plan and district,
    and the plan's rules (plain values: the task crosses processes and machines)."""

    url: str
    plan_id: int
    district: str
    rules: dict


@dataclass
class TaskOutcome:
    """What every district task (a plan's, the grid's, the coverage report's, siting's) tells
    beside its answer: its district, the units it found there (none: the district is skipped),
    and the process that ran it with that process's peak memory (MB)."""

    district: str
    units: int = 0
    pid: int = 0
    peak_mb: float = 0.0

    @property
    def skipped(self) -> bool:
        return self.units == 0


@dataclass
class DistrictOutcome(TaskOutcome):
    """What a district's task of a plan did: its units and streets (none: skipped), its
    communities' figures for the plan's scores, and how long each part took."""

    streets: list[str] = field(default_factory=list)
    households: list[int] = field(default_factory=list)  # per community
    polsby_popper: list[float] = field(default_factory=list)  # per community
    sums: dict = field(default_factory=dict)  # additive scores
    infeasible: list[dict] = field(default_factory=list)
    read_s: float = 0.0
    plan_s: float = 0.0
    write_s: float = 0.0
    cpu_s: float = 0.0  # the task's own processor time (reading, planning, writing)

    @property
    def seconds(self) -> float:
        return self.read_s + self.plan_s + self.write_s


#: the process that last dropped each engine's inherited connections: this process's own
#: bookkeeping (a fork changes it), not a mirror of anything stored
_engine_pid: dict[str, int] = {}


def process_engine(url: str) -> Engine:
    """This process's engine for ``url``; a forked worker drops the connections it inherited.
    The first use in a process drops them too: the engine may have been made (and connected) by
    the process this one was forked from before that process ever called here."""
    engine = get_engine(url)
    if _engine_pid.get(url) != os.getpid():
        engine.dispose(close=False)
        _engine_pid[url] = os.getpid()
    return engine


def plan_district(task: DistrictTask) -> DistrictOutcome:
    """Plan every street of one district and write its part of the plan (one transaction,
    replacing that district's rows). A district without units is skipped (nothing written)."""
    engine = process_engine(task.url)
    out = DistrictOutcome(task.district, pid=os.getpid())
    cpu = time.process_time()
    started = time.perf_counter()
    units, adjacency = units_from_database(engine, district=task.district)
    taken = community_codes_of_district(engine, task.district)
    out.read_s = time.perf_counter() - started
    if len(units):
        started = time.perf_counter()
        graph = UnitGraph.from_units(units, adjacency)
        result = make_plan(graph, Rules(**task.rules), retired=taken)
        figures = part_figures(result)
        out.units, out.streets = len(graph), sorted(set(graph.street.tolist()))
        out.households, out.polsby_popper = figures["households"], figures["polsby_popper"]
        out.sums, out.infeasible = figures["sums"], figures["infeasible"]
        out.plan_s = time.perf_counter() - started
        started = time.perf_counter()
        plan_parts.write_district(engine, task.plan_id, task.district, result.assignment, figures=figures)
        out.write_s = time.perf_counter() - started
    out.peak_mb = peak_memory_mb()
    out.cpu_s = time.process_time() - cpu
    return out


def peak_memory_mb() -> float:
    """The largest resident set this process has had (MB): ``VmHWM`` of its memory map, which a
    process started by exec begins afresh (``ru_maxrss`` keeps the peak of the process that
    started it, e.g. a dask nanny's parent)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# --- where the tasks run ---------------------------------------------------------------------
# ``run(tasks, work)`` calls ``work`` (default :func:`plan_district`) on each task: the same runners
# carry the coverage report (:mod:`layers.coverage.districts`) and the grid
# (:mod:`layers.grid.districts`) district by district; a task names its dask key (``task.key``)


class SerialRunner:
    """Every district in this process, one after the other (the serial engine)."""

    workers = 1

    def run(self, tasks: list, work: Callable | None = None) -> Iterator:
        work = work or plan_district
        for task in tasks:
            yield work(task)

    def close(self) -> None:
        pass


class PoolRunner:
    """The districts on a pool of ``workers`` processes of this machine (the standard library's),
    for when dask.distributed is not installed. A worker that dies breaks the pool: a new pool
    runs the districts not yet done (their half-written transactions were rolled back when their
    connections died; a finished district is not run again)."""

    def __init__(self, workers: int, attempts: int = ATTEMPTS) -> None:
        self.workers, self.attempts = workers, attempts
        self.restarts = 0

    def run(self, tasks: list, work: Callable | None = None) -> Iterator:
        work = work or plan_district
        pending = {task.district: task for task in tasks}
        while pending:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(self.workers, mp_context=context) as pool:
                futures = {pool.submit(work, task): d for d, task in pending.items()}
                broken = False
                while futures and not broken:
                    done, _running = wait(futures, return_when=FIRST_COMPLETED)
                    for future in done:
                        district = futures.pop(future)
                        try:
                            outcome = future.result()
                        except BrokenProcessPool:
                            broken = True
                            continue
                        pending.pop(district)
                        yield outcome
            if broken:
                self.restarts += 1
                if self.restarts >= self.attempts:
                    raise DistrictFailed(_("the workers died {n} times while planning districts {districts}",
                                           n=self.restarts, districts=", ".join(sorted(pending))))

    def close(self) -> None:
        pass


class DaskRunner:
    """The districts as tasks of a dask.distributed ``client`` (a remote scheduler's or a
    ``LocalCluster``'s); outcomes come back as districts finish. The scheduler runs a task again
    when its worker dies (up to its ``allowed-failures``)."""

    def __init__(self, client, cluster=None) -> None:
        self.client, self.cluster = client, cluster
        self.workers = max(1, len(client.scheduler_info().get("workers", {})))

    def run(self, tasks: list, work: Callable | None = None) -> Iterator:
        from distributed import as_completed

        work = work or plan_district
        # a plan's task is named by its plan; another kind of task (a district's coverage report,
        # its grid) carries its own ``key``, unique to its run
        futures = [self.client.submit(work, task, key=getattr(task, "key", None)
                                      or f"gridplan-plan-{task.plan_id}-{task.district}")
                   for task in tasks]
        try:
            for future in as_completed(futures, loop=self.client.loop):  # not the default client's
                outcome = future.result()
                # released at once: a finished district's outcome (a coverage report's findings)
                # would otherwise stay in its worker's memory until every district is done
                future.release()
                yield outcome
        finally:
            for future in futures:
                future.release()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def dask_available() -> bool:
    """Whether dask.distributed can be imported here."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def runner_for(cluster: str | None = None, workers: int | None = None, districts: int | None = None):
    """Where a plan's district tasks run: on the scheduler at ``cluster`` (or
    ``GRIDPLAN_DASK_SCHEDULER``), else on ``workers`` processes of this machine (default: its
    cores, at most one per district), else — one worker or one district — in this process.
    Raises :class:`ClusterUnavailable` naming the scheduler when it cannot be reached."""
    address = cluster or os.environ.get(SCHEDULER_ENV) or None
    if address:
        try:
            from distributed import Client
        except ImportError:
            raise ClusterUnavailable(_("dask.distributed is not installed here: cannot use the scheduler "
                                       "{address} (install dask[distributed])", address=address)) from None
        try:
            timeout = float(os.environ.get("GRIDPLAN_DASK_CONNECT_TIMEOUT") or CONNECT_TIMEOUT_S)
            client = Client(address, timeout=f"{timeout}s", set_as_default=False)
        except ValueError as exc:
            raise ClusterUnavailable(_("{address} is not the address of a dask scheduler (e.g. "
                                       "tcp://scheduler:8786)", address=address)) from exc
        except (OSError, TimeoutError) as exc:
            # the library's own words (English, its internals) go to the log, not to the page
            logging.getLogger(__name__).warning("dask scheduler %s: %s", address, exc)
            raise ClusterUnavailable(_("the dask scheduler {address} cannot be reached (no answer within "
                                       "{seconds} s): is it running, and is the address right?",
                                       address=address, seconds=f"{timeout:g}")) from None
        return DaskRunner(client)
    count = workers or os.cpu_count() or 1
    if districts is not None:
        count = min(count, max(districts, 1))
    if count <= 1:
        return SerialRunner()
    if dask_available():
        import dask
        from distributed import Client, LocalCluster

        # dask's statistical profiler samples every worker thread's stack each 10 ms, costing the
        # engine (pure Python between NumPy calls) time and telling a plan nothing it needs
        with dask.config.set({"distributed.worker.profile.enabled": False}):
            local = LocalCluster(n_workers=count, threads_per_worker=1, processes=True,
                                 dashboard_address=None)
        return DaskRunner(Client(local, set_as_default=False), local)
    return PoolRunner(count)


#: the processes a background job may start on this machine when no scheduler is named (the
#: default: its cores, as ``plan --all``; ``1``: every district in the job's own process)
JOB_WORKERS_ENV = "GRIDPLAN_JOB_WORKERS"


def job_runner(districts: int | None = None, workers: int | None = None):
    """Where the district tasks of a background job (``flask worker``: the district-wide plan,
    a city's coverage report) run: on the scheduler of ``GRIDPLAN_DASK_SCHEDULER`` when it names
    one (:class:`ClusterUnavailable` when it cannot be reached), else as ``plan --all`` runs them —
    a ``LocalCluster`` on this machine's cores, one process per district at most, in the job's
    own process for one district. ``workers`` (the command line's ``--workers``, the tests), else
    ``GRIDPLAN_JOB_WORKERS``, caps those processes: ``1`` keeps every district in the job's own
    process, for a machine whose web server needs its cores while a province is planned.
    Raises :class:`~geodata.errors.Refused` for a ``GRIDPLAN_JOB_WORKERS`` that is no count."""
    if os.environ.get(SCHEDULER_ENV):
        return runner_for(None, None, districts)
    if workers is None and os.environ.get(JOB_WORKERS_ENV):
        value = os.environ[JOB_WORKERS_ENV].strip()
        if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 1024:
            raise Refused(_("{name} is “{value}”: a number of processes from 1 to 1024",
                            name=JOB_WORKERS_ENV, value=value))
        workers = int(value)
    return runner_for(None, workers, districts)


# --- the plan of every district --------------------------------------------------------------


def run_every_district(tasks: list, work: Callable, *, runner=None, cluster: str | None = None,
                       workers: int | None = None, progress: Callable | None = None) -> tuple[list, int]:
    """Run ``work`` on each district's task on ``runner`` (by default one made for ``cluster`` and
    ``workers`` by :func:`runner_for`, closed after), telling ``progress(done, total, outcome)``
    as each ends: the outcomes in the order they ended, and how many workers ran them. What the
    grid and the coverage report by district share (a plan's run also writes and discards)."""
    own_runner = runner is None
    runner = runner or runner_for(cluster, workers, len(tasks))
    outcomes: list = []
    try:
        for outcome in runner.run(tasks, work):
            outcomes.append(outcome)
            if progress:
                progress(len(outcomes), len(tasks), outcome)
    finally:
        if own_runner:
            runner.close()
    return outcomes, runner.workers


def districts_of(engine: Engine) -> list[str]:
    """Every district the database knows: those of the districts table and of its streets; when
    both are empty (a database of units alone, a census study), those its units carry."""
    return known_districts(engine) or sorted(c for c in unit_district_codes(engine) if c)


@dataclass
class DistrictRun:
    """What the tasks of every district did (:func:`run_district_tasks`): their outcomes in
    district order and how many workers ran them."""

    outcomes: list
    workers: int

    @property
    def done(self) -> list[str]:
        """The districts answered."""
        return [o.district for o in self.outcomes if not o.skipped]

    @property
    def skipped(self) -> list[str]:
        """The districts skipped (no units)."""
        return [o.district for o in self.outcomes if o.skipped]


def run_district_tasks(engine: Engine, name: str, make: Callable[[str, str, str], object], work: Callable, *,
                       districts: list[str] | None = None, runner=None, cluster: str | None = None,
                       workers: int | None = None, progress: Callable | None = None) -> DistrictRun:
    """A task per district, made by ``make(url, district, key)`` — ``url`` the database's
    (password included: the task crosses processes and machines), ``key`` the task's dask key,
    ``gridplan-<name>-<run>-<district>``, unique to this run — and run by ``work`` as
    :func:`run_every_district` runs them; every district of the database (:func:`districts_of`)
    unless ``districts`` are named. What the grid, the coverage report and siting by district
    share. Raises :class:`~geodata.errors.NotFound` when there is no district, or no district
    has units."""
    districts = districts_of(engine) if districts is None else districts
    if not districts:
        raise NotFound(_("no units: import or generate units first"))
    url = engine.url.render_as_string(hide_password=False)
    run_id = uuid.uuid4().hex[:12]
    tasks = [make(url, d, f"gridplan-{name}-{run_id}-{d}") for d in districts]
    outcomes, ran_on = run_every_district(tasks, work, runner=runner, cluster=cluster, workers=workers,
                                          progress=progress)
    made = DistrictRun(sorted(outcomes, key=lambda o: o.district), ran_on)
    if not made.done:
        raise NotFound(_("no units: import or generate units first"))
    return made


@dataclass
class ProvincePlan:
    """A plan made district by district: its id, the districts planned and those skipped
    (no units), the plan's scores, and each district's outcome."""

    plan_id: int
    districts: list[str]
    skipped: list[str]
    scores: dict
    outcomes: list[DistrictOutcome]
    workers: int
    seconds: float

    def summary(self) -> dict:
        return {"plan_id": self.plan_id, "districts": len(self.districts), "skipped": self.skipped,
                "workers": self.workers, "seconds": round(self.seconds, 2),
                "scores": {k: v for k, v in self.scores.items() if k != "infeasible"}}


def combine_scores(outcomes: list[DistrictOutcome], rules: Rules) -> dict:
    """The plan's scores from its districts' outcomes (:func:`layers.plans.figures.combine`)."""
    done = sorted((o for o in outcomes if not o.skipped), key=lambda o: o.district)  # any finishing order
    return combine([{"households": o.households, "polsby_popper": o.polsby_popper, "sums": o.sums,
                     "infeasible": o.infeasible} for o in done], rules)


def plan_all(engine: Engine, name: str, author: str, *, minimum: int | None = None,
             maximum: int | None = None, target: int | None = None, fresh: bool = False, seed: int = 0,
             runner=None, cluster: str | None = None, workers: int | None = None,
             progress: Callable[[int, int, DistrictOutcome], None] | None = None,
             job_id: int | None = None) -> ProvincePlan:
    """Plan every district of the database as one draft plan, a task per district on ``runner``
    (default :func:`runner_for` ``cluster``/``workers``); ``progress(done, total, outcome)`` as
    each district finishes. A district without units is skipped and named; when a district's task
    fails the plan is discarded (nothing of it stays) and the error raised. ``job_id``: the
    background job making it, kept with the plan so that a job killed mid-plan has it discarded
    (:func:`geodata.plan_parts.discard_unfinished`)."""
    params = {"street": None, "minimum": minimum, "maximum": maximum, "target": target,
              "fresh": fresh, "seed": seed, "all": True}
    if job_id is not None:
        params["job"] = job_id
    rules = plan_rules(engine, params)  # refused before anything is written
    districts = districts_of(engine)
    if not districts:
        raise Refused(_("no units to plan"))
    own_runner = runner is None
    runner = runner or runner_for(cluster, workers, len(districts))  # the scheduler reached first
    started = time.perf_counter()
    plan_id = None
    try:
        revision = current_revision(engine)
        params |= {"minimum": rules.minimum, "maximum": rules.maximum}
        plan_id = plan_rows.create_plan(engine, name, author, pd.Series(dtype=object), params=params,
                                        base_revision=revision, streets=[])
        url = engine.url.render_as_string(hide_password=False)
        tasks = [DistrictTask(url, plan_id, d, asdict(rules)) for d in districts]
        outcomes: list[DistrictOutcome] = []
        for outcome in runner.run(tasks):
            outcomes.append(outcome)
            if progress:
                progress(len(outcomes), len(tasks), outcome)
        planned = sorted(o.district for o in outcomes if not o.skipped)
        if not planned:
            raise Refused(_("no units to plan"))
        streets = sorted({s for o in outcomes for s in o.streets})
        scores = combine_scores(outcomes, rules)
        plan_parts.finish_plan(engine, plan_id, scores=scores, streets=streets,
                               district_code=planned[0] if len(planned) == 1 else None)
    except BaseException as exc:
        if plan_id is not None:
            plan_parts.discard_plan(engine, plan_id, author, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if own_runner:
            runner.close()
    return ProvincePlan(plan_id, planned, sorted(o.district for o in outcomes if o.skipped), scores,
                        sorted(outcomes, key=lambda o: o.district), runner.workers,
                        time.perf_counter() - started)


__all__ = ["ClusterUnavailable", "DistrictFailed", "DistrictOutcome", "DistrictRun", "DistrictTask",
           "PoolRunner", "ProvincePlan", "SerialRunner", "DaskRunner", "TaskOutcome", "combine_scores",
           "districts_of", "job_runner", "plan_all", "plan_district", "run_district_tasks",
           "run_every_district", "runner_for"]
