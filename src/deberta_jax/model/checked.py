"""An opt-in check of token ids on the device, for jitted code where a host-side check is not at hand.

`model.apply` does not check its ids, and inside jit it could not raise: the embedding gather returns NaN for an
id >= vocab_size, which turns every output of that sequence into NaN, and wraps -1 (or any id in [-vocab_size, 0))
around to the end of the table. `checked_apply` adds a `jax.experimental.checkify` check, which jit can carry:

    apply = jax.jit(checkify.checkify(functools.partial(checked_apply, model)))
    error, outputs = apply({"params": params}, input_ids, attention_mask=mask)
    error.throw()  # checkify.JaxRuntimeError (a ValueError): input_ids holds 130 at [0 5], outside [0, 128) ...

Called eagerly it raises at once. The check costs a compare and a reduction over the ids; the outputs are
`model.apply`'s.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.experimental import checkify


def check_input_ids(input_ids, vocab_size: int) -> None:
    """A checkify check that every id of `input_ids` (int, any shape) is in [0, vocab_size); the error names the
    first offending id and its position."""
    inside = (input_ids >= 0) & (input_ids < vocab_size)
    first = jnp.argmin(inside.ravel())  # the first False, or 0 when all are inside
    checkify.check(jnp.all(inside), f"input_ids holds {{id}} at {{position}}, outside [0, {vocab_size}) (the "
                   "model's vocab_size)", id=input_ids.ravel()[first],
                   position=jnp.stack(jnp.unravel_index(first, input_ids.shape)))


def checked_apply(model, variables, input_ids, *args, **kwargs):
    """`model.apply(variables, input_ids, *args, **kwargs)` after `check_input_ids` against the model's
    `config.vocab_size`; transform it with `checkify.checkify` to use it under jit (see the module docstring)."""
    check_input_ids(input_ids, model.config.vocab_size)
    return model.apply(variables, input_ids, *args, **kwargs)
