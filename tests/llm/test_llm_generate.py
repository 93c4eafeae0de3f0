"""generate() on Ray actors against the fake server: the whole run, resume, kills, Ctrl-C, errors."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from raysweep.llm.budget import worst_case_usd
from raysweep.llm.client import estimate_tokens
from raysweep.llm.config import PriceConfig
from raysweep.llm.fake_server import Reply
from raysweep.llm.prompt import DEFAULT_TEMPLATE, SST5_CLASS_NAMES, build_messages
from raysweep.llm.generate import GenerationError, generate


def stored_ids(out_dir) -> list[int]:
    with open(out_dir / "responses.jsonl") as f:
        return [json.loads(line)["request_id"] for line in f]


def served_ids(server) -> list[int]:
    return [int(call) for call in server.calls_served()]


@pytest.mark.slow  # starts Ray
def test_a_run_recovers_what_it_can_removes_duplicates_and_leaks_and_resumes_for_free(
        ray_local, fake_openai, llm_cfg, examples, val_texts, tmp_path):
    server = fake_openai(script=[
        Reply(status=429, headers={"retry-after": "0.2"}),
        Reply(status=500),
        Reply(content='```json\n[["a truncated reply one", 1], ["a truncated reply two", 2], ["a trunc',
              finish_reason="length"),
        Reply(content=json.dumps([[val_texts[0], 0], ["one fresh sentence here", 2], ["One fresh sentence here!", 3],
                                  [examples["text"][7], 1]])),
        Reply(content=""),
    ], rows_per_reply=5)
    cfg = llm_cfg(server.base_url, n_rows=20)
    result = generate(cfg, examples, val_texts, tmp_path)

    s = result.summary
    assert list(result.rows.columns) == ["text", "llm_label"] and len(result.rows) == 20
    assert s["rows_kept"] == 20 and s["complete"] is True
    assert s["parse_failures"] == {"empty_reply": 1, "truncated_item": 1}
    assert s["parse_repairs"] == {"code_fence": 1, "truncated": 1}
    assert s["duplicates_removed"] == {"exact": 1, "near": 0} and s["leaks_removed"] == 1
    assert s["copies_of_examples"] == 1  # counted, kept: a real row, not a leak
    assert s["retries"] == {"429": 1, "500": 1}
    assert s["replies_cut_at_max_tokens"] == 1
    # Every paid reply is in the store, once; nothing unpaid is.
    assert sorted(stored_ids(tmp_path)) == sorted(served_ids(server))
    assert s["requests"] == s["requests_this_run"] == len(served_ids(server))
    records = [json.loads(line) for line in open(tmp_path / "responses.jsonl")]
    prompt = sum(r["usage"]["prompt_tokens"] for r in records)
    completion = sum(r["usage"]["completion_tokens"] for r in records)
    assert (s["prompt_tokens"], s["completion_tokens"]) == (prompt, completion)
    assert s["cost_usd"] == pytest.approx((prompt * 1.0 + completion * 2.0) / 1e6)  # no cached price: full price
    # One fixed few-shot prefix per run: the fake provider served every answered call's prompt
    # but the first from its cache, and the summary counts what the replies said.
    cached = [r["usage"]["prompt_tokens_details"]["cached_tokens"] for r in records]
    assert s["cached_prompt_tokens"] == sum(cached) and sum(c > 0 for c in cached) >= len(records) - 1
    assert not set(result.rows["text"]) & set(val_texts)
    assert result.rows["text"].str.lower().str.strip("!").is_unique
    removed = pd.read_csv(tmp_path / "removed.csv")
    assert sorted(removed["reason"]) == ["exact_duplicate", "val_leak"]
    assert len(open(tmp_path / "parse_failures.jsonl").readlines()) == 2

    # Run again: everything is in the store, so nothing is asked and the rows are the same.
    arrivals = len(server.arrivals)
    again = generate(cfg, examples, val_texts, tmp_path)
    assert len(server.arrivals) == arrivals and again.summary["requests_this_run"] == 0
    pd.testing.assert_frame_equal(again.rows, result.rows)

    # Ask for more rows: only new calls are made, and the first rows stay what they were.
    stored, served = set(stored_ids(tmp_path)), len(served_ids(server))
    more = generate(llm_cfg(server.base_url, n_rows=20 + s["rows_surplus"] + 10), examples, val_texts, tmp_path)
    new = served_ids(server)[served:]
    assert more.summary["requests_this_run"] == len(new) >= 2 and not set(new) & stored
    pd.testing.assert_frame_equal(more.rows.head(20), result.rows)


@pytest.mark.slow  # starts Ray
def test_resume_after_a_torn_store_asks_only_for_the_missing_calls(
        ray_local, fake_openai, llm_cfg, examples, val_texts, tmp_path):
    server = fake_openai(rows_per_reply=5)
    cfg = llm_cfg(server.base_url, n_rows=30)
    generate(cfg, examples, val_texts, tmp_path)
    assert sorted(stored_ids(tmp_path)) == list(range(6))
    lines = open(tmp_path / "responses.jsonl").readlines()
    kept = lines[:3]
    with open(tmp_path / "responses.jsonl", "w") as f:
        f.writelines(kept)
        f.write(lines[3][:40])  # killed mid-write
    before = len(server.arrivals)
    result = generate(cfg, examples, val_texts, tmp_path)
    missing = sorted(set(range(6)) - {json.loads(line)["request_id"] for line in kept})
    assert sorted(served_ids(server)[before:]) == missing
    assert result.summary["resumed_from"] == 3 and result.summary["requests_this_run"] == 3
    assert sorted(stored_ids(tmp_path)) == list(range(6))


def _actor_pids(title: bytes = b"ray::LLMGenerator") -> list[int]:
    """Actor processes with this title that descend from this test process (and only those)."""
    me, pids = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:
            continue
        if not cmdline.startswith(title):
            continue
        pid = int(entry)
        while pid > 1:  # walk up the parents
            try:
                pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                break
            if pid == me:
                pids.append(int(entry))
                break
    return pids


@pytest.mark.slow  # starts Ray
def test_an_actor_killed_during_a_call_is_replaced_and_its_call_asked_again(
        ray_local, fake_openai, llm_cfg, examples, val_texts, tmp_path):
    def kill_the_caller(number, request):
        if number == 1:  # the second call: the only actor is now waiting for this reply
            (pid,) = _actor_pids()
            os.kill(pid, signal.SIGKILL)
            return Reply(delay=1.0)  # answered to a dead socket: paid for, lost with the actor
        return None

    server = fake_openai(responder=kill_the_caller, rows_per_reply=5)
    result = generate(llm_cfg(server.base_url, n_rows=20, concurrency=1, max_cost_usd=1.0), examples, val_texts,
                      tmp_path)
    assert result.summary["actor_restarts"] == 1 and result.summary["complete"]
    # The dead actor's reservation was released as spent (its call may have been billed), so
    # nothing is left in flight for a waiting call to wait on.
    money = result.summary["budget"]
    assert money["reserved_usd"] == 0 and money["spent_usd"] > result.summary["cost_usd"]
    calls = served_ids(server)
    assert calls == [0, 1, 1, 2, 3]  # call 1 once more, nothing else repeated
    assert sorted(stored_ids(tmp_path)) == [0, 1, 2, 3]


@pytest.mark.slow  # starts Ray
def test_a_fatal_error_stops_the_run_in_one_line_and_keeps_what_was_paid(
        ray_local, fake_openai, llm_cfg, examples, val_texts, tmp_path):
    server = fake_openai(script=[Reply()],
                         default=Reply(status=401, body='{"error": {"message": "Incorrect API key provided"}}'))
    with pytest.raises(GenerationError) as info:
        generate(llm_cfg(server.base_url, concurrency=1), examples, val_texts, tmp_path)
    message = str(info.value)
    assert message == (f"HTTP 401 from {server.base_url}: Incorrect API key provided "
                       f"(1 paid replies are safe in {tmp_path / 'responses.jsonl'})")
    assert stored_ids(tmp_path) == [0]


@pytest.mark.slow  # starts Ray
def test_a_dead_limiter_ends_the_run_in_one_line(ray_local, fake_openai, llm_cfg, examples, val_texts, tmp_path):
    def kill_the_limiter(number, request):
        if number == 0:
            (pid,) = _actor_pids(b"ray::LLMRateLimiter")
            os.kill(pid, signal.SIGKILL)
        return None

    server = fake_openai(responder=kill_the_limiter, rows_per_reply=5)
    with pytest.raises(GenerationError, match=r"^call 0 failed: the shared rate limiter actor died; rerun to resume "
                                              r"from the store \(0 paid replies are safe in .*responses.jsonl\)$"):
        generate(llm_cfg(server.base_url, concurrency=1), examples, val_texts, tmp_path)
    assert len(server.arrivals) == 1


@pytest.mark.slow  # starts Ray
def test_calls_that_keep_failing_end_the_run_with_what_to_do(
        ray_local, fake_openai, llm_cfg, examples, val_texts, tmp_path):
    server = fake_openai(default=Reply(status=503))
    with pytest.raises(GenerationError, match=r"^4 of 4 call\(s\) failed, e.g. call \d: gave up after 2 attempts; "
                                              r"last: HTTP 503 .*; rerun to ask for them again \(0 replies kept in"):
        generate(llm_cfg(server.base_url, retries=1), examples, val_texts, tmp_path)


@pytest.mark.slow  # starts Ray
def test_a_model_that_gives_nothing_usable_is_not_asked_forever(
        ray_local, fake_openai, llm_cfg, examples, val_texts, tmp_path):
    server = fake_openai(default=Reply(content="I am a language model and cannot do that."))
    result = generate(llm_cfg(server.base_url, n_rows=20), examples, val_texts, tmp_path)
    assert len(server.arrivals) == 4  # the first round only: 20 rows / 5 per call
    assert result.summary["complete"] is False and result.summary["rows_kept"] == 0
    assert result.summary["parse_failures"] == {"not_json": 4}


def test_a_store_made_for_another_config_is_refused_before_any_call(fake_openai, llm_cfg, examples, val_texts, tmp_path):
    server = fake_openai()
    setup = {"model": "fake-model", "samples_per_call": 100, "few_shot": "fixed"}
    (tmp_path / "responses.jsonl").write_text(json.dumps({"request_id": 0, "setup": setup}) + "\n")
    with pytest.raises(GenerationError, match=r"responses.jsonl: holds responses made with class_names=None \(the config "
                                              r"says \['very negative', .*\]\), .*samples_per_call=100 \(the config says 5\), "
                                              r".*; use another output directory or restore the config$"):
        generate(llm_cfg(server.base_url), examples, val_texts, tmp_path)
    assert server.arrivals == []


@pytest.mark.slow  # starts Ray
def test_several_actors_stay_within_the_shared_limits(ray_local, fake_openai, llm_cfg, examples, val_texts, tmp_path):
    server = fake_openai(requests_per_minute=300, burst_seconds=1, rows_per_reply=5, default=Reply(delay=0.05))
    cfg = llm_cfg(server.base_url, n_rows=60, concurrency=4,
                  limits={"requests_per_minute": 300, "tokens_per_minute": 0, "burst_seconds": 1})
    result = generate(cfg, examples, val_texts, tmp_path)
    assert result.summary["complete"] and server.violations == {"requests": 0, "tokens": 0}
    times = [a["t"] for a in server.arrivals]
    assert times[-1] - times[0] >= (12 - 4.85) / 4.85  # 4.85 calls at once, then 4.85 per second


@pytest.mark.slow  # starts Ray
def test_several_actors_share_one_budget_spend_it_to_90_percent_never_past_it_and_keep_every_paid_reply(
        ray_local, fake_openai, llm_cfg, examples, val_texts, tmp_path):
    # The shape on the actor path (BudgetActor): a worst case of about half the cap
    # (max_tokens 4096) and replies of a tenth of it. Reserving worst cases stopped after one call.
    server = fake_openai(rows_per_reply=5, default=Reply(delay=0.05))
    cap = 1.0
    cfg = llm_cfg(server.base_url, n_rows=400, concurrency=4, max_tokens=4096, max_cost_usd=cap,
                  prices={"fake-model": {"prompt": 100.0, "completion": 100.0}})
    said: list[str] = []
    s = generate(cfg, examples, val_texts, tmp_path, say=said.append).summary
    billed = sum(a["tokens"] for a in server.served()) * 100.0 / 1e6  # the same price for both: tokens x price
    assert s["stopped"] == "budget" and not s["complete"]
    assert 0.9 * cap <= billed <= cap and s["cost_usd"] == pytest.approx(billed)
    assert s["budget"]["sized_down"] > 0 and s["budget"]["stop"]["need_usd"] > cap - s["budget"]["spent_usd"]
    assert sorted(stored_ids(tmp_path)) == sorted(served_ids(server))  # every paid reply is kept
    assert re.search(rf"; stopped at llm.max_cost_usd \(\$1\): \${s['cost_usd']:.4f} spent, at most \$0\.\d+ reserved "
                     r"at once by the calls in flight; the next call needs \$0\.\d+ \(its prompt and a \d+-token "
                     r"reply: 1.25 x the longest reply so far, \d+ tokens\) and \$0\.\d+ is left; the LLM pools run "
                     r"with these rows$", said[-1]), said[-1]
    # Again under the same cap: the cap covers the directory, earlier runs included, and the
    # stored replies size the first call: at most what is left is spent, never past the cap.
    again = generate(cfg, examples, val_texts, tmp_path).summary
    assert again["stopped"] == "budget" and again["rows_kept"] >= s["rows_kept"]
    assert sum(a["tokens"] for a in server.served()) * 100.0 / 1e6 <= cap


DRIVER = textwrap.dedent("""
    import json, sys
    import pandas as pd
    from raysweep.llm.config import load_llm_config
    from raysweep.llm.generate import generate
    cfg = load_llm_config(json.loads(sys.argv[1]))
    examples = pd.DataFrame({"text": [f"a film , take {k} ." for k in range(10)], "label": [k % 5 for k in range(10)]})
    try:
        generate(cfg, examples, [], sys.argv[2])
    except KeyboardInterrupt:
        sys.exit(130)
""")


def _start_driver(tmp_path, cfg: dict) -> subprocess.Popen:
    """A generate() run in its own process and session, with its own local Ray, as from a shell."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    out = tmp_path / "out"
    return subprocess.Popen([sys.executable, str(script), json.dumps(cfg), str(out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_as_a_shell_starts_it)


def _as_a_shell_starts_it() -> None:
    """SIGINT delivered and handled by default, as a shell starts a foreground command: whatever
    this test process inherited or was left with (Ray Tune, for one, installs a SIGINT handler of
    its own in the process that ran a sweep and leaves it there)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _wait_for_records(path, n: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and len(path.read_text().splitlines()) >= n):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "the driver stored nothing"
        time.sleep(0.1)


def _end_session(proc: subprocess.Popen) -> None:
    """Stop what the driver started (its Ray included): every process in its session, by pid."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == proc.pid:
                    os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.mark.slow  # a second Python with its own Ray: ~10 s idle, a minute on a busy 2-core machine
def test_ctrl_c_stores_the_calls_in_flight(fake_openai, tmp_path):
    server = fake_openai(default=Reply(delay=1.0), rows_per_reply=5)
    # 40 calls of 1 s, 3 at a time: still running when the interrupt comes, however late a busy
    # machine lets this test see the fourth record.
    cfg = {"base_url": server.base_url, "api_key_env": "none", "model": "m", "n_rows": 200, "samples_per_call": 5, "concurrency": 3}
    proc = _start_driver(tmp_path, cfg)
    store = tmp_path / "out" / "responses.jsonl"
    try:
        _wait_for_records(store, 4, proc)
        at_kill = len(store.read_text().splitlines())
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        code = proc.wait(timeout=60)
        assert code == 130, (code, at_kill, len(store.read_text().splitlines()), proc.stderr.read()[-3000:])
    finally:
        _end_session(proc)
    # Nothing paid for is lost: every reply the server sent is in the store.
    assert sorted(served_ids(server)) == sorted(stored_ids(tmp_path / "out"))
    assert len(served_ids(server)) < 40


@pytest.mark.slow  # a second Python with its own Ray
def test_a_killed_driver_loses_at_most_its_calls_in_flight_and_a_rerun_asks_only_for_the_rest(
        ray_local, fake_openai, llm_cfg, examples, tmp_path):
    server = fake_openai(default=Reply(delay=0.5), rows_per_reply=5)
    cfg = {"base_url": server.base_url, "api_key_env": "none", "model": "fake-model", "n_rows": 40, "samples_per_call": 5,
           "concurrency": 2, "prices": {"fake-model": {"prompt": 1.0, "completion": 2.0}}}
    proc = _start_driver(tmp_path, cfg)
    store = tmp_path / "out" / "responses.jsonl"
    try:
        _wait_for_records(store, 3, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _end_session(proc)
    before = set(stored_ids(tmp_path / "out"))
    lost = [c for c in served_ids(server) if c not in before]
    assert len(lost) <= 2  # at most the concurrency: replies on their way when the driver died
    served_before = len(server.served())

    examples_ = pd.DataFrame({"text": [f"a film , take {k} ." for k in range(10)], "label": [k % 5 for k in range(10)]})
    result = generate(llm_cfg(server.base_url, n_rows=40, concurrency=2), examples_, [], tmp_path / "out")
    asked_again = served_ids(server)[served_before:]
    assert not set(asked_again) & before  # nothing stored is asked for twice
    assert sorted(stored_ids(tmp_path / "out")) == list(range(8)) and result.summary["complete"]


@pytest.mark.slow  # starts Ray
def test_dedup_by_meaning_runs_in_small_rounds_and_asks_for_what_it_removed(
        ray_local, fake_openai, llm_cfg, examples, val_texts, tmp_path):
    import numpy as np

    # Sentence vectors by first word, in 40 directions: rows with words in common only by chance
    # (Jaccard keeps them) often "mean" the same here, so dedup by meaning removes them.
    def embed(texts):
        out = np.zeros((len(texts), 40))
        out[np.arange(len(texts)), [sum(map(ord, t.split()[0])) % 40 for t in texts]] = 1.0
        return out

    server = fake_openai(rows_per_reply=5)
    cfg = llm_cfg(server.base_url, n_rows=12, cosine_duplicate=0.9, dedup_calls=1, concurrency=1, max_requests=12)
    result = generate(cfg, examples, val_texts, tmp_path, embed=embed)
    removed = pd.read_csv(tmp_path / "removed.csv")
    same = removed[removed["reason"] == "same_meaning"]
    assert len(same) > 0 and (same["similarity"] >= 0.9).all()
    assert result.summary["duplicates_removed"]["meaning"] == len(same)
    # Kept rows all mean different things; the calls it took are what dedup left to fill.
    firsts = [sum(map(ord, t.split()[0])) % 40 for t in result.rows["text"]]
    assert len(set(firsts)) == len(firsts) == 12
    assert result.summary["requests"] > 3  # 12 rows of 5 per call would take 3 without dedup
    with pytest.raises(ValueError, match="cosine_duplicate needs"):
        generate(cfg, examples, val_texts, tmp_path / "x")
