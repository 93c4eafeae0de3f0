"""Where an LLM key goes: only to the endpoint it belongs to, read where the calls are made and
never handed to Ray (which writes runtime environments and task arguments to its records), and
the one line that says, before the first call, which host gets the calls and why."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from raysweep.config import ConfigError
from raysweep.llm.client import Generator
from raysweep.llm.config import ApiKeyError, KeyRoute, load_llm_config
from raysweep.llm.generate import GenerationError, choose_endpoint, generate
from raysweep.llm.limiter import RateLimiter

SENTINEL = "sk-raysweep-sentinel-" + "5eed" * 8  # the key of the endpoint a sweep names
OTHER = "sk-openai-sentinel-" + "0a1b" * 8  # an OpenAI key that must go nowhere but OpenAI
AWS_SECRET = "aws-secret-sentinel-" + "c0de" * 5  # Ray Tune copies AWS_* keys into the runtime_envs it logs
MESSAGES = [{"role": "user", "content": "Generate 5 samples as a JSON list of [sentence, label] pairs."}]


@pytest.fixture
def env(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RAYSWEEP_TEST_KEY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --------------------------------------------------------------------------- the config


def test_a_base_url_must_name_its_key_or_say_it_needs_none():
    with pytest.raises(ConfigError) as info:
        load_llm_config({"base_url": "http://10.0.0.1:8000/v1"})
    assert str(info.value) == ("llm.base_url: say which variable holds the key for 10.0.0.1:8000 (api_key_env: NAME), "
                               "or that it needs none (api_key_env: none); OPENAI_API_KEY is sent to OpenAI only")
    assert load_llm_config({"base_url": "http://10.0.0.1:8000/v1", "api_key_env": "none"}).key_route() is None
    assert load_llm_config({"base_url": "http://10.0.0.1:8000/v1", "api_key_env": "MY_KEY"}).key_route() == KeyRoute(env="MY_KEY")
    assert load_llm_config({}).key_route() == KeyRoute(env="OPENAI_API_KEY")
    assert load_llm_config({"api_key_file": "~/k"}).key_route() == KeyRoute(file="~/k")
    # The file wins: `--set llm.api_key_file=...` on a sweep file that names a variable.
    assert load_llm_config({"api_key_env": "K", "api_key_file": "~/k"}).key_route() == KeyRoute(file="~/k")


@pytest.mark.parametrize("data, message", [
    ({"base_url": f"http://user:{SENTINEL}@10.0.0.1/v1", "api_key_env": "none"}, "llm.base_url: holds a credential"),
    ({"base_url": f"https://x.example/v1?api-key={SENTINEL}", "api_key_env": "none"}, "llm.base_url: holds a credential"),
    ({"api_key_env": SENTINEL}, "llm.api_key_env: is not an environment variable name"),
])
def test_a_credential_in_the_config_is_refused(data, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_llm_config(data)
    assert SENTINEL not in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- where the calls go


def test_each_endpoint_and_the_line_naming_it(env, tmp_path):
    embedded = choose_endpoint(load_llm_config({}))
    assert embedded.kind == "embedded" and embedded.key is None
    assert replace(embedded, base_url="http://127.0.0.1:5555/v1").line() == (
        "llm: calls go to 127.0.0.1:5555 (the embedded SmolLM2-135M-Instruct server: "
        "no llm.base_url and no key in $OPENAI_API_KEY)")

    # The default variable's key goes to OpenAI's own URL, whatever $OPENAI_BASE_URL says.
    env.setenv("OPENAI_API_KEY", OTHER)
    env.setenv("OPENAI_BASE_URL", "http://collector.example/v1")
    api = choose_endpoint(load_llm_config({}))
    assert (api.kind, api.base_url, api.key) == ("api", "https://api.openai.com/v1", KeyRoute(env="OPENAI_API_KEY"))
    assert api.line() == "llm: calls go to api.openai.com (OpenAI: a key is in $OPENAI_API_KEY)"

    named = load_llm_config({"base_url": "http://10.0.0.1:8000/v1", "api_key_env": "RAYSWEEP_TEST_KEY"})
    with pytest.raises(GenerationError, match=r"^llm.api_key_env: RAYSWEEP_TEST_KEY is not set, and it holds the key "
                                              r"for 10.0.0.1:8000 \(api_key_env: none if that server needs no key\)$"):
        choose_endpoint(named)
    env.setenv("RAYSWEEP_TEST_KEY", SENTINEL)
    assert choose_endpoint(named).line() == "llm: calls go to 10.0.0.1:8000 (llm.base_url is given; key from $RAYSWEEP_TEST_KEY)"
    keyless = choose_endpoint(load_llm_config({"base_url": "http://10.0.0.1:8000/v1", "api_key_env": "none"}))
    assert keyless.key is None and keyless.line() == "llm: calls go to 10.0.0.1:8000 (llm.base_url is given; no key sent)"

    key_file = tmp_path / "openai.key"
    key_file.write_text(SENTINEL + "\n")
    key_file.chmod(0o600)
    env.delenv("OPENAI_API_KEY")
    from_file = choose_endpoint(load_llm_config({"api_key_file": str(key_file)}))
    assert from_file.kind == "api" and from_file.line() == f"llm: calls go to api.openai.com (OpenAI: a key is in the file {key_file})"


def test_a_key_file_others_can_read_or_that_is_missing_or_empty_is_one_line(tmp_path):
    key_file = tmp_path / "openai.key"
    route = KeyRoute(file=str(key_file))
    with pytest.raises(ApiKeyError, match=r"^llm.api_key_file .*openai.key: cannot read it on .* \(No such file or directory\)$"):
        route.read()
    key_file.write_text(SENTINEL)
    key_file.chmod(0o644)
    with pytest.raises(ApiKeyError, match=r"others may read it \(mode -rw-r--r--\); chmod 600 ") as info:
        route.read()
    assert SENTINEL not in str(info.value)
    key_file.chmod(0o600)
    assert route.read() == SENTINEL
    key_file.write_text("\n")
    with pytest.raises(ApiKeyError, match="the file is empty"):
        route.read()


# --------------------------------------------------------------------------- what the generator sends


def _generator(url: str, key: KeyRoute | None) -> Generator:
    return Generator(url, "fake-model", {"temperature": 1.0, "max_tokens": 200}, key, RateLimiter(0, 0),
                     timeout=5.0, retries=0, retry_backoff=0.01)


def test_a_key_goes_only_to_the_endpoint_it_is_named_for(env, fake_openai):
    server = fake_openai(rows_per_reply=5)
    env.setenv("OPENAI_API_KEY", OTHER)
    env.setenv("RAYSWEEP_TEST_KEY", SENTINEL)
    assert "error" not in _generator(server.base_url, KeyRoute(env="RAYSWEEP_TEST_KEY")).call(0, MESSAGES, seed=0)
    # A server that needs no key gets a placeholder, never the OpenAI key the client would pick up itself.
    assert "error" not in _generator(server.base_url, None).call(1, MESSAGES, seed=0)
    assert [a["authorization"] for a in server.arrivals] == [f"Bearer {SENTINEL}", "Bearer no-key"]


def test_a_key_the_generator_cannot_find_fails_each_call_in_one_line_before_any_request(env, fake_openai):
    server = fake_openai(rows_per_reply=5)
    record = _generator(server.base_url, KeyRoute(env="RAYSWEEP_TEST_KEY")).call(0, MESSAGES, seed=0)
    assert record["fatal"] and record["error"].startswith("no key in $RAYSWEEP_TEST_KEY on ")
    assert "llm.api_key_file" in record["error"] and "\n" not in record["error"]
    assert server.arrivals == []


@pytest.mark.slow  # starts a local Ray
def test_the_key_does_not_travel_through_ray(ray_local, env, fake_openai, llm_cfg, examples, val_texts, tmp_path):
    """The session's Ray started before the key was set, so its workers lack it; the key is not
    shipped to them either (it was, in a runtime_env that Ray logs), so every call stops at once."""
    server = fake_openai(rows_per_reply=5)
    env.setenv("RAYSWEEP_TEST_KEY", SENTINEL)
    lines = []
    with pytest.raises(GenerationError, match=r"^no key in \$RAYSWEEP_TEST_KEY on .*, where a generator actor runs") as info:
        generate(llm_cfg(server.base_url, api_key_env="RAYSWEEP_TEST_KEY", concurrency=1), examples, val_texts,
                 tmp_path, say=lines.append)
    assert SENTINEL not in str(info.value) and server.arrivals == []
    assert lines == [f"llm: calls go to {server.base_url.split('/')[2]} (llm.base_url is given; key from $RAYSWEEP_TEST_KEY)"]


# --------------------------------------------------------------------------- a whole local sweep, searched


def _holding(root: Path, secrets: list[bytes]) -> list[str]:
    """Files under `root` that contain any of `secrets` (symlinks not followed)."""
    found = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            try:
                data = p.read_bytes()
            except OSError:  # a socket or a file gone since the listing
                continue
            if any(s in data for s in secrets):
                found.append(str(p.relative_to(root)))
    return found


@pytest.mark.slow  # its own Python and Ray (a fresh session directory to search): ~1-2 min on 2 busy cores
def test_a_local_sweep_with_an_llm_pool_leaves_the_keys_nowhere(fake_openai, sst5_subset, tiny_bert, tmp_path):
    server = fake_openai(rows_per_reply=5)
    # A short path: Ray's socket names under it must stay under 107 characters.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs-keys-", dir="/tmp"))
    cwd, parent = tmp_path / "cwd", tmp_path / "runs"
    cwd.mkdir()
    parent.mkdir()
    sweep = tmp_path / "keys.yaml"
    sweep.write_text(f"""
name: keys
compare: {{pool: [real, llm], strategy: [random], fraction: [1], freeze: [last-linear]}}
replicate: {{seed: [0]}}
data: {{path: {sst5_subset}}}
encoder: {{name: {tiny_bert}}}
recipe: {{epochs: 1}}
llm: {{base_url: {server.base_url}, api_key_env: RAYSWEEP_SENTINEL_KEY, model: fake-model, n_rows: 10,
       samples_per_call: 5, concurrency: 1, retry_backoff: 0.01, timeout: 30}}
teacher: {{freeze: last-linear, epochs: 1}}
""")
    env = dict(os.environ, RAYSWEEP_SENTINEL_KEY=SENTINEL, OPENAI_API_KEY=OTHER, RAY_TMPDIR=str(ray_tmp),
               RAYSWEEP_HOME=str(tmp_path / "home"), AWS_SECRET_ACCESS_KEY=AWS_SECRET)
    try:
        proc = subprocess.run([sys.executable, "-m", "raysweep.cli", "run", str(sweep), "--output", str(parent / "out")],
                              cwd=cwd, env=env, capture_output=True, timeout=900)
        printed = proc.stdout + proc.stderr
        assert proc.returncode == 0, printed.decode(errors="replace")[-3000:]
        host = server.base_url.split("/")[2]
        assert f"llm: calls go to {host} (llm.base_url is given; key from $RAYSWEEP_SENTINEL_KEY)".encode() in printed
        # The key reached the server it is named for, in the header only; the OpenAI key went nowhere.
        assert server.served() and {a["authorization"] for a in server.arrivals} == {f"Bearer {SENTINEL}"}
        secrets = [SENTINEL.encode(), OTHER.encode(), AWS_SECRET.encode()]
        assert not any(s in printed for s in secrets)
        out = parent / "out"
        assert (out / "generation" / "responses.jsonl").stat().st_size > 0 and any((out / "cache").iterdir())
        # The output holds the cache and the generation directory here; Ray's whole temp dir, every session.
        assert _holding(out, secrets) == []
        assert [p.name for p in ray_tmp.iterdir()] and _holding(ray_tmp, secrets) == []
        # Nothing written beside the output or into the working directory.
        assert [p.name for p in parent.iterdir()] == ["out"] and list(cwd.iterdir()) == []
    finally:
        _stop_leftovers(ray_tmp)


def _stop_leftovers(ray_tmp: Path) -> None:
    """Ray processes the run left behind (a driver's agents can outlive it): only those whose
    command line names this test's own temp dir, each by its PID."""
    import shutil
    import signal

    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if str(ray_tmp).encode() in cmdline:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except ProcessLookupError:
                pass
    shutil.rmtree(ray_tmp, ignore_errors=True)
