"""Activation functions by the names HF configs use (`hidden_act`, `pooler_hidden_act`, `conv_act`)."""

import math

import jax
import jax.numpy as jnp
from jax import lax


def _gelu_exact(x):
    # HF's "gelu" is torch's erf form, x/2 · (1 + erf(x/√2)), written the same way here: jax.nn.gelu defaults to
    # the tanh approximation, and its exact variant goes through erfc, which costs more on CPU.
    return x * 0.5 * (1.0 + lax.erf(x * (1.0 / math.sqrt(2.0))))


def _gelu_tanh(x):
    return jax.nn.gelu(x, approximate=True)


def _quick_gelu(x):
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS = {
    "gelu": _gelu_exact,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "quick_gelu": _quick_gelu,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "linear": lambda x: x,
}
