"""Side-by-side benchmarks of deberta-jax against transformers (PyTorch) and keras-hub (JAX backend).

`python -m benchmarks [options]` (from the repository root; not installed with deberta_jax) times, in one run, on
the same config, shapes, inputs and weights: our model under jax.jit for each requested attention_impl with and
without scan_layers, transformers eager and under torch.compile, and keras-hub on the JAX backend; for the backbone
forward and a full MLM train step with AdamW. See experiments/bench/README.md for what each number means.

Modules: options (the command line, no heavy imports), cases (configs, inputs, shared weights), runners (one module
per implementation family), harness (the interleaved measurement), flops (the closed-form FLOP count), device_peaks
(datasheet peaks for MFU), memory_probe (peak memory in a child process), extras (compile-only measurements),
report (tables, ratios, plots, the JSON), machine (what the result was measured on).
"""
