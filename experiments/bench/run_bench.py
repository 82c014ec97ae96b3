"""Side-by-side benchmark: deberta-jax vs transformers (PyTorch) vs keras-hub (JAX). Same as `deberta-jax bench`.

Example (CPU, the measurement in README.md):
    python experiments/bench/run_bench.py --models deberta-v3-xsmall --seq-lens 128 --batch 8 \
        --workloads forward,train --impls reference,skew,chunked --reps 5
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src"))

from deberta_jax.benchmarking.options import add_arguments, configure_environment  # noqa: E402

# Before any framework starts: keras on the JAX backend, JAX not grabbing 75% of a GPU that torch shares, a cold
# torch.compile cache.
configure_environment()


def main(argv=None) -> int:
    parser = add_arguments(argparse.ArgumentParser(description=__doc__,
                                                   formatter_class=argparse.RawDescriptionHelpFormatter))
    from deberta_jax.benchmarking.harness import run_from_args

    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
