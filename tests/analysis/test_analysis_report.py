"""The report end to end on hand-made results: every figure written, missing inputs explained."""

from __future__ import annotations

import html as html_lib
import importlib.util
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from handmade import write_extras, write_trials

from raysweep.analysis import analyze
from raysweep.analysis.report import real_labels
from raysweep.analysis.results import load

TRIAL_FIGURES = ["learning_curves", "learning_curves_macro_f1", "learning_curves_vs_random", "train_vs_val",
                 "val_confusion",
                 "by_strategy", "by_fraction", "by_freeze", "by_seed"]
EXTRA_FIGURES = ["llm_vs_teacher", "label_distribution", "embeddings_pca", "entropy_vs_sqbc"]
REPO = Path(__file__).resolve().parents[2]


def _figures_written(out: Path) -> set[str]:
    return {p.stem for p in (out / "figures").glob("*.png")}


def _assert_figure_files(out: Path, stems: list[str]) -> None:
    for stem in stems:
        png, svg = out / "figures" / f"{stem}.png", out / "figures" / f"{stem}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
        assert png.stat().st_size > 5000, stem
        assert svg.stat().st_size > 5000 and b"<svg" in svg.read_bytes()[:2000], stem


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("full")
    results = write_extras(write_trials(root / "results"))
    return analyze([results], root / "report", n_boot=500)


def test_every_figure_is_written_and_in_both_reports(full_report):
    out = full_report.parent
    expected = TRIAL_FIGURES + EXTRA_FIGURES
    assert _figures_written(out) == set(expected)
    _assert_figure_files(out, expected)
    md = full_report.read_text()
    page = (out / "report.html").read_text()
    for stem in expected:
        assert f"](figures/{stem}.png)" in md
    # Self-contained: every figure embedded, nothing loaded from a file.
    assert page.count('src="data:image/png;base64,') == len(expected)
    assert not re.search(r'src="(?!data:)', page)
    assert "## Skipped figures\n\nNone" in md


def test_report_numbers_match_the_hand_made_table(full_report):
    out = full_report.parent
    md = full_report.read_text()
    head = pd.read_csv(out / "tables" / "headline.csv").set_index(["strategy", "freeze"])
    assert head.loc[("entropy", "pooler"), "aulc"] == pytest.approx(0.505, abs=1e-12)
    assert head.loc[("entropy", "pooler"), "mean_diff"] == pytest.approx(0.02, abs=1e-12)
    assert head.loc[("random", "last-linear"), "acc_at_max"] == pytest.approx(0.50, abs=1e-12)
    # The printed headline: AULC 50.5 with the t-interval half-width 2.48 points, +2.0 pp surviving Holm.
    assert "| entropy | pooler | 3 | 1, 2 | 50.5 [48.0, 53.0] | +2.0 [+2.0, +2.0] * | <0.001 | 56.0 [53.5, 58.5] |" in md
    assert "| random | last-linear | 3 |  | 45.0 [42.5, 47.5] | baseline |  | 50.0 [47.5, 52.5] |" in md
    assert "Trials: 37 (36 ok, 1 failed)" in md
    assert "RuntimeError: out of memory" in md  # the failed cell and its error
    for name in ("headline", "cells", "compare_strategy", "compare_strategy_by_fraction", "labels_needed", "failed",
                 "generation", "entropy_sqbc_correlation"):
        assert (out / "tables" / f"{name}.csv").stat().st_size > 0
        assert (out / "tables" / f"{name}.md").read_text().startswith("| ")


def test_report_has_config_and_reproduce_command(full_report):
    md = full_report.read_text()
    results = full_report.parent.parent / "results"
    assert f"raysweep run {results}/sweep.yaml --output {results}-rerun" in md
    assert "name: handmade" in md and "Nuisance (replicated): `seed`" in md
    assert f"raysweep analyze {results} --output {full_report.parent}" in md


def test_agreement_is_computed_from_the_generated_rows(full_report):
    gen = pd.read_csv(full_report.parent / "tables" / "generation.csv").set_index("key")["value"]
    rows = pd.read_csv(full_report.parent.parent / "results" / "generation" / "generated.csv")
    assert float(gen["agreement (from generated.csv)"]) == pytest.approx(
        (rows.llm_label == rows.teacher_label).mean(), abs=1e-4)


def test_make_report_script(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_report", REPO / "analysis" / "make_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Failed trials: the script's own part (arguments, printed path) without drawing every figure
    # again (analyze itself is covered by the tests around it; the figures took ~5 s of CPU).
    results = write_trials(tmp_path / "results")
    pd.read_csv(results / "trials.csv").assign(status="failed").to_csv(results / "trials.csv", index=False)
    module.main([str(results), "--output", str(tmp_path / "out"), "--n-boot", "100"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "out" / "report.md")
    assert (tmp_path / "out" / "report.html").is_file()


def test_missing_inputs_are_skipped_with_a_reason(trials_only_report):
    out = trials_only_report.parent
    assert _figures_written(out) == set(TRIAL_FIGURES)
    _assert_figure_files(out, TRIAL_FIGURES)
    md = trials_only_report.read_text()
    skipped = md.split("## Skipped figures", 1)[1].split("\n## ", 1)[0]
    assert "| llm_vs_teacher | no generation/generated.csv (the sweep has no LLM-generated pool) |" in skipped
    assert "| label_distribution | no generation/generated.csv" in skipped
    assert "| embeddings_pca | no generation/embeddings.npz" in skipped
    assert "| entropy_vs_sqbc | no diagnostics/*.csv" in skipped


def test_real_labels_come_from_the_results_directory_then_the_data_set(tmp_path):
    results = write_extras(write_trials(tmp_path / "results"))
    labels, source = real_labels(load(results))
    assert source == "generation/real_labels.csv" and len(labels) == 200
    (results / "generation" / "real_labels.csv").unlink()
    # The hand-made sweep.yaml names no data file, so the data set is the bundled SST-5.
    labels, source = real_labels(load(results))
    assert source == "bundled SST-5, train split"
    assert len(labels) > 5000 and set(labels) == {0, 1, 2, 3, 4}
    (results / "sweep.yaml").write_text("name: x\ndata:\n  path: /nonexistent/data.csv\n")
    labels, source = real_labels(load(results))
    assert labels is None and "cannot be read" in source and "/nonexistent/data.csv" in source


def test_only_random_means_no_paired_differences(tmp_path):
    from raysweep.analysis.report import no_pairs_reason

    trials = pd.read_csv(write_trials(tmp_path / "r") / "trials.csv")
    assert "only strategy" in no_pairs_reason(trials[trials.strategy == "random"])
    assert "no `random`" in no_pairs_reason(trials[trials.strategy == "entropy"])


def test_a_directory_without_results_is_refused_before_anything_is_written(tmp_path):
    from click.testing import CliRunner

    from raysweep.analysis.results import ResultsError
    from raysweep.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ResultsError, match="no results to analyze"):
        analyze([empty], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # Beside a good directory too: a wrong path among several is named, not silently skipped.
    result = CliRunner().invoke(main, ["analyze", str(write_trials(tmp_path / "good")), str(empty),
                                       "--output", str(tmp_path / "out")])
    assert result.exit_code != 0 and not (tmp_path / "out").exists()
    assert result.output.strip().splitlines() == [f"error: {empty}: no results to analyze (no trials.csv in {empty}, "
                                                  "no generation/ and no diagnostics/)"]
    (empty / "trials.csv").write_text(",".join(["cell_id", "pool", "strategy", "fraction", "freeze", "seed", "status",
                                                "val_accuracy"]) + "\n")  # a header and no rows
    with pytest.raises(ResultsError, match="has no rows"):
        analyze([empty], tmp_path / "out")


def test_a_directory_of_failed_trials_still_gets_a_report(tmp_path):
    results = write_trials(tmp_path / "failed")
    trials = pd.read_csv(results / "trials.csv").assign(status="failed", error="RuntimeError: boom")
    trials.to_csv(results / "trials.csv", index=False)
    md = analyze([results], tmp_path / "out").read_text()
    assert "Trials: 37 (0 ok, 37 failed)" in md
    assert "| learning_curves | no successful trials |" in md


def test_two_sweeps_are_told_apart(tmp_path, quick_figures):
    a = write_trials(tmp_path / "a")
    (a / "generation").mkdir()
    write_extras(tmp_path / "extras")
    (tmp_path / "extras" / "generation" / "generated.csv").rename(a / "generation" / "generated.csv")
    b = write_trials(tmp_path / "b")
    report = analyze([a, b], tmp_path / "out", n_boot=200)
    written = _figures_written(report.parent)
    assert "by_sweep" in written  # the sweep itself is now a parameter that varies
    assert "handmade-a-llm_vs_teacher" in written
    md = report.read_text()
    assert "| handmade-b-llm_vs_teacher | no generation/generated.csv" in md


def test_confusion_column_parsing():
    from raysweep.analysis.figures import confusions

    parsed = confusions(pd.DataFrame({"confusion": ["[[1, 2], [3, 4]]", "null", "", None, "[1, 2]", "oops"]}))
    assert parsed.iloc[0].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert parsed.iloc[1:].isna().all()  # empty, null, not square, not JSON: no matrix


def test_cli_analyze_names_a_malformed_file(tmp_path):
    from click.testing import CliRunner

    from raysweep.cli import main

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "trials.csv").write_text("cell_id,pool\nx,real\n")
    result = CliRunner().invoke(main, ["analyze", str(bad), "--output", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "trials.csv: missing column(s) strategy, fraction, freeze, seed, status, val_accuracy" in result.output
    (bad / "trials.csv").write_text("")
    result = CliRunner().invoke(main, ["analyze", str(bad), "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and "cannot be read" in result.output


def test_a_figure_is_byte_identical_when_redrawn(trials_dir, tmp_path):
    import numpy as np

    from raysweep.analysis import figures
    from raysweep.analysis.results import combined_trials, load_many

    ok = combined_trials(load_many([trials_dir])).query("status == 'ok'")
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = figures.parameter_plot(ok, "strategy", tmp_path / "a")  # jittered dots: the global RNG
    assert (np.random.get_state()[1] == before).all()  # the caller's random state is left alone
    second = figures.parameter_plot(ok, "strategy", tmp_path / "b")
    assert first.with_suffix(".svg").read_bytes() == second.with_suffix(".svg").read_bytes()
    assert first.read_bytes() == second.read_bytes()


def test_headline_script_prints_the_reports_headline(full_report, capsys):
    spec = importlib.util.spec_from_file_location("headline", REPO / "analysis" / "headline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(full_report.parent.parent / "results")])
    assert capsys.readouterr().out == (full_report.parent / "tables" / "headline.md").read_text()


def test_seeds_needed_script_prints_the_report_estimates(full_report, capsys):
    spec = importlib.util.spec_from_file_location("seeds_needed", REPO / "analysis" / "seeds_needed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(full_report.parent.parent / "results")])
    out = capsys.readouterr().out
    table = pd.read_csv(full_report.parent / "tables" / "compare_strategy.csv")
    assert out.count("| entropy vs random | freeze ") == len(table) == 4
    assert "| accuracy | 1, 2 | 3 | +2.00 | 0.00 | 0.000 | 2 | 2 |" in out
    assert "compute per seed of this grid: 2.0 trial-minutes" in out


def test_entropy_sqbc_correlation_reads_past_the_summary_file(full_report):
    import numpy as np
    from scipy.stats import spearmanr

    corr = pd.read_csv(full_report.parent / "tables" / "entropy_sqbc_correlation.csv")
    rows = pd.read_csv(full_report.parent.parent / "results" / "diagnostics" / "pooler.csv")
    both = corr[(corr.freeze == "pooler") & (corr.seed == "all")].iloc[0]
    assert both["n"] == 50  # the 50 pool rows of pooler.csv; correlation.csv is not data
    assert both["r"] == pytest.approx(np.corrcoef(rows.entropy, rows.sqbc)[0, 1], abs=1e-12)
    assert both["spearman"] == pytest.approx(spearmanr(rows.entropy, rows.sqbc).statistic, abs=1e-12)
    one = corr[(corr.freeze == "pooler") & (corr.seed == "1")].iloc[0]
    seed1 = rows[rows.seed == 1]
    assert one["n"] == 25 and one["r"] == pytest.approx(np.corrcoef(seed1.entropy, seed1.sqbc)[0, 1], abs=1e-12)


def test_one_strategy_several_pools_compares_each_pool_with_real(tmp_path, quick_figures):
    d = write_trials(tmp_path / "pools")
    real = pd.read_csv(d / "trials.csv").query("strategy == 'random'")
    # The LLM pool is exactly 1 point worse wherever rows are added, and the same at fraction 0.
    llm = real.assign(pool="llm", cell_id=real["cell_id"] + "-llm",
                      val_accuracy=real["val_accuracy"] - 0.01 * (real["fraction"] > 0))
    pd.concat([real, llm]).to_csv(d / "trials.csv", index=False)
    report = analyze([d], tmp_path / "out", n_boot=200).read_text()
    head = report.split("## Headline")[1].split("## Figures")[0]
    assert "`vs real`" in head and "| vs real, pp [95% CI] |" in head
    rows = [line for line in head.splitlines() if line.startswith("| llm |")]
    assert rows and all("| -1.0 [-1.0, -1.0] * |" in line for line in rows)
    findings = report.split("## Findings")[1].split("## Summary")[0]
    assert "**llm vs real** (freeze pooler; fractions 1, 2; 3 seeds): accuracy -1.0 points" in findings
    assert "*LLM rows help less than real rows* (accuracy, 3 seeds per point): supported in all comparisons." in findings
    assert all("| baseline |" in line for line in head.splitlines() if line.startswith("| real |"))


def test_findings_are_checked_on_the_test_split(tmp_path, quick_figures):
    d = write_trials(tmp_path / "with-test")
    trials = pd.read_csv(d / "trials.csv")
    # On test, entropy's +2 points of val hold in last-linear and vanish in pooler (where test = random's val).
    gain = (trials.strategy == "entropy") & (trials.fraction > 0)
    trials["test_accuracy"] = trials["val_accuracy"] - 0.02 * (gain & (trials.freeze == "pooler"))
    trials["test_macro_f1"] = trials["val_macro_f1"]
    trials.to_csv(d / "trials.csv", index=False)
    out = analyze([d], tmp_path / "out", n_boot=100)
    md = out.read_text()
    findings = md.split("## Findings")[1].split("## Summary")[0]
    assert "checked on the `test` split" in findings
    assert "(freeze last-linear; fractions 1, 2; 3 seeds): accuracy +2.0 points" in findings
    assert "On test: +2.0 [+2.0, +2.0], agrees." in findings
    assert "On test: +0.0 [+0.0, +0.0], **disagrees**." in findings
    table = pd.read_csv(out.parent / "tables" / "compare_strategy.csv")
    acc = table[table.metric == "val_accuracy"].set_index("freeze")
    assert acc.loc["last-linear", "test_agrees"] and not acc.loc["pooler", "test_agrees"]


def test_a_freeze_mode_short_of_the_largest_fraction_still_gets_its_confusion_panel(trials_dir, tmp_path):
    from raysweep.analysis import figures
    from raysweep.analysis.results import combined_trials, load_many

    ok = combined_trials(load_many([trials_dir])).query("status == 'ok'")
    partial = ok[~((ok.freeze == "pooler") & (ok.fraction == 2))]  # a sweep still running its pooler cells
    assert figures.val_confusion(partial, tmp_path).is_file()



@pytest.mark.parametrize("text, says", [
    ("a: &x 1\nb: *x\n", "YAML aliases"),
    ("name: [unclosed\n", "is not valid YAML"),
])
def test_a_results_sweep_yaml_is_read_by_the_one_loader(tmp_path, text, says):
    from raysweep.analysis.results import ResultsError

    results = write_trials(tmp_path / "r")
    (results / "sweep.yaml").write_text(text)
    with pytest.raises(ResultsError, match=says) as info:
        analyze([results], tmp_path / "out")
    assert "\n" not in str(info.value) and str(results / "sweep.yaml") in str(info.value)
    assert not (tmp_path / "out").exists()
def test_a_short_llm_pool_is_said_in_the_findings():
    from types import SimpleNamespace

    from raysweep.analysis.report import short_pools

    short = SimpleNamespace(name="llm-small", generation={"complete": False, "rows_kept": 120, "rows_target": 300,
                                                          "stopped": "budget", "cost_usd": 0.5})
    full = SimpleNamespace(name="other", generation={"complete": True, "rows_kept": 300, "rows_target": 300})
    assert short_pools([short, full, SimpleNamespace(name="real-only", generation=None)]) == [
        "**The LLM pool is short** (llm-small): generation stopped at its budget (llm.max_cost_usd), keeping 120 of "
        "the 300 rows asked for ($0.5000 spent); the `llm` and `llm_teacher` cells added at most 120 rows (their "
        "`n_added`)."]


# A script run in the page before anything else: it records every resource that fails to load
# and, once the page has loaded, each image's state, into an element --dump-dom then prints.
_PAGE_CHECK = """<script>
window.__broken = [];
window.addEventListener("error", e => window.__broken.push(String(e.message || (e.target && (e.target.src || e.target.href)))), true);
window.addEventListener("load", () => {
  const images = Array.from(document.images).map(i => ({alt: i.alt, loaded: i.complete && i.naturalWidth > 0,
                                                        width: i.naturalWidth}));
  const out = document.createElement("pre");
  out.id = "raysweep-check";
  out.textContent = JSON.stringify({images, broken: window.__broken});
  document.body.appendChild(out);
});
</script>"""


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    # Flags for a shared machine without a display or network (docs: PITFALLS, the browser).
    return subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_html_report_loads_every_figure_in_a_real_browser(full_report, tmp_path):
    html = full_report.with_suffix(".html")
    page = html.read_text()
    checked = html.with_name("report-checked.html")  # beside the report: the same relative links
    checked.write_text(page.replace("<head>", "<head>" + _PAGE_CHECK, 1))
    done = _chromium("--dump-dom", "--virtual-time-budget=10000", checked.as_uri(), profile=tmp_path / "a")
    checked.unlink()
    found = re.search(r'<pre id="raysweep-check">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    state = json.loads(html_lib.unescape(found.group(1)))
    assert state["broken"] == []
    figures_in_page = len(re.findall(r"<img\b", page))
    assert len(state["images"]) == figures_in_page >= len(TRIAL_FIGURES + EXTRA_FIGURES) - 1
    assert [i["alt"] for i in state["images"] if not i["loaded"]] == []
    # Every local link of the page (tables, figures' SVGs) points at a file that is there.
    for target in re.findall(r'href="([^"#:]+)"', page):
        assert (html.parent / html_lib.unescape(target)).exists(), target

    shot = tmp_path / "report.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars", html.as_uri(),
                     profile=tmp_path / "b")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", done.stderr[-2000:]
    assert shot.stat().st_size > 50_000  # a page of figures, not a blank one
    shutil.copy(shot, Path(tempfile.gettempdir()) / "raysweep-report-screenshot.png")  # for a person to look at
