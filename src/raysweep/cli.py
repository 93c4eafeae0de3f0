"""The `raysweep` command: a thin layer over the library's stage functions."""

from __future__ import annotations

import sys

import click

from raysweep.config import ConfigError, load_sweep


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


@click.group()
def main() -> None:
    """Which labeled data should I add next, and is LLM-generated data worth it?"""


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Results directory.")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a field of the sweep file (repeatable), e.g. --set recipe.epochs=5.")
@click.option("--address", default=None, help="Ray cluster address (default: a fresh local Ray; 'auto' joins one).")
@click.option("--retry-failed", is_flag=True, help="Run the cells that failed before again.")
def run(sweep_file, output, overrides, address, retry_failed) -> None:
    """Run every cell of SWEEP_FILE not yet finished in OUTPUT and write OUTPUT/trials.csv."""
    from raysweep.data import DataError
    from raysweep.backbone import EncoderError
    from raysweep.sweep import run_sweep

    try:
        cfg = load_sweep(sweep_file, overrides)
        table = run_sweep(cfg, output, address=address, retry_failed=retry_failed)
    except (ConfigError, DataError, EncoderError) as exc:
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
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE")
def check(sweep_file, overrides) -> None:
    """Validate SWEEP_FILE and print its cells without running anything."""
    from raysweep.sweep import expand

    try:
        cfg = load_sweep(sweep_file, overrides)
    except ConfigError as exc:
        _fail(exc)
    cells = expand(cfg)
    click.echo(f"{sweep_file}: valid, {len(cells)} cells")


@main.command()
def strategies() -> None:
    """List the registered data-selection strategies, one line each."""
    from raysweep.strategies import REGISTRY, NotImplementedStrategy

    for name in sorted(REGISTRY):
        s = REGISTRY[name]
        tag = " (not implemented yet)" if isinstance(s, NotImplementedStrategy) else ""
        click.echo(f"{name:18s} {s.summary}{tag}")


@main.command()
@click.argument("results_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Where report.md, report.html, figures/ and tables/ are written.")
@click.option("--seed", default=0, show_default=True, help="Seeds the bootstrap intervals and scatter subsampling.")
def analyze(results_dirs, output, seed) -> None:
    """Write the report (figures, tables, statistics) of one or more RESULTS_DIRS."""
    from pathlib import Path

    from raysweep.analysis import analyze as write_report
    from raysweep.analysis.results import ResultsError

    try:
        report = write_report([Path(d) for d in results_dirs], Path(output), seed=seed)
    except ResultsError as exc:  # a results file that is there but malformed; the message names it
        _fail(exc)
    click.echo(f"wrote {report} and {report.with_suffix('.html')}")


if __name__ == "__main__":
    main()
