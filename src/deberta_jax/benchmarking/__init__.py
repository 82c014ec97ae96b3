"""Side-by-side benchmarks of deberta-jax against transformers (PyTorch) and keras-hub (JAX backend).

`deberta-jax bench [options]` (or `python experiments/bench/run_bench.py [options]`) times, in one run, on the same
config, shapes, inputs and weights: our model under jax.jit for each requested attention_impl with and without
scan_layers, transformers eager and under torch.compile, and keras-hub on the JAX backend; for the backbone forward
and a full MLM train step with AdamW. See experiments/bench/README.md for what each number means.

Modules: options (the command line, no heavy imports), cases (configs, inputs, shared weights), runners (the
implementations), harness (the interleaved measurement), flops (the closed-form FLOP count), memory_probe (peak
memory in a child process), extras (compile-only measurements), report (tables, ratios, plots), machine.

Nothing is imported eagerly here, so the CLI can build its parser without starting any framework.
"""


def run(opts, log=None):
    """Runs a benchmark described by a `BenchOptions`; returns the result dict (also written as JSON)."""
    from deberta_jax.benchmarking.harness import default_log, run as _run

    return _run(opts, log or default_log)
