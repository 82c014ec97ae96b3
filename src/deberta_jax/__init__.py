"""deberta-jax: DeBERTa v1/v2/v3 in JAX/Flax with parity to the PyTorch reference."""

from deberta_jax.config import DebertaConfig, preset  # noqa: F401
from deberta_jax.conversion.hf_checkpoint import load_pretrained, save_pretrained  # noqa: F401
from deberta_jax.model.modeling import build_model, init_params  # noqa: F401

__version__ = "0.1.0"
