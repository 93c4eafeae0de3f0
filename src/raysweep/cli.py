"""The `raysweep` command: a thin layer over the library's stage functions."""

from __future__ import annotations

import sys

import click

from raysweep.config import load_sweep
from raysweep.errors import RaysweepError


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


@click.group()
def main() -> None:
    """Which labeled data should I add next, and is LLM-generated data worth it?"""


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Results directory, or a storage URI (s3://bucket/prefix, gs://..., file:///...).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a field of the sweep file (repeatable), e.g. --set recipe.epochs=5.")
@click.option("--address", default=None, help="Ray cluster address (default: a fresh local Ray; 'auto' joins one).")
@click.option("--retry-failed", is_flag=True, help="Run the cells that failed before again.")
def run(sweep_file, output, overrides, address, retry_failed) -> None:
    """Run every cell of SWEEP_FILE not yet finished in OUTPUT and write OUTPUT/trials.csv."""
    from raysweep.sweep import run_sweep

    try:
        cfg = load_sweep(sweep_file, overrides)
        table = run_sweep(cfg, output, address=address, retry_failed=retry_failed)
    except RaysweepError as exc:
        _fail(exc)
    if len(table):
        ok = table[table["status"] == "ok"]
        if len(ok):
            # Mean validation accuracy over seeds, by every compared parameter that varies.
            keys = [k for k in ("encoder", "pooling", "pool", "strategy", "freeze") if ok[k].nunique() > 1]
            summary = ok.groupby([*keys, "fraction"])["val_accuracy"].agg(["mean", "std", "count"])
            click.echo(summary.rename(columns={"count": "seeds"}).round(4).to_string())


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Generation directory (a sweep finds it through `generation_dir:`, else <its output>/generation).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a field of the sweep file (repeatable), e.g. --set llm.n_rows=200.")
@click.option("--address", default=None, help="Ray cluster address (default: a fresh local Ray; 'auto' joins one).")
def generate(sweep_file, output, overrides, address) -> None:
    """Generate SWEEP_FILE's `llm:` rows into OUTPUT, relabel them with the teacher, print the summary.

    Resumes from OUTPUT's response store: a call already paid for is never made again.
    """
    from pathlib import Path

    from raysweep.augment import reuse, run_generation
    from raysweep.sweep import init_ray

    try:
        cfg = load_sweep(sweep_file, overrides)
        cache_dir = Path(cfg.cache_dir).resolve() if cfg.cache_dir else Path(output).resolve() / "cache"
        if reuse(cfg, Path(output).resolve()) is None:  # a complete directory needs no Ray
            init_ray(address)
        result = run_generation(cfg, Path(output).resolve(), cache_dir)
    except RaysweepError as exc:
        _fail(exc)
    s = result.summary
    for key in ("endpoint", "model", "requests", "prompt_tokens", "completion_tokens", "cost_usd", "rows_kept",
                "rows_target", "parse_failures", "duplicates_removed", "leaks_removed", "teacher_val_accuracy",
                "agreement"):
        if key in s:
            click.echo(f"{key:22s} {s[key]}")


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE")
def check(sweep_file, overrides) -> None:
    """Validate SWEEP_FILE and print its cells without running anything."""
    from raysweep.sweep import expand

    try:
        cfg = load_sweep(sweep_file, overrides)
    except RaysweepError as exc:
        _fail(exc)
    cells = expand(cfg)
    click.echo(f"{sweep_file}: valid, {len(cells)} cells")


@main.command(name="select")
@click.option("--project", "project_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="Project directory: unlabeled.csv, optionally labeled.csv and project.yaml, and rounds/.")
@click.option("--labels", default=None, type=click.Path(dir_okay=False, exists=True),
              help="The last batch's labels: CSV/JSONL/Parquet with id and label, or a Label Studio JSON export.")
@click.option("--sweep", "sweep_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Take encoder, recipe, selection (and a single strategy / freeze mode) from this sweep file.")
@click.option("--results", "results_dir", default=None, type=click.Path(file_okay=False, exists=True),
              help="Take the strategy from a finished sweep's results directory (its caveat is printed).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a project setting (repeatable), e.g. --set strategy=margin --set batch=100.")
@click.option("--undo", is_flag=True, help="Take the last round back (its labels, or its batch); nothing is deleted.")
@click.option("--no-ray", is_flag=True, help="Encode and score in this process even for a large pool.")
def select_cmd(project_dir, labels, sweep_file, results_dir, overrides, undo, no_ray) -> None:
    """Write the next batch to label for a project; with --labels, merge the last batch's labels first."""
    from raysweep import labeling

    try:
        if undo:
            labeling.undo(project_dir, log=click.echo)
            return
        labeling.select(project_dir, overrides, labels=labels, sweep_file=sweep_file, results_dir=results_dir,
                        use_ray=not no_ray, log=click.echo)
    except RaysweepError as exc:
        _fail(exc)


@main.command()
def strategies() -> None:
    """List the registered data-selection strategies, one line each."""
    from raysweep.strategies import REGISTRY, NotImplementedStrategy

    for name in sorted(REGISTRY):
        s = REGISTRY[name]
        tag = " (not implemented yet)" if isinstance(s, NotImplementedStrategy) else ""
        click.echo(f"{name:18s} {s.summary}{tag}")


@main.command()
@click.argument("results_dirs", nargs=-1, required=True)
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Where report.md, report.html, figures/ and tables/ are written.")
@click.option("--seed", default=0, show_default=True, help="Seeds the bootstrap intervals and scatter subsampling.")
def analyze(results_dirs, output, seed) -> None:
    """Write the report (figures, tables, statistics) of one or more RESULTS_DIRS (directories or URIs)."""
    import tempfile
    from pathlib import Path

    from raysweep.analysis import analyze as write_report
    from raysweep.storage import Output, StorageError, is_uri

    with tempfile.TemporaryDirectory() as staging:
        dirs = []
        try:
            for i, d in enumerate(results_dirs):
                if is_uri(d):  # its results files, copied here; named as the URI ends (the report's fallback name)
                    out = Output(d)
                    dirs.append(out.fetch_results(Path(staging) / str(i) / out.uri.rsplit("/", 1)[-1]))
                elif Path(d).is_dir():
                    dirs.append(Path(d))
                else:
                    raise StorageError(f"{d}: no such results directory")
            report = write_report(dirs, Path(output), seed=seed)
        except RaysweepError as exc:  # e.g. a results file that is there but malformed; the message names it
            _fail(exc)
    click.echo(f"wrote {report} and {report.with_suffix('.html')}")


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--address", default=None, help="The cluster's dashboard / Jobs API (default: http://127.0.0.1:8265, "
                                               "where `ray dashboard cluster.yaml` forwards it).")
@click.option("--output", "-o", required=True, help="Results directory on the cluster (shared storage).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE")
@click.option("--env", "env_keys", multiple=True, metavar="NAME",
              help="Pass this local environment variable (e.g. OPENAI_API_KEY) to the job, never in its command line.")
def submit(sweep_file, address, output, overrides, env_keys) -> None:
    """Submit SWEEP_FILE to a Ray cluster as a Ray Job; print its id and dashboard page."""
    from raysweep import jobs

    address = address or jobs.DEFAULT_ADDRESS
    try:
        job_id = jobs.submit(sweep_file, address, output, overrides, env_keys)
    except RaysweepError as exc:
        _fail(exc)
    click.echo(f"submitted {job_id}")
    click.echo(f"dashboard: {jobs.dashboard_url(address, job_id)}")
    click.echo(f"follow it: raysweep logs {job_id} --follow --address {address}")


@main.command()
@click.argument("job_id", required=False)
@click.option("--address", default=None, help="The cluster's dashboard / Jobs API.")
@click.option("--sweep", "sweep_file", type=click.Path(dir_okay=False), default=None,
              help="With --output: count this sweep's cells in a results directory you can read.")
@click.option("--output", "-o", default=None, type=click.Path(file_okay=False), help="Results directory or URI.")
def status(job_id, address, sweep_file, output) -> None:
    """A job's state (JOB_ID), and/or a sweep's cells done / running / failed / pending (--sweep and --output)."""
    from raysweep import jobs

    if not job_id and not (sweep_file and output):
        _fail(ValueError("give a JOB_ID, or --sweep and --output"))
    if job_id:
        try:
            click.echo(str(jobs.status(address or jobs.DEFAULT_ADDRESS, job_id)))
        except RaysweepError as exc:
            _fail(exc)
    if sweep_file and output:
        from raysweep.sweep import cell_progress

        try:
            counts = cell_progress(load_sweep(sweep_file), output)
        except RaysweepError as exc:
            _fail(exc)
        click.echo(", ".join(f"{n} {what}" for what, n in counts.items()))


@main.command()
@click.argument("job_id")
@click.option("--address", default=None, help="The cluster's dashboard / Jobs API.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
def logs(job_id, address, follow) -> None:
    """Print a submitted job's driver output."""
    from raysweep import jobs

    try:
        for chunk in jobs.logs(address or jobs.DEFAULT_ADDRESS, job_id, follow=follow):
            click.echo(chunk, nl=False)
    except RaysweepError as exc:
        _fail(exc)


if __name__ == "__main__":
    main()
