"""Every activation name a config can carry, against transformers' ACT2FN on the same fp32 inputs."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.activations import ACT2FN

from deberta_jax.activations import ACTIVATIONS

pytestmark = pytest.mark.reference

# Wide enough to reach the saturated tails (where a 1 + erf form cancels) and dense around 0.
INPUTS = np.concatenate([np.linspace(-12.0, 12.0, 4001), np.random.RandomState(0).randn(4096) * 3]).astype(np.float32)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_transformers(name):
    mine = np.asarray(ACTIVATIONS[name](jnp.asarray(INPUTS)))
    reference = ACT2FN[name](torch.from_numpy(INPUTS)).numpy()
    # 4e-6 is about 4 fp32 ulps at |x| = 12; the tanh approximation of gelu is off by up to 5e-4.
    np.testing.assert_allclose(mine, reference, rtol=0, atol=4e-6)
