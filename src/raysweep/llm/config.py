"""The `llm:` section of a sweep file: where generated sentences come from and what they may cost.

Validated like the rest of the sweep (`raysweep.loader.from_dict`): an unknown key or a value of
the wrong type is a one-line `ConfigError` naming the key path (`llm.limits.rpm: unknown key`).

The API key is never part of the config: `api_key_env` names the environment variable that
holds it, or `api_key_file` a file (mode 0600) on the machines that make the calls, so a sweep
file can be committed and shared. With no key and no `base_url`, raysweep starts the embedded
SmolLM2 server itself (see `server.py`).

A key goes only where it belongs: the default variable (OPENAI_API_KEY) only to OpenAI. A
sweep file naming another `base_url` must say which variable or file holds that endpoint's key,
or `api_key_env: none` for a server that needs none: sweep files are shared, and a `base_url`
in someone else's file must not collect your OpenAI key.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from raysweep.errors import RaysweepError, remember_secret
from raysweep.files import regular_file
from raysweep.loader import ConfigError, describe, from_dict, require, url_problem

# The placeholders a prompt template must use (string.Template syntax, so that literal JSON
# braces in a template need no escaping).
TEMPLATE_PLACEHOLDERS = ("$n", "$examples")
EMBEDDED_MODEL = "SmolLM2-135M-Instruct"  # the name the embedded server answers to
CALL_HEADER = "X-Raysweep-Call"  # each call's request_id, sent as a header: for server-side logs and tests
OPENAI_URL = "https://api.openai.com/v1"  # given to the client explicitly: it would else obey $OPENAI_BASE_URL
DEFAULT_KEY_ENV = "OPENAI_API_KEY"  # read when no base_url is given, and then sent to OpenAI only
FEW_SHOT = ("fixed", "per_call")  # llm.few_shot: one example set per run, or one per call (the study's)
NO_KEY = "none"  # `api_key_env: none`: the endpoint (a local server) needs no key


class ApiKeyError(RaysweepError, ValueError):
    """A key that cannot be read where it is needed; the message names the variable or file, never the key."""


@dataclass(frozen=True)
class KeyRoute:
    """Where the endpoint's key is found, by whoever makes the calls, on the machine it runs on.

    The key itself never travels through Ray: a runtime_env's env_vars are written in clear to
    every node's runtime_env_agent.log, and actor arguments to Ray's records. A generator actor
    gets this route and reads the key itself: from its own environment (a local Ray started by
    this process inherits it), or from a file a cluster's `file_mounts` copied to every node.
    """

    env: str | None = None  # an environment variable of the reading process
    file: str | None = None  # a file on the reading machine; "~" is that machine's home

    def __str__(self) -> str:
        return f"the file {self.file}" if self.file else f"${self.env}"

    def read(self) -> str | None:
        """The key, or None when the variable is unset; a key file that is missing, empty or
        readable by others is an ApiKeyError (ssh refuses such a private key for the same reason)."""
        if not self.file:
            return os.environ.get(self.env or "") or None
        path = Path(self.file).expanduser()
        try:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ApiKeyError(f"llm.api_key_file {self.file}: others may read it (mode {stat.filemode(mode)}); "
                                  f"chmod 600 {self.file}")
            regular_file(path, "key", ApiKeyError)  # a FIFO would block, /dev/zero never end
            key = path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError as exc:
            raise ApiKeyError(f"llm.api_key_file {self.file}: cannot read it on {os.uname().nodename} "
                              f"({exc.strerror})") from None
        if not key:
            raise ApiKeyError(f"llm.api_key_file {self.file}: the file is empty")
        if not _KEY_SHAPE.fullmatch(key):
            # The whole file is sent as the key: an ssh key or a .env named here by mistake would
            # go to base_url. A key is one word of printable ASCII; the file's text is not repeated.
            raise ApiKeyError(f"llm.api_key_file {self.file}: does not hold one API key (a single line of printable "
                              "characters without spaces, 8 to 4096 of them); is it the right file?")
        remember_secret(key)  # masked in every line from now on, should a server echo it
        return key


_KEY_SHAPE = re.compile(r"[\x21-\x7e]{8,4096}")


def endpoint_host(url: str) -> str:
    """host[:port] of a URL: what a line may print of it."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


@dataclass
class LimitsConfig:
    """The provider's rate limits, shared by every generator actor through one token bucket."""

    requests_per_minute: float = 500.0  # 0: no request limit
    tokens_per_minute: float = 200_000.0  # prompt + completion tokens; 0: no token limit
    # How much of a minute's budget may go out at once. Providers refill continuously and may
    # enforce the limit over windows shorter than a minute: a small burst avoids their 429s.
    burst_seconds: float = 10.0
    # Run at this fraction of the limits: the provider's clock and rounding are not ours.
    headroom: float = 0.97
    # Calls granted a little apart can reach the provider together when one of them is held up
    # on the way (a busy core, the network). Keeping this many seconds of the limit out of the
    # burst absorbs that: on a 2-core machine at load 20 a 0 here gave 429s, 0.5 none.
    jitter_seconds: float = 0.5

    def validate(self) -> None:
        require(self.requests_per_minute >= 0, "requests_per_minute: must be 0 (no limit) or more")
        require(self.tokens_per_minute >= 0, "tokens_per_minute: must be 0 (no limit) or more")
        require(self.burst_seconds > 0, "burst_seconds: must be positive")
        require(0 < self.headroom <= 1, "headroom: must be in (0, 1]")
        require(0 <= self.jitter_seconds < self.burst_seconds, "jitter_seconds: must be 0 or more and below burst_seconds")


@dataclass
class PriceConfig:
    """Dollars per one million tokens."""

    prompt: float = 0.0
    completion: float = 0.0
    # The share taken off both prices in batch mode (OpenAI's Batch API: 0.5). 0 unless the
    # table says so: a budget must not assume a discount the provider does not give.
    batch_discount: float = 0.0
    # Prompt tokens the provider served from its prompt cache (the reply's
    # usage.prompt_tokens_details.cached_tokens). None: the `prompt` price, for the same reason.
    cached_prompt: float | None = None
    # The shortest prefix the provider caches (OpenAI: 1,024 tokens): a shorter shared prefix is
    # never billed at the cached price, and the estimate counts no saving for it.
    cache_min_tokens: int = 1024

    def validate(self) -> None:
        require(self.prompt >= 0, "prompt: must be 0 or more")
        require(self.completion >= 0, "completion: must be 0 or more")
        require(0 <= self.batch_discount < 1, "batch_discount: must be in [0, 1)")
        require(self.cached_prompt is None or 0 <= self.cached_prompt <= self.prompt,
                "cached_prompt: must be 0 or more and at most the prompt price (a cached token is not dearer)")
        require(self.cache_min_tokens >= 0, "cache_min_tokens: must be 0 or more")

    @property
    def cached(self) -> float:
        """Dollars per 1M cached prompt tokens: `cached_prompt`, else the full prompt price."""
        return self.prompt if self.cached_prompt is None else self.cached_prompt

    def for_mode(self, mode: str) -> "PriceConfig":
        """The prices a call in `mode` ("online" or "batch") is billed at (the batch discount
        taken off the cached price too)."""
        if mode != "batch":
            return self
        keep = 1 - self.batch_discount
        cached = None if self.cached_prompt is None else self.cached_prompt * keep
        return PriceConfig(self.prompt * keep, self.completion * keep, 0.0, cached, self.cache_min_tokens)


def _default_prices() -> dict[str, PriceConfig]:
    # List prices when this table was written; check your provider's page. A `prices:` mapping
    # in the sweep file replaces this whole table.
    return {
        "gpt-4o-mini": PriceConfig(prompt=0.15, completion=0.60, batch_discount=0.5, cached_prompt=0.075),
        "gpt-4o": PriceConfig(prompt=2.50, completion=10.00, batch_discount=0.5, cached_prompt=1.25),
        "gpt-3.5-turbo": PriceConfig(prompt=0.50, completion=1.50, batch_discount=0.5),
        EMBEDDED_MODEL: PriceConfig(prompt=0.0, completion=0.0),
    }


@dataclass
class EmbeddedConfig:
    """The no-key default: llama.cpp's server with SmolLM2-135M-Instruct on this machine."""

    n_ctx: int = 2048  # SmolLM2's context; prompt + reply must fit in it
    # 1, not 2: on a 2-core machine busy with trials, llama.cpp with 2 threads fell from ~65 to
    # 1.4 tokens/s (its threads spin-wait for each other); 1 thread kept ~17 tokens/s.
    n_threads: int = 1
    # SmolLM2 writes ~65 tokens/s on 2 CPU cores and has a 2048-token context, so the study's
    # 100 samples per call cannot fit: these replace samples_per_call and max_tokens when embedded.
    samples_per_call: int = 20
    max_tokens: int = 1024
    startup_timeout: float = 60.0  # seconds to wait for the server to answer
    # Seconds for one call (replaces `timeout` when embedded). llama.cpp's server answers one
    # call at a time and finishes a call its client gave up on, so a timeout that fires only
    # queues the retry behind the abandoned call. On 2 busy cores SmolLM2 fell to ~2 tokens/s:
    # 1,024 tokens took over 180 s (the hosted default), every call timed out, nothing was kept.
    timeout: float = 1800.0

    def validate(self) -> None:
        require(self.n_ctx >= 256, "n_ctx: must be at least 256")
        require(self.n_threads >= 1, "n_threads: must be at least 1")
        require(self.samples_per_call >= 1, "samples_per_call: must be at least 1")
        require(1 <= self.max_tokens < self.n_ctx, "max_tokens: must be at least 1 and below n_ctx")
        require(self.startup_timeout > 0, "startup_timeout: must be positive")
        require(self.timeout > 0, "timeout: must be positive")


MODES = ("online", "batch")


@dataclass
class BatchConfig:
    """`mode: batch`: the provider's Batch API (half the price at OpenAI, results within a day)."""

    poll_interval: float = 30.0  # seconds between status checks of a submitted batch
    completion_window: str = "24h"  # the only window OpenAI offers
    # Requests of a batch that failed or expired are asked again in a new batch, at most this
    # many times each run: a provider that keeps failing them is not asked forever.
    resubmits: int = 2
    max_requests_per_batch: int = 50_000  # OpenAI's limit per batch file

    def validate(self) -> None:
        require(self.poll_interval > 0, "poll_interval: must be positive")
        require(bool(self.completion_window.strip()), "completion_window: must not be empty")
        require(self.resubmits >= 0, "resubmits: must be 0 or more")
        require(self.max_requests_per_batch >= 1, "max_requests_per_batch: must be at least 1")


@dataclass
class AnnotateConfig:
    """The `llm_annotated` pool: the LLM labels the real rows the sweep's strategies choose
    (llm/annotate.py). The calls share the endpoint, limits, prices and retries of generation."""

    rows_per_call: int = 20  # sentences labeled per call; each also carries the few-shot examples
    examples_per_class: int = 3  # real labeled rows per class shown in each call, as in generation
    temperature: float = 0.0  # a label is an answer, not a sample: the likeliest one
    max_tokens: int = 512  # a JSON list of rows_per_call labels; a chatty model gets room to close it
    # Calls a row may go out in before the run stops: a reply with the wrong number of labels
    # labels none of its rows (they could be shifted), so its rows are asked again in a later call.
    attempts: int = 3
    max_requests: int = 0  # cap on paid labeling calls; 0: `attempts` x the calls the rows need

    def validate(self) -> None:
        require(self.rows_per_call >= 1, "rows_per_call: must be at least 1")
        require(self.examples_per_class >= 0, "examples_per_class: must be 0 or more")
        require(0 <= self.temperature <= 2, "temperature: must be in [0, 2]")
        require(self.max_tokens >= 1, "max_tokens: must be at least 1")
        require(self.attempts >= 1, "attempts: must be at least 1")
        require(self.max_requests >= 0, "max_requests: must be 0 (automatic) or more")


@dataclass
class LLMConfig:
    base_url: str | None = None  # any OpenAI-compatible server; None: OpenAI with a key, else embedded
    model: str = "gpt-4o-mini"  # ignored by the embedded server, which serves SmolLM2
    # The variable holding the key; the key never goes in a file. None: OPENAI_API_KEY, sent to
    # OpenAI only, so a `base_url` must name its own variable, or "none" when it needs no key.
    api_key_env: str | None = None
    # A file holding the key (mode 0600), read on each machine that makes calls, instead of
    # api_key_env when given: the route for a cluster, whose nodes get it through cluster.yaml's
    # file_mounts (docs/cluster.md), and `--set` on a sweep file that names a variable.
    api_key_file: str | None = None
    n_rows: int = 1000  # generated rows to keep, after parse failures, duplicates and leaks
    samples_per_call: int = 100  # "generate N samples", as in the study
    examples_per_class: int = 3  # real examples per class shown in each prompt, as in the study
    # fixed: one seeded example set per run, so every call shares its prompt's prefix and pays
    # the cached price for it (llm/prompt.py); per_call: each call its own set, as in the study
    # (more varied prompts, no shared prefix; the prompts of stores made before `few_shot` existed).
    few_shot: str = "fixed"
    # None: the study's prompt. A value containing $n is the template itself; anything else is
    # the path of a file holding it. Placeholders: $n, $examples (JSON), $labels (label meanings).
    template: str | None = None
    temperature: float = 1.0  # high: the point is variety
    max_tokens: int = 4096  # 100 SST-like sentences as JSON pairs take ~3,300 tokens
    concurrency: int = 4  # generator actors, one call in flight each
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    retries: int = 5  # further attempts after a 429, 5xx, timeout or dropped connection
    retry_backoff: float = 1.0  # seconds before the first retry without Retry-After; doubles, max 60
    timeout: float = 180.0  # seconds for one call; a 100-sample reply streams for a minute or more
    max_requests: int = 0  # cap on paid calls; 0: twice what n_rows needs at samples_per_call
    near_duplicate: float = 0.8  # word-set Jaccard at or above which two sentences count as one; 1.0: same words
    # Near-duplicates by meaning, which Jaccard misses in paraphrases: cosine similarity of the
    # sweep's frozen encoder's sentence vectors at or above which a generated sentence counts as
    # one said before (or as a val sentence); None: off. With it, generation asks `dedup_calls`
    # calls at a time, so what dedup removes decides how many more calls are needed.
    cosine_duplicate: float | None = None
    dedup_calls: int = 4
    prices: dict[str, PriceConfig] = field(default_factory=_default_prices)
    # Dollars the generation directory may spend in all (earlier runs included); None: no cap.
    # Each call reserves its worst case first (llm/budget.py), so concurrent calls never pass it.
    max_cost_usd: float | None = None
    # online: calls as they are made (the default); batch: the provider's Batch API (batch.py).
    mode: str = "online"
    batch: BatchConfig = field(default_factory=BatchConfig)
    seed: int = 0  # picks each call's examples and is sent as the call's seed
    embedded: EmbeddedConfig = field(default_factory=EmbeddedConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)  # the llm_annotated pool's labeling calls

    def validate(self) -> None:
        if self.base_url is not None:
            # sweep.yaml records the config, and errors name the URL: a credential in it would leak.
            # Checked first, so that the next message may repeat the URL.
            address, _, query = self.base_url.partition("?")
            secret_option = any(word in name.lower() for name, _ in parse_qsl(query)
                                for word in ("key", "token", "secret", "sig"))
            require("@" not in address and not secret_option,
                   "base_url: holds a credential; put the key in a variable and name it in api_key_env")
        problem = url_problem(self.base_url) if self.base_url is not None else None
        require(problem is None, f"base_url: {describe(self.base_url)} {problem}")
        require(bool(self.model.strip()), "model: must not be empty")
        require(self.api_key_env is None or self.api_key_env.isidentifier(),
               "api_key_env: is not an environment variable name (name the variable that holds the key; "
               "the key itself never goes here, and is not repeated in this message)")
        require(self.api_key_file is None or bool(self.api_key_file.strip()), "api_key_file: must not be empty")
        require(self.base_url is None or self.api_key_env is not None or self.api_key_file is not None,
               f"base_url: say which variable holds the key for {endpoint_host(self.base_url or '')} "
               f"(api_key_env: NAME), or that it needs none (api_key_env: {NO_KEY}); "
               f"{DEFAULT_KEY_ENV} is sent to OpenAI only")
        require(self.n_rows >= 1, "n_rows: must be at least 1")
        require(self.samples_per_call >= 1, "samples_per_call: must be at least 1")
        require(self.examples_per_class >= 0, "examples_per_class: must be 0 or more")
        require(self.few_shot in FEW_SHOT, f"few_shot: {self.few_shot!r} is not one of {', '.join(FEW_SHOT)}")
        require(0 <= self.temperature <= 2, "temperature: must be in [0, 2]")
        require(self.max_tokens >= 1, "max_tokens: must be at least 1")
        require(self.concurrency >= 1, "concurrency: must be at least 1")
        require(self.retries >= 0, "retries: must be 0 or more")
        require(self.retry_backoff >= 0, "retry_backoff: must be 0 or more")
        require(self.timeout > 0, "timeout: must be positive")
        require(self.max_requests >= 0, "max_requests: must be 0 (automatic) or more")
        require(0 < self.near_duplicate <= 1, "near_duplicate: must be in (0, 1]")
        require(self.max_cost_usd is None or self.max_cost_usd > 0, "max_cost_usd: must be positive (or null: no cap)")
        require(self.mode in MODES, f"mode: {self.mode!r} is not one of {', '.join(MODES)}")
        require(self.cosine_duplicate is None or 0 < self.cosine_duplicate <= 1,
               "cosine_duplicate: must be in (0, 1], or null (off)")
        require(self.dedup_calls >= 1, "dedup_calls: must be at least 1")
        require(self.seed >= 0, "seed: must be 0 or more")  # numpy's seed sequence refuses negatives
        if self.template is not None:
            try:
                load_template(self.template)
            except ConfigError as exc:
                raise ConfigError(f"template: {exc}") from None

    def key_route(self) -> KeyRoute | None:
        """Where the endpoint's key is read, or None when it needs none."""
        if self.api_key_file:
            return KeyRoute(file=self.api_key_file)
        if self.api_key_env == NO_KEY:
            return None
        return KeyRoute(env=self.api_key_env or DEFAULT_KEY_ENV)

    def price_for(self, model: str, answered_by: str | None = None) -> PriceConfig | None:
        """The price of a call to `model` in this config's mode (or of the model that answered
        it, when the table names that one instead); None when neither is in `prices`."""
        price = self.prices.get(model) or (self.prices.get(answered_by) if answered_by else None)
        return price.for_mode(self.mode) if price is not None else None

    def examples_call(self, request_id: int) -> int | None:
        """Whose few-shot examples call `request_id` shows: its own (per_call), or the run's (None)."""
        return request_id if self.few_shot == "per_call" else None

    def prompt_setup(self) -> dict:
        """What the prompts' shape adds to a response store's setup: a fixed run's prompts differ
        from the per-call ones stores were made with before, so their replies are not reused.
        Nothing for per_call, so that those stores stay valid."""
        return {"few_shot": self.few_shot} if self.few_shot != "per_call" else {}

    def request_budget(self, samples_per_call: int | None = None) -> int:
        """The most calls this config may pay for."""
        if self.max_requests:
            return self.max_requests
        per_call = samples_per_call or self.samples_per_call
        return 2 * -(-self.n_rows // per_call)


def load_template(value: str) -> str:
    """The template text: `value` itself when it contains $n, else the file it names."""
    if "$n" in value:
        text = value
    else:
        path = Path(value).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path, or a file that is not UTF-8
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise ConfigError(f"{value!r} has no $n, so it names a template file, which cannot be read ({reason})") from None
    for placeholder in TEMPLATE_PLACEHOLDERS:
        if placeholder not in text:
            raise ConfigError(f"the template has no {placeholder} placeholder")
    return text


def load_llm_config(data: dict | None, path: str = "llm") -> LLMConfig:
    """The `llm:` mapping of a sweep file as a validated LLMConfig."""
    return from_dict(LLMConfig, data, path)
