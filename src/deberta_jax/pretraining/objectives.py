"""Loss functions `(params, batch, rng) -> (loss, metrics)` for each pretraining objective.

Batches (see data/masking.py) hold `input_ids` (masked), `original_ids`, `attention_mask`, `masked_positions`,
`masked_labels`, `masked_weights` and, for MLM, `unchanged`.
"""

from __future__ import annotations

import jax

from deberta_jax.pretraining.emd import DebertaForMLMPretraining
from deberta_jax.pretraining.losses import masked_lm_loss, replace_tokens, rtd_loss, sample_replacements
from deberta_jax.pretraining.rtd import ReplacedTokenDetection


def mlm_loss_fn(model: DebertaForMLMPretraining):
    def loss_fn(params, batch, rng):
        out = model.apply({"params": params}, batch["input_ids"], attention_mask=batch["attention_mask"],
                          deterministic=False, masked_positions=batch["masked_positions"], padded_vocab=True,
                          unchanged=batch.get("unchanged"), rngs={"dropout": rng})
        loss, accuracy = masked_lm_loss(out.logits, batch["masked_labels"], batch["masked_weights"])
        return loss, {"loss": loss, "mlm_loss": loss, "mlm_accuracy": accuracy}

    return loss_fn


def rtd_loss_fn(model: ReplacedTokenDetection, rtd_weight: float = 50.0, temperature: float = 1.0):
    """L = L_MLM(generator) + rtd_weight * L_RTD(discriminator)."""

    def loss_fn(params, batch, rng):
        gen_rng, sample_rng, disc_rng = jax.random.split(rng, 3)
        variables = {"params": params}
        gen_logits = model.apply(variables, batch["input_ids"], batch["attention_mask"], batch["masked_positions"],
                                 deterministic=False, method=model.generator_logits, rngs={"dropout": gen_rng})
        mlm, mlm_accuracy = masked_lm_loss(gen_logits, batch["masked_labels"], batch["masked_weights"])
        samples = sample_replacements(sample_rng, gen_logits, temperature, model.generator_config.vocab_size)
        disc_ids, labels = replace_tokens(batch["original_ids"], batch["masked_positions"], samples,
                                          batch["masked_weights"])
        disc_logits = model.apply(variables, disc_ids, batch["attention_mask"], deterministic=False,
                                  method=model.discriminator_logits, rngs={"dropout": disc_rng})
        rtd, rtd_accuracy = rtd_loss(disc_logits, labels, batch["attention_mask"])
        loss = mlm + rtd_weight * rtd
        replaced = labels.sum() / labels.size
        return loss, {"loss": loss, "mlm_loss": mlm, "mlm_accuracy": mlm_accuracy, "rtd_loss": rtd,
                      "rtd_accuracy": rtd_accuracy, "replaced_fraction": replaced}

    return loss_fn
