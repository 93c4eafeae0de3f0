"""The `raysweep` command: a thin layer over the library's stage functions."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click

from raysweep import console
from raysweep.config import load_sweep
from raysweep.errors import RaysweepError, first_line, mask

# Exit codes: 2 bad input (nothing was done), 3 a run that finished with failed cells.
EXIT_BAD_INPUT = 2
EXIT_FAILED_CELLS = 3
FIRST_ERRORS = 3  # failed cells whose error a run prints; trials.csv holds them all


# A local --output on a cluster of several nodes is refused unless the user says this.
SHARED_OUTPUT_HELP = ("OUTPUT is a local path that every node of the cluster mounts (NFS, EFS); without it a local "
                      "path is refused on a cluster that has or can scale to several nodes.")


def _fail(exc: Exception) -> None:
    # Masked as the log file is: a server's error may echo the key it was sent.
    for line in mask(str(exc)).splitlines() or [type(exc).__name__]:  # a preflight lists every problem, one a line
        click.echo(f"error: {line}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _load_checked(sweep_file, overrides, **kwargs):
    """The sweep, checked against its data, encoders and machine before any work (raysweep.preflight)."""
    from raysweep.preflight import preflight
    from raysweep.runtime import probe_address

    cfg = load_sweep(sweep_file, overrides)
    if cfg.data.path and os.path.lexists(cfg.data.path):
        from raysweep.files import regular_file

        regular_file(cfg.data.path, "data")  # a FIFO, a device, a giant: said before pandas is imported
    if kwargs.get("address") not in (None, "local"):
        probe_address(kwargs["address"])  # seconds, where the preflight would read data and encoders first
    return cfg, preflight(cfg, where=str(sweep_file), **kwargs)


def _inputs(sweep_file, cfg) -> dict:
    """The run's own input files, which its output directory must not hold."""
    return {"sweep file": sweep_file, **({"data file": cfg.data.path} if cfg.data.path else {})}


def _check_output_dir(output: str, sweep_file, overrides) -> None:
    """A local output that cannot be one (empty, under a file, unwritable, holding the inputs),
    refused from the config alone, before the preflight reads data and encoders."""
    from raysweep.storage import check_output_dir, is_uri

    if not is_uri(output):
        check_output_dir(output, _inputs(sweep_file, load_sweep(sweep_file, overrides)))


def _warn(plan) -> None:
    """The preflight's warnings (data that is legal but likely wrong), one line each, before any work."""
    for note in plan.notes:
        click.echo(f"warning: {mask(note)}", err=True)


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


def _interrupted(saved: str) -> None:
    """Ctrl-C: one line saying what is kept, exit 130 (not 0: a script must see the run did not finish)."""
    click.echo(f"interrupted: {mask(saved)}; the same command resumes from there", err=True)
    sys.exit(EXIT_INTERRUPTED)


class _Unexpected(RaysweepError):
    """Anything but a RaysweepError escaped a command: a bug, whose traceback is in the log file;
    its one line points there."""


def _is_uri(path: str) -> bool:
    from raysweep.storage import is_uri

    return is_uri(path)


def _verbosity(verbose: bool, quiet: bool) -> int:
    if verbose and quiet:
        _fail(click.UsageError("--verbose and --quiet exclude each other"))
    return console.VERBOSE if verbose else console.QUIET if quiet else console.DEFAULT


@contextmanager
def _logged(command: str, output: str, name: str, verbosity: int, address: str | None):
    """Run the body with its output captured to a log file (console.Session), named in the first line.

    A local output keeps it in <output>/logs/; a URI output in ~/.cache/raysweep/logs/ (a run's
    driver writes it line by line, which a store cannot append to), copied to <output>/logs/ at
    the end. Ray started for the command is stopped inside, so its goodbye lands in the file.
    """
    from raysweep.layout import Layout
    from raysweep.runtime import stop_ray

    lay = Layout(str(output), name)
    out = lay.out
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    filename = f"{command}-{name}-{stamp}.log"
    path = lay.log_file(filename)
    if verbosity >= console.DEFAULT:
        click.echo(f"raysweep {command}: the full log is {path}"
                   + (f" (copied to {out.show('logs/' + filename)} at the end)" if out.is_uri else ""))
    try:
        with console.Session(path, verbosity, local=address is None) as session:
            try:
                yield
            except RaysweepError:
                raise  # its message is the one line the user needs
            except Exception as exc:  # noqa: BLE001 - a bug: its traceback goes to the log, a pointer to the terminal
                session.to_log(traceback.format_exc())
                raise _Unexpected(f"unexpected {type(exc).__name__}: {first_line(exc)}; "
                                  f"the traceback is in {path}") from None
            finally:
                stop_ray()
    finally:
        if out.is_uri and path.exists():
            try:
                out.mkdir("logs")
                out.write_text(f"logs/{filename}", path.read_text(encoding="utf-8"))
            except (OSError, RaysweepError) as exc:
                click.echo(f"warning: could not copy the log to {out.show('logs')}: {first_line(exc)}", err=True)



def _insecure_option(f):
    return click.option("--insecure", is_flag=True,
                        help="Send the cluster's auth token over plain http:// to a host that is not this machine "
                             "(refused without it: the token would cross the network in clear).")(f)


def _verbosity_options(f):
    f = click.option("--quiet", "-q", is_flag=True, help="Print only errors and the final summary.")(f)
    return click.option("--verbose", "-v", is_flag=True,
                        help="Print everything Ray, Tune and the models print (it is all in the log file anyway).")(f)


def _version() -> str:
    """raysweep's installed version; a copy a job ships to the cluster (py_modules) has none on record."""
    try:
        return version("raysweep")
    except PackageNotFoundError:
        return "unknown (not installed: a copy of the source)"


@click.group()
@click.version_option(_version(), prog_name="raysweep")
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
@click.option("--shared-output", is_flag=True, help=SHARED_OUTPUT_HELP)
@_verbosity_options
def run(sweep_file, output, overrides, address, retry_failed, shared_output, verbose, quiet) -> None:
    """Run every cell of SWEEP_FILE not yet finished in OUTPUT and write OUTPUT/trials.csv."""
    from raysweep.storage import Output, OutputLock

    verbosity = _verbosity(verbose, quiet)
    try:
        # Before the log file: bad input is one line (or one per problem), nothing written. The
        # output's own shape first: it needs the config alone, not the data or the encoder.
        _check_output_dir(output, sweep_file, overrides)
        cfg, plan = _load_checked(sweep_file, overrides, address=address, llm_output=output)
        from raysweep.sweep import check_output, run_sweep  # torch & co.: seconds, after the cheap checks

        check_output(output, probe=True, inputs=_inputs(sweep_file, cfg))
        _warn(plan)
        with OutputLock(Output(output)), _logged("run", output, cfg.name, verbosity, address):
            table = run_sweep(cfg, output, address=address, retry_failed=retry_failed, log=console.line,
                              shared_output=shared_output)
    except RaysweepError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted(f"every finished cell is saved in {output}/cells (the LLM's paid replies in its response store)")
    if len(table):
        ok = table[table["status"] == "ok"]
        if len(ok):
            # The task's headline metric (validation accuracy; a regression's Pearson) averaged over
            # seeds, by every compared parameter that varies.
            keys = [k for k in ("encoder", "pooling", "pool", "strategy", "freeze") if ok[k].nunique() > 1]
            headline = cfg.task.metrics[0]
            for line in console.summary_table(ok, keys, f"val_{headline}", f"validation {headline.replace('_', ' ')}"):
                click.echo(line)
        failed = table[table["status"] == "failed"]
        if len(failed):
            # A script (or CI) must see that cells failed: exit non-zero, with the first few errors.
            click.echo(f"error: {len(failed)} of {len(table)} cells failed; the first:", err=True)
            for row in failed.head(FIRST_ERRORS).itertuples():
                click.echo(f"  {row.cell_id} ({row.pool} {row.strategy} {row.freeze} x{row.fraction:g} "
                           f"seed {row.seed}): {row.error}", err=True)
            click.echo("  (all errors: the `error` column of trials.csv; --retry-failed runs them again)", err=True)
            sys.exit(EXIT_FAILED_CELLS)


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Generation directory (a sweep finds it through `generation_dir:`, else <its output>/generation).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a field of the sweep file (repeatable), e.g. --set llm.n_rows=200.")
@click.option("--address", default=None, help="Ray cluster address (default: a fresh local Ray; 'auto' joins one).")
@click.option("--dry-run", is_flag=True, help="Print the expected calls, tokens and cost, and call nothing.")
@click.option("--no-wait", is_flag=True, help="llm.mode batch: submit the batches and exit; run again to collect them.")
@click.option("--cancel", is_flag=True, help="llm.mode batch: cancel the open batches and keep what they finished.")
@_verbosity_options
def generate(sweep_file, output, overrides, address, dry_run, no_wait, cancel, verbose, quiet) -> None:
    """Generate SWEEP_FILE's `llm:` rows into OUTPUT, relabel them with the teacher, print the summary.

    Resumes from OUTPUT's response store: a call already paid for is never made again.
    """
    from raysweep.augment import cancel_generation, llm_estimate, reuse, run_generation
    from raysweep.layout import generation_layout
    from raysweep.llm.batch import BatchPending
    from raysweep.runtime import start_ray

    from raysweep.storage import Output, OutputLock

    verbosity = _verbosity(verbose, quiet)
    try:
        _check_output_dir(output, sweep_file, overrides)
        # The preflight reads OUTPUT's store too: one made with other settings, or a cap below
        # one call, is refused here (dry run or not) before anything starts.
        cfg, plan = _load_checked(sweep_file, overrides, address=address, generation_dir=output)
        _warn(plan)
        if dry_run:
            for line in llm_estimate(cfg, Path(output)).lines():
                click.echo(line)
            return
        # DIR/generation shares DIR's cache, so `run --output DIR` finds the teacher and activations.
        cache_dir = generation_layout(cfg, output).cache_dir
        with OutputLock(Output(output)), _logged("generate", output, cfg.name, verbosity, address):
            if cancel:
                cancel_generation(cfg, Path(output).resolve(), log=console.line)
                return
            if reuse(cfg, Path(output).resolve()) is None and cfg.llm.mode == "online":  # batch mode needs no Ray
                start_ray(address)
            result = run_generation(cfg, Path(output).resolve(), cache_dir, log=console.line, wait=not no_wait)
    except BatchPending as exc:  # --no-wait: not an error, the batches are on their way
        click.echo(str(exc))
        return
    except RaysweepError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted(f"every paid reply is saved in {output}'s response store")
    s = result.summary
    for key in ("endpoint", "mode", "model", "requests", "prompt_tokens", "cached_prompt_tokens", "completion_tokens",
                "cost_usd", "rows_kept",
                "rows_target", "stopped", "parse_failures", "duplicates_removed", "leaks_removed", "teacher_val_accuracy",
                "agreement"):
        if key in s:
            click.echo(f"{key:22s} {s[key]}")


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE")
@click.option("--output", "-o", default=None, help="Also count the cells already done in this results directory or URI.")
@click.option("--address", default=None, help="Check the resources against this cluster (default: this machine).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object (for scripts).")
def check(sweep_file, overrides, output, address, as_json) -> None:
    """Validate SWEEP_FILE against its data, encoders and machine, and print its grid without running anything."""
    try:
        cfg, plan = _load_checked(sweep_file, overrides, address=address, output=output)
        from raysweep.inputs import trainable_counts  # torch & co.: seconds, after the cheap checks

        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a "Loading weights" bar per encoder is noise in check's report
        counts = trainable_counts(cfg)  # loads each encoder: every freeze mode must fit it
        estimate, estimate_note = None, None
        if cfg.needs_generation:  # what the LLM rows will cost, calling nothing
            from raysweep.augment import llm_estimate
            from raysweep.layout import Layout

            try:
                estimate = llm_estimate(cfg, Layout.of(cfg, output).generation_dir
                                        if output and not _is_uri(output) else None)
            except RaysweepError as exc:  # e.g. the key is on the cluster, not here: the grid is still valid
                estimate_note = f"llm: no cost estimate: {first_line(exc)}"
    except RaysweepError as exc:
        if as_json:
            problems = getattr(exc, "problems", None) or [str(exc)]
            click.echo(json.dumps({"sweep": str(sweep_file), "valid": False, "problems": problems}))
            sys.exit(EXIT_BAD_INPUT)
        _fail(exc)
    if as_json:
        click.echo(json.dumps({**plan.to_json(str(sweep_file)), "trainable_params": counts,
                               **({"llm_estimate": estimate.to_json()} if estimate else {})}, indent=1))
        return
    for line in plan.lines(str(sweep_file), output):
        click.echo(line)
    for line in estimate.lines() if estimate is not None else [estimate_note] if estimate_note else []:
        click.echo(f"  {line}")
    for encoder, per_freeze in counts.items():
        if isinstance(per_freeze, str):
            click.echo(f"trainable parameters ({encoder}): not counted, {per_freeze}")
        else:
            click.echo(f"trainable parameters ({encoder}): " + ", ".join(f"{f} {n:,}" for f, n in per_freeze.items()))


@main.command(name="select")
@click.option("--project", "project_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="Project directory: unlabeled.csv, optionally labeled.csv and project.yaml, and rounds/.")
@click.option("--labels", default=None, type=click.Path(dir_okay=False, exists=True),
              help="The last batch's labels: CSV/JSONL/Parquet with id and label, or a Label Studio JSON export.")
@click.option("--sweep", "sweep_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Take encoder, recipe, selection (and a single strategy / freeze mode) from this sweep file.")
@click.option("--results", "results_dir", default=None, type=click.Path(file_okay=False, exists=True),
              help="Take the strategy from a finished sweep's results directory (its caveat is printed).")
@click.option("--from-report", "from_report", default=None, type=click.Path(file_okay=False, exists=True),
              help="Take the strategy from a `raysweep analyze` output: the best that survives against random in "
                   "the project's freeze mode, else random (it says which and why).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a project setting (repeatable), e.g. --set strategy=margin --set batch=100.")
@click.option("--undo", is_flag=True, help="Take the last round back (its labels, or its batch); nothing is deleted.")
@click.option("--label-studio", "studio_url", default=None, metavar="URL",
              help="Pull the last batch's annotations from this Label Studio and import the next batch "
                   "(token in LABEL_STUDIO_API_KEY; or label_studio.url in project.yaml).")
@click.option("--no-ray", is_flag=True, help="Never use a Ray that is already up (select starts none itself: on one machine the in-process pass is faster).")
@_verbosity_options
def select_cmd(project_dir, labels, sweep_file, results_dir, from_report, overrides, undo, studio_url, no_ray,
               verbose, quiet) -> None:
    """Write the next batch to label for a project; with --labels, merge the last batch's labels first."""
    from raysweep import labeling

    verbosity = _verbosity(verbose, quiet)
    try:
        if undo:
            labeling.undo(project_dir, log=click.echo)
            return
        if studio_url or (labels is None and labeling.load_project_config(
                Path(project_dir), overrides, sweep_file).label_studio.url):
            _select_in_studio(project_dir, studio_url, labels, sweep_file, results_dir, overrides, no_ray, verbosity)
            return
        # Checked (and returned labels merged) before the log file's line; the round itself shows
        # stage lines and progress bars, with everything else in <project>/logs/.
        project = labeling.prepare(project_dir, overrides, labels=labels, sweep_file=sweep_file,
                                   results_dir=results_dir, log=click.echo, from_report=from_report)
        with _logged("select", project_dir, "round", verbosity, None):
            labeling.next_round(project, use_ray=not no_ray, log=console.line)
    except RaysweepError as exc:
        _fail(exc)


def _select_in_studio(project_dir, url, labels, sweep_file, results_dir, overrides, no_ray, verbosity) -> None:
    from raysweep import labeling, studio

    if labels is not None:
        raise click.UsageError("--labels and --label-studio exclude each other: with Label Studio the labels "
                               "come from its project")
    project, session = studio.prepare(project_dir, url, overrides, sweep_file, results_dir, log=click.echo)
    if project is None:
        return
    with _logged("select", project_dir, "round", verbosity, None):
        round_dir = labeling.next_round(project, use_ray=not no_ray, log=console.line)
        studio.push(session, round_dir, log=console.line)


@main.command()
@click.option("--project", "project_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="A `raysweep select` project directory (its rows, classes, strategy and encoder).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", required=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--retrain-every", default=10, show_default=True, type=click.IntRange(1),
              help="Retrain in the background after this many new annotations.")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a project setting.")
def serve(project_dir, host, port, retrain_every, overrides) -> None:
    """Serve a project's model as a Label Studio ML backend (/health, /setup, /predict, /webhook)."""
    from raysweep import serve as serving

    try:
        server = serving.make_server(None, host, port)  # bound first: a taken port fails before any work
    except OSError as exc:  # the port is taken, or the host is not this machine's
        _fail(RaysweepError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"))
    try:
        server.backend = serving.Backend(project_dir, overrides, retrain_every, log=click.echo)
    except RaysweepError as exc:
        server.server_close()
        _fail(exc)
    click.echo(f"serve: Label Studio ML backend at http://{host}:{port} (Settings > Model > Connect Model); Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@main.command()
def strategies() -> None:
    """List the registered data-selection strategies, one line each."""
    from raysweep.strategies import REGISTRY

    for name in sorted(REGISTRY):
        click.echo(f"{name:18s} {REGISTRY[name].summary}")


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
        dirs, sources = [], []  # sources: how the report names each (the URI, not the temporary copy)
        try:
            for i, d in enumerate(results_dirs):
                if is_uri(d):  # its results files, copied here; named as the URI ends (the report's fallback name)
                    out = Output(d)
                    dirs.append(out.fetch_results(Path(staging) / str(i) / out.uri.rsplit("/", 1)[-1]))
                    sources.append(out.uri)  # redacted: no keys, no query options
                elif Path(d).is_dir():
                    dirs.append(Path(d))
                    sources.append(str(Path(d)))
                else:
                    raise StorageError(f"{d}: no such results directory")
            report = write_report(dirs, Path(output), seed=seed, sources=sources)
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
              help="Pass this local environment variable to the job (not a secret: Ray records it in clear; "
                   "an API key goes as llm.api_key_file, see docs/cluster.md).")
@click.option("--shared-output", is_flag=True, help=SHARED_OUTPUT_HELP)
@_insecure_option
def submit(sweep_file, address, output, overrides, env_keys, shared_output, insecure) -> None:
    """Submit SWEEP_FILE to a Ray cluster as a Ray Job; print its id and dashboard page."""
    from raysweep import jobs

    address = address or jobs.DEFAULT_ADDRESS
    try:
        _load_checked(sweep_file, overrides, remote=True)
        job_id = jobs.submit(sweep_file, address, output, overrides, env_keys, shared_output=shared_output,
                             insecure=insecure, log=click.echo)
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
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="The overrides the sweep was run or submitted with: they change its cells' ids.")
@_insecure_option
def status(job_id, address, sweep_file, output, overrides, insecure) -> None:
    """A job's state (JOB_ID), and/or a sweep's cells done / running / failed / pending (--sweep and --output)."""
    from raysweep import jobs

    if not job_id and not (sweep_file and output):
        _fail(ValueError("give a JOB_ID, or --sweep and --output"))
    if job_id:
        try:
            click.echo(str(jobs.status(address or jobs.DEFAULT_ADDRESS, job_id, insecure)))
        except RaysweepError as exc:
            _fail(exc)
    if sweep_file and output:
        from raysweep.status import cell_progress

        try:
            counts = cell_progress(load_sweep(sweep_file, overrides), output)
        except RaysweepError as exc:
            _fail(exc)
        click.echo(", ".join(f"{n} {what}" for what, n in counts.items()))


@main.command()
@click.argument("job_id")
@click.option("--address", default=None, help="The cluster's dashboard / Jobs API.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
@_insecure_option
def logs(job_id, address, follow, insecure) -> None:
    """Print a submitted job's driver output."""
    from raysweep import jobs

    try:
        for chunk in jobs.logs(address or jobs.DEFAULT_ADDRESS, job_id, follow=follow, insecure=insecure):
            click.echo(chunk, nl=False)
    except RaysweepError as exc:
        _fail(exc)


if __name__ == "__main__":
    main()
