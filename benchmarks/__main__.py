"""Side-by-side benchmark: deberta-jax vs transformers (PyTorch) vs keras-hub (JAX).

Example (CPU, the measurement in experiments/bench/README.md), from the repository root:
    python -m benchmarks --models deberta-v3-xsmall --seq-lens 128 --batch 8 \
        --workloads forward,train --impls reference,skew,chunked --reps 5
"""

import argparse
import sys

from benchmarks.options import add_arguments, configure_environment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    args = add_arguments(parser).parse_args(argv)
    # Before any framework starts: keras on the JAX backend, JAX not grabbing 75% of a GPU that torch shares, a cold
    # torch.compile cache. The harness imports jax (and its runners torch and keras), so it is imported after.
    configure_environment()
    from benchmarks.harness import run_from_args

    return run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
