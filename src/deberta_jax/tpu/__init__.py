"""Ahead-of-time compilation for TPU slices on a machine without one: memory fit, roofline and collectives, all
compiler estimates (`deberta-jax compile`)."""
