"""LLM-generated training data: prompt, rate-limited generator actors, response store, parsing.

Entry points: `raysweep.llm.generate.generate(cfg, examples, val_texts, out_dir)` and
`raysweep.llm.config.LLMConfig` (the `llm:` section of a sweep file). Nothing is imported
here on purpose: a generator actor imports `raysweep.llm.client` and must not pay for pandas
and scikit-learn on the way.

Modules, in the order data flows through them: config, prompt, limiter and budget (shared by
every call), client (one call), generate (the pool and the run; batch.py for the Batch API,
server.py for the embedded default), store, parse, dedup. estimate.py works out what a run
would cost without calling anything. fake_server.py is a scriptable OpenAI-compatible server
(chat and Batch API) for the tests and the benchmark.
"""
