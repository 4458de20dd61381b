"""The ``factory`` command line (typer + rich). Thin: every command calls a stage module."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from factory.generation.llm.server import HTTP_THREADS
from factory.spec import Spec, SpecError, load_spec
from factory.store import Store, StoreError, StoreLocation
from factory.store.leases import holders

if TYPE_CHECKING:
    from factory.attributes.lock import LockFile

app = typer.Typer(help="attrfactory: labelled training data from a dataset spec and an LLM.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
console = Console()
err = Console(stderr=True, soft_wrap=True)

SpecArg = Annotated[Path, typer.Argument(help="the dataset spec (YAML)", show_default=False)]
DbOpt = Annotated[Optional[str], typer.Option(
    "--store", "--db", help="the store: a folder, or postgres:CONNINFO with $FACTORY_DATA_PATH [default: $FACTORY_STORE,"
    " else ./factory-store]")]


def _load(path: Path) -> Spec:
    try:
        return load_spec(path)
    except SpecError as exc:
        for issue in exc.issues:
            err.print(f"[red]error[/red] {escape(str(issue))}", highlight=False)
        raise typer.Exit(2) from None


def _location(db: str | None) -> StoreLocation:
    try:
        return StoreLocation.parse(db)
    except StoreError as exc:
        err.print(f"[red]error[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


def _store(db: str | StoreLocation | None, read_only: bool = False, snapshot: int | None = None,
           as_of: str | None = None) -> Store:
    try:
        location = db if isinstance(db, StoreLocation) else _location(db)
        return Store(location, read_only=read_only, snapshot=snapshot, as_of=as_of)
    except StoreError as exc:
        err.print(f"[red]error[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


@app.command()
def validate(spec: SpecArg) -> None:
    """Check a spec; errors name the file, the line and the field."""
    s = _load(spec)
    console.print(f"[green]ok[/green] {spec}: {s.name} ({len(s.classes)} classes, "
                  f"{len(s.attributes)} attribute dimensions, method {s.generation.method}, hash {s.hash})")


@app.command()
def plan(spec: SpecArg) -> None:
    """Attribute combinations, expected requests, tokens and cost against the budget, before any spend."""
    s = _load(spec)  # first: a bad spec fails before the heavy imports
    from factory.generation.estimate import estimate

    try:
        est = estimate(s)
    except _expected_errors() as exc:
        raise _fail(exc) from None
    elicit_model = s.elicitation_generation.model
    table = Table(title=f"{s.name}: {s.generation.method} with {s.generation.model}"
                  + (f" (elicitation: {elicit_model})" if elicit_model != s.generation.model else ""), show_header=False)
    for dim, n in est.values_per_dimension.items():
        table.add_row(f"values: {dim}", f"{n}" + (" (to elicit)" if dim in est.elicited else ""))
    for cls, n in est.combinations.items():
        table.add_row(f"combinations: {cls}", f"{n:,}")
    table.add_row("attribute combinations (total)", f"{sum(est.combinations.values()):,}")
    table.add_row("samples", f"{s.budget.samples_per_class * len(s.classes):,} ({s.budget.samples_per_class} per class)")
    table.add_row("requests", f"{est.requests:,} ({est.generation_requests:,} generation, "
                  f"{est.elicitation_requests:,} elicitation)")
    table.add_row("tokens (expected / at most)", f"{est.tokens_expected:,} / "
                  f"{est.prompt_tokens + est.completion_tokens_max:,}")
    table.add_row(f"generation cost USD ({s.generation.model}; expected / at most)",
                  f"${est.usd_expected:.4f} / ${est.usd_max:.4f}")
    if est.elicitation_requests:
        table.add_row(f"elicitation cost USD ({s.elicitation_generation.model}; at most)",
                      f"${est.elicitation_usd_max:.4f} ({est.elicitation_tokens_max:,} tokens)")
    b = s.budget
    table.add_row("budget caps", f"requests {b.max_requests or '-'}, tokens {b.max_tokens or '-'}, "
                  f"usd {b.max_usd or '-'}")
    console.print(table)
    for w in est.warnings:
        console.print(f"[yellow]warning[/yellow] {w}", highlight=False)


RefreshOpt = Annotated[bool, typer.Option("--refresh", help="elicit again, ignoring the lock file")]


def _fail(exc: Exception) -> typer.Exit:
    issues = getattr(exc, "issues", None)
    for line in [str(i) for i in issues] if issues else [str(exc)]:
        err.print(f"[red]error[/red] {escape(line)}", highlight=False)
    return typer.Exit(1)


def _expected_errors() -> tuple[type[Exception], ...]:
    from factory.attributes.values import NeedsElicitation
    from factory.datasets import DataFileError
    from factory.attributes.elicit import ElicitationError
    from factory.generation.llm.engine import FatalEndpointError
    from factory.generation.llm.server import ServerError

    return (NeedsElicitation, ServerError, FatalEndpointError, FileNotFoundError, SpecError, ElicitationError,
            DataFileError, StoreError)


@app.command()
def lock(spec: SpecArg, db: DbOpt = None, refresh: RefreshOpt = False) -> None:
    """Elicit attribute values, similar classes and CAF decisions into SPEC.lock.yaml (for review)."""
    s = _load(spec)  # first: a bad spec fails before the heavy imports
    from factory.attributes.lock import lock_path
    from factory.attributes.stage import resolve_lock
    from factory.generation.llm.client import EndpointProvider

    with _store(db) as store, EndpointProvider() as endpoints:
        try:
            locked, elicited = resolve_lock(s, store, endpoints, refresh)
        except _expected_errors() as exc:
            raise _fail(exc) from None
    if locked is None:
        console.print(f"{spec}: every value the method uses is given in the spec; nothing to elicit, no lock needed")
        return
    table = Table(title=f"{lock_path(s)} ({'elicited now' if elicited else 'up to date'}, model {locked.model})")
    table.add_column("dimension / class")
    table.add_column("values")
    for dim, attr in locked.attributes.items():
        for cls, values in (attr.values.items() if isinstance(attr.values, dict) else [("all", attr.values)]):
            table.add_row(f"{dim} / {cls}", ", ".join(values))
    for cls, similar in locked.similar_classes.items():
        table.add_row(f"similar / {cls}", ", ".join(similar) or "-")
    dropped = sum(d.dropped for by_class in locked.caf.values() for ds in by_class.values() for d in ds)
    total = sum(len(ds) for by_class in locked.caf.values() for ds in by_class.values())
    table.add_row("CAF", f"{dropped} of {total} class-dependent values dropped")
    console.print(table)
    _print_quality(s, locked)


def _print_quality(s: Spec, locked: LockFile) -> None:
    """The elicitation quality table of a lock, and a yellow warning per value list that is mostly noise."""
    from factory.attributes.lock import lock_quality, noisy_warnings, quality_rows

    quality = lock_quality(s, locked)
    rows = quality_rows(quality)
    if not rows:
        return
    table = Table(title="elicitation quality (degenerate: repeated, identifier, number, class name, duplicate)")
    for column in ("dimension / class", "values", "degenerate", "kinds", "mean cosine", "embedding"):
        table.add_column(column)
    for r in rows:
        cosine = "-" if r["mean_cosine"] is None else f"{r['mean_cosine']:.3f}"
        table.add_row(f"{r['dimension']} / {r['class']}", str(r["values"]),
                      f"{r['degenerate']} ({100 * r['share']:.0f}%)", r["kinds"], cosine, r["embedding"])
    console.print(table)
    for line in noisy_warnings(quality):
        console.print(f"[yellow]warning[/yellow] {escape(line)}", highlight=False)


@app.command()
def suggest(spec: SpecArg, n: Annotated[int, typer.Option(help="how many dimensions")] = 5,
            db: DbOpt = None) -> None:
    """Ask the LLM which attribute dimensions matter for this domain; prints YAML to paste into the spec."""
    import asyncio

    import yaml

    from factory.attributes.elicit import suggest_dimensions
    from factory.generation.llm.budget import Budget
    from factory.generation.llm.client import open_endpoint, open_engine

    s = _load(spec)

    async def ask(endpoint) -> list[str]:  # type: ignore[no-untyped-def]
        gen = s.elicitation_generation
        async with open_engine(gen, store, endpoint, Budget.from_spec(s.budget, gen.model)) as e:
            return await suggest_dimensions(s, e, n)

    with _store(db) as store:
        try:
            with open_endpoint(s.elicitation_generation) as endpoint:
                dims = asyncio.run(ask(endpoint))
        except _expected_errors() as exc:
            raise _fail(exc) from None
    snippet = {"attributes": {d.lower().replace(" ", "_"): {"elicit": {"n": 10}} for d in dims}}
    console.print(yaml.safe_dump(snippet, sort_keys=False), highlight=False)


PREVIEW_CHARS = 100


def _print_samples(db: str | StoreLocation | None, spec: Spec, per_class: int) -> None:
    """A few generated samples per class (text shortened, class, attributes): what the run made."""
    import json

    if per_class <= 0:
        return
    with _store(db, read_only=True) as store:
        rows = store.sample_preview(spec.hash, per_class)
    if not rows:
        return
    console.print(f"samples ({per_class} per class):")
    for row in rows:
        text = " ".join(row["text"].split())
        text = text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."
        attrs = ", ".join(f"{k}={v}" for k, v in json.loads(row["attributes"]).items())
        console.print(f"  [bold]{escape(row['class'])}[/bold]  {escape(text)}  [dim]{escape(attrs)}[/dim]",
                      highlight=False, soft_wrap=True)


@app.command()
def run(spec: SpecArg, db: DbOpt = None, refresh: RefreshOpt = False,
        progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
        samples: Annotated[int, typer.Option("--samples", help="generated samples to show per class (0: none)")] = 2,
        wait: Annotated[bool, typer.Option("--wait", help="wait for another run of this spec to finish (else: refuse)")]
        = False) -> None:
    """Build the spec's dataset: every asset of its partition, in-process (resumable: a rerun sends only what
    is missing). The same code as the Dagster UI and schedules."""
    parsed = _load(spec)  # the run's one parse, handed to the spec asset
    location = _location(db)
    _store(location).close()  # fail early and clearly on a bad store
    from factory.defs.local import check_names, materialization_metadata, materialize_spec

    try:
        # Dagster's console logger would print a failed step's stack trace; the error is reported below
        result = materialize_spec(spec, location, spec=parsed, show_progress=progress, refresh=refresh,
                                  log_level="CRITICAL", lease_wait_s=None if wait else 0.0,
                                  on_lease_wait=lambda held: err.print(f"[dim]waiting: {escape(str(held))}[/dim]",
                                                                       highlight=False))
    except Exception as exc:  # noqa: BLE001 - a stage's own error, unwrapped from Dagster's
        cause = getattr(exc, "user_exception", None) or exc
        if isinstance(cause, _expected_errors()):
            raise _fail(cause) from None
        raise
    meta = materialization_metadata(result, "generations")
    colour = "green" if meta.get("status") == "done" else "yellow"
    console.print(f"[{colour}]{meta.get('status')}[/{colour}] run {meta.get('run_id')}: {meta.get('samples')} samples"
                  f" ({meta.get('new_samples')} new, {meta.get('refusals')} refusals); requests sent"
                  f" {meta.get('requests_sent')}, cached {meta.get('requests_cached')}; {meta.get('tokens'):,} tokens,"
                  f" ${meta.get('spend_usd', 0):.4f}", highlight=False)
    if meta.get("stopped_by_budget", "no") != "no":
        console.print(f"[yellow]budget[/yellow] {meta['stopped_by_budget']}: what was paid for is kept; "
                      "raise the cap and rerun")
    evaluated = {c.check_name: c for c in result.get_asset_check_evaluations()}
    for name in sorted(check_names()):
        check = evaluated.get(name)
        mark = ("[dim]skipped (does not apply to this spec)[/dim]" if check is None
                else "[green]pass[/green]" if check.passed else "[yellow]fail[/yellow]")
        console.print(f"check {name}: {mark}", highlight=False)
    _print_samples(location, parsed, samples)


@app.command()
def ui(port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 3000,
       specs: Annotated[Path, typer.Option(help="the specs folder the sensor watches")] = Path("specs"),
       db: DbOpt = None) -> None:
    """Start the Dagster UI (dagster dev -m factory.defs) on 127.0.0.1. Its daemon runs at most
    $FACTORY_MAX_CONCURRENT_RUNS runs at once (default 4), never two of one spec: the instance is $DAGSTER_HOME
    (its dagster.yaml, written there if it has none), else a temporary one removed on exit, as dagster dev's own."""
    import contextlib
    import subprocess
    import sys
    import tempfile

    from factory.defs.instance import ensure_instance_config

    location = _location(db)
    env = {**os.environ, "FACTORY_SPECS_DIR": str(specs.resolve()), "FACTORY_STORE": location.url,
           "FACTORY_DATA_PATH": location.data_path}
    env.pop("FACTORY_DB", None)
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-m", "factory.defs", "-h", "127.0.0.1", "-p", str(port)]
    # without $DAGSTER_HOME, dagster dev reads a dagster.yaml in the current folder: then that one is the user's
    own_yaml = any((Path.cwd() / name).exists() for name in ("dagster.yaml", "dagster.yml"))
    with contextlib.ExitStack() as stack:
        if not env.get("DAGSTER_HOME") and not own_yaml:  # in the current folder, as dagster dev makes its own
            env["DAGSTER_HOME"] = stack.enter_context(tempfile.TemporaryDirectory(
                prefix=".tmp_dagster_home_", dir=Path.cwd(), ignore_cleanup_errors=True))
        if env.get("DAGSTER_HOME"):
            try:
                ensure_instance_config(Path(env["DAGSTER_HOME"]))
            except ValueError as exc:  # a bad $FACTORY_MAX_CONCURRENT_RUNS
                err.print(f"[red]error[/red] {escape(str(exc))}", highlight=False)
                raise typer.Exit(2) from None
        console.print(f"Dagster UI on http://127.0.0.1:{port} (specs: {specs}, store: {location})")
        proc = subprocess.Popen(command, env=env)
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:  # dagster dev had the same Ctrl-C and stops its services: wait for it
                continue
    raise typer.Exit(code)


@app.command()
def show(spec: Annotated[Optional[str], typer.Argument(help="a spec (YAML file or name): list its dataset versions",
                                                       show_default=False)] = None,
         db: DbOpt = None) -> None:
    """What the store holds, per spec; with SPEC, that spec's dataset versions; and the runs going on now."""
    if spec is not None:
        _show_versions(spec, db)
        return
    with _store(db, read_only=True) as store:
        table = Table(title=str(store.path))
        for col in ("spec", "hash", "runs", "last run", "samples", "classes", "refusals", "tokens", "cost USD"):
            table.add_column(col)
        for row in store.overview():
            table.add_row(row["name"], row["spec_hash"], str(row["runs"]), str(row["last_status"] or "-"),
                          str(row["samples"]), str(row["classes"]), str(row["refusals"]), f"{row['tokens']:,}",
                          f"{row['cost_usd']:.4f}")
        console.print(table)
        _print_holders(store, "running")


@app.command()
def status(db: DbOpt = None,
           dagster_home: Annotated[Optional[str], typer.Option(help="the Dagster instance [default: $DAGSTER_HOME]")]
           = None) -> None:
    """Runs queued and in progress, by spec: the Dagster instance's (daemon, schedules, sensors, UI) and the
    store's leases (every writer, `factory run` included)."""
    from factory.defs.status import NoInstance, dagster_instance, runs_in_flight

    try:
        with dagster_instance(dagster_home) as instance:
            lines = runs_in_flight(instance)
        table = Table(title="Dagster runs queued or in progress")
        for col in ("spec", "job", "shard", "status", "since", "run"):
            table.add_column(col)
        for line in lines:
            table.add_row(line.spec, line.job, line.shard or "-", line.status,
                          f"{line.since:%Y-%m-%d %H:%M:%S}", line.run_id[:8])
        console.print(table if lines else "no Dagster runs queued or in progress")
    except NoInstance as exc:
        console.print(f"[yellow]skipped[/yellow] the Dagster runs: {escape(str(exc))}", highlight=False)
    location = _location(db)
    if not location.exists():
        console.print(f"no store at {location} yet", highlight=False)
        return
    with _store(db, read_only=True) as store:
        if not _print_holders(store, "writing"):
            console.print("no run is writing to the store", highlight=False)


def _print_holders(store: Store, verb: str) -> int:
    """One line per live lease (who writes which spec, since when); how many there were."""
    held = holders(store)
    for lease in held:
        console.print(f"{verb}: {lease['spec_name']} ({lease['holder']}, pid {lease['pid']} on {lease['host']},"
                      f" since {lease['acquired_at']:%H:%M:%S})", highlight=False)
    return len(held)


@app.command()
def compact(db: DbOpt = None,
            keep_hours: Annotated[float, typer.Option(help="keep every snapshot younger than this")] = 24.0) -> None:
    """Merge small data files and expire old snapshots (every dataset version and evaluated snapshot is kept)."""
    from factory.store.housekeeping import compact as compact_store

    with _store(db) as store:
        done = compact_store(store, keep_hours=keep_hours)
    console.print(f"expired {done.expired} snapshots, merged files {done.files_before} -> {done.files_after};"
                  f" {done.snapshots} snapshots kept", highlight=False)


@app.command()
def migrate(old: Annotated[Path, typer.Argument(help="a single-file store (factory.duckdb) of an older attrfactory",
                                                show_default=False)],
            db: DbOpt = None) -> None:
    """Copy an old single-file store into the shared store, verified by row counts."""
    from factory.store.migrate import MigrationError, migrate as migrate_store

    location = _location(db)
    try:
        counts = migrate_store(old, location)
    except (MigrationError, StoreError) as exc:
        raise _fail(exc) from None
    for table, n in counts.items():
        console.print(f"{table}: {n} rows", highlight=False)
    console.print(f"[green]migrated[/green] {old} into {location}", highlight=False)


def _show_versions(spec: str, db: str | None) -> None:
    name = _load(Path(spec)).name if Path(spec).is_file() else spec
    with _store(db, read_only=True) as store:
        versions = store.versions(name)
    if not versions:
        raise _fail(StoreError(f"{name}: no dataset versions in the store yet (run 'factory run SPEC')"))
    table = Table(title=f"{name}: dataset versions")
    for col in ("version", "snapshot", "time", "run", "samples", "kept", "spec hash"):
        table.add_column(col)
    for v in versions:
        table.add_row(str(v["version"]), str(v["snapshot_id"]), f"{v['updated_at']:%Y-%m-%d %H:%M:%S}", v["run_id"],
                      str(v["samples"]), "-" if v["kept"] is None else str(v["kept"]), v["spec_hash"])
    console.print(table)


@app.command()
def export(spec: SpecArg, db: DbOpt = None,
           format: Annotated[str, typer.Option("--format", "-f", help="jsonl or parquet")] = "jsonl",
           out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output file")] = None,
           version: Annotated[Optional[int], typer.Option("--version", help="a dataset version (factory show SPEC)")]
           = None,
           as_of: Annotated[Optional[str], typer.Option("--as-of", help="the data as it was at this time "
                                                        "(e.g. '2026-12-01 12:00:00+00')")] = None) -> None:
    """Write the spec's samples (text, label and provenance) to JSONL or Parquet: the newest, or a version."""
    if format not in ("jsonl", "parquet"):
        err.print(f"[red]error[/red] --format must be jsonl or parquet, not {escape(repr(format))}")
        raise typer.Exit(2)
    if version is not None and as_of is not None:
        raise _fail(ValueError("give --version or --as-of, not both"))
    s = _load(spec)
    location = _location(db)
    spec_hash, snapshot = s.hash, None
    if version is not None:
        with _store(location, read_only=True) as store:
            try:
                snapshot = store.version_snapshot(s.name, version)
            except StoreError as exc:
                raise _fail(exc) from None
            spec_hash = next(v["spec_hash"] for v in store.versions(s.name) if v["version"] == version)
    target = out or Path(f"{s.name}.{format}")
    with _store(location, read_only=True, snapshot=snapshot, as_of=as_of) as store:
        n = store.export_samples(spec_hash, target, format)
    if n == 0:
        err.print(f"[yellow]warning[/yellow] no samples for {s.name} (hash {s.hash}); run 'factory run {spec}'")
    console.print(f"wrote {n} samples to {target}")


@app.command()
def report(specs: Annotated[list[Path], typer.Argument(help="the dataset spec (YAML); with --compare, several",
                                                       show_default=False)],
           db: DbOpt = None,
           out: Annotated[Path, typer.Option("--out", "-o", help="folder for the HTML and PNG charts")] = Path("reports"),
           measure: Annotated[bool, typer.Option(help="run filters and metrics first (else report what is stored)")] = True,
           compare: Annotated[bool, typer.Option("--compare", help="one table and chart across the specs: synthetic "
                                                 "against real data and accuracy per annotator agreement "
                                                 "(reports/subjectivity.html)")] = False,
           ) -> None:
    """Filter and measure the spec's samples, then write a self-contained HTML report with PNG charts;
    with --compare, the subjectivity view across several specs from what the store holds."""
    from factory.quality.embeddings import EmbeddingModelMissing
    from factory.quality.report import write_report
    from factory.quality.stage import run_quality

    if compare:
        _report_compare(specs, db, out)
        return
    if len(specs) != 1:
        err.print("[red]error[/red] give one spec, or several with --compare")
        raise typer.Exit(2)
    spec = specs[0]
    s = _load(spec)
    with _store(db, read_only=not measure) as store:
        if store.sample_count(s.hash) == 0:
            err.print(f"[red]error[/red] no samples for {s.name} (hash {s.hash}): run 'factory run {spec}' first")
            raise typer.Exit(1)
        try:
            if measure:
                result = run_quality(s, store, show_progress=True)
                for note in result.notes:
                    console.print(f"[dim]{note}[/dim]", highlight=False)
                console.print(f"kept {result.kept} of {result.generated} samples; dropped {result.dropped or 'none'}")
            path = write_report(s, store, out)
        except EmbeddingModelMissing as exc:
            raise _fail(exc) from None
    console.print(f"report: {path}")


def _report_compare(specs: Sequence[Path], db: Path | None, out: Path) -> None:
    """`factory report --compare`: the subjectivity table (printed) and page across ``specs``."""
    from factory.quality.report import write_subjectivity_report
    from factory.training.subjectivity import format_task_table, task_rows

    loaded = [_load(p) for p in specs]
    with _store(db, read_only=True) as store:
        rows = task_rows(store, loaded)
        try:
            path = write_subjectivity_report(loaded, store, out)
        except ValueError as exc:
            raise _fail(exc) from None
    console.print(format_task_table(rows), highlight=False, soft_wrap=True)
    for row in rows:
        if row.advice:
            console.print(f"[yellow]warning[/yellow] {escape(row.advice)}", highlight=False, soft_wrap=True)
    console.print(f"report: {path}")


@app.command()
def train(spec: SpecArg, db: DbOpt = None,
          test_set: Annotated[Optional[Path], typer.Option(help="real test set [default: the spec's]")] = None,
          trainer: Annotated[Optional[str], typer.Option(help="linear_probe or finetune [default: the spec's]")] = None,
          chart: Annotated[Path, typer.Option(help="the F1-vs-budget chart (PNG)")] = Path("reports/f1_vs_budget.png"),
          ) -> None:
    """Train a classifier on the spec's kept samples and score it on the real test set, at every budget
    fraction (the job Dagster runs as a subprocess or pod, here in-process)."""
    from factory.datasets import DataFileError
    from factory.training.evaluate import EvaluationError, format_table
    from factory.training.job import JobOptions, run_job
    from factory.training.trainers import TrainerError

    _load(spec)
    chart.parent.mkdir(parents=True, exist_ok=True)
    options = JobOptions(spec=str(spec), db=_location(db).url, test_set=str(test_set) if test_set else None,
                         trainer=trainer, chart=str(chart), show_progress=True)
    try:
        results = run_job(options, log=lambda m: err.print(f"[dim]{m}[/dim]", highlight=False))
    except (EvaluationError, DataFileError, TrainerError, StoreError, FileNotFoundError, SpecError) as exc:
        raise _fail(exc) from None
    console.print(format_table(results["evaluations"]), highlight=False, soft_wrap=True)
    console.print(f"chart: {chart}")


@app.command()
def serve(port: Annotated[int, typer.Option(help="port")] = 8104,
          parallel: Annotated[int, typer.Option(help="parallel slots")] = 4,
          host: Annotated[str, typer.Option(help="address to listen on (e.g. a cluster bridge's gateway, for pods)")]
          = "127.0.0.1",
          http_threads: Annotated[int, typer.Option(min=1, help="connections whose requests are read at once (all "
                                                                 "clients' concurrency together)")] = HTTP_THREADS) -> None:
    """Run the embedded offline model (llama-server + SmolLM2) as an OpenAI-compatible endpoint."""
    from factory.generation.llm.server import ServerError, local_server

    try:
        with local_server(port=port, parallel=parallel, host=host, http_threads=http_threads) as server:
            console.print(f"serving {server.model} at {server.base_url} (Ctrl-C to stop)")
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
            while server.process.poll() is None:
                time.sleep(0.5)
    except ServerError as exc:
        err.print(f"[red]error[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


@app.command()
def review(spec: SpecArg, db: DbOpt = None,
           host: Annotated[str, typer.Option(help="address to bind; beyond loopback a token is required")] = "127.0.0.1",
           port: Annotated[int, typer.Option(help="port")] = 8105,
           reviewer: Annotated[Optional[str], typer.Option(help="your name [default: $FACTORY_REVIEWER or the OS user]")] = None,
           token: Annotated[Optional[str], typer.Option(help="access token [default: $FACTORY_REVIEW_TOKEN, or generated "
                                                              "when bound beyond loopback]")] = None,
           labelstudio: Annotated[Optional[Path], typer.Option("--labelstudio", help="write the kept samples as Label "
                                                               "Studio tasks (JSON) to this file and exit")] = None) -> None:
    """Review samples and attribute values in a local web page; decisions are kept in the store (and the lock)."""
    import getpass
    import secrets

    from factory.review.app import ReviewConfig, is_loopback, serve as serve_review
    from factory.review.export import write_labelstudio

    s = _load(spec)
    db_path = _location(db)
    if labelstudio is not None:
        with _store(db_path, read_only=True) as store:
            n = write_labelstudio(s, store, labelstudio)
        console.print(f"wrote {n} Label Studio tasks to {labelstudio}")
        return
    _store(db_path, read_only=True).close()  # a store is there, or a clear error now
    who = reviewer or os.environ.get("FACTORY_REVIEWER") or getpass.getuser()
    secret = token or os.environ.get("FACTORY_REVIEW_TOKEN") or (None if is_loopback(host) else secrets.token_urlsafe(24))
    url = f"http://{host}:{port}/" + (f"?token={secret}" if secret else "")
    console.print(f"reviewing {s.name} as {who} at {url} (Ctrl-C to stop)", highlight=False, soft_wrap=True)
    serve_review(ReviewConfig(spec.resolve(), db_path.url, who, secret), host, port)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app()


if __name__ == "__main__":
    main()
