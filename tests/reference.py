"""The PyTorch reference side of the parity tests: random `transformers` DeBERTa models and their outputs.

Weights are the reference's own init plus noise on every tensor (biases and LayerNorm parameters included), so a
parameter mapped to the wrong place cannot hide behind a zero or a one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from deberta_jax.conversion.hf_checkpoint import params_to_state_dict, state_dict_to_params
from deberta_jax.config import DebertaConfig
from deberta_jax.model.modeling import build_model
from deberta_jax.model.vocab_padding import unpadded_params

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=128, layer_norm_eps=1e-7, hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1)

# Config families covering every switch that changes the numbers.
FAMILIES = {
    "v1": dict(model_type="deberta", relative_attention=True, max_relative_positions=16, pos_att_type="c2p|p2c",
               position_biased_input=True, type_vocab_size=2),
    "v1_talking_head": dict(model_type="deberta", relative_attention=True, max_relative_positions=-1,
                            pos_att_type="c2p|p2c", position_biased_input=False, talking_head=True),
    "v2_conv_no_share": dict(model_type="deberta-v2", relative_attention=True, position_buckets=8,
                             max_relative_positions=64, norm_rel_ebd="layer_norm", share_att_key=False,
                             pos_att_type="p2c|c2p", position_biased_input=False, conv_kernel_size=3,
                             conv_groups=2, conv_act="gelu", attention_head_size=8),
    "v3": dict(model_type="deberta-v2", relative_attention=True, position_buckets=8, max_relative_positions=64,
               norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type="p2c|c2p", position_biased_input=False),
    "v3_c2p_only": dict(model_type="deberta-v2", relative_attention=True, position_buckets=8,
                        max_relative_positions=64, norm_rel_ebd="layer_norm", share_att_key=True,
                        pos_att_type="c2p", position_biased_input=False),
    "v3_p2c_only": dict(model_type="deberta-v2", relative_attention=True, position_buckets=8,
                        max_relative_positions=64, norm_rel_ebd="layer_norm", share_att_key=False,
                        pos_att_type="p2c", position_biased_input=False),
    "v3_embedding_size": dict(model_type="deberta-v2", relative_attention=True, position_buckets=8,
                              max_relative_positions=64, norm_rel_ebd="layer_norm", share_att_key=True,
                              pos_att_type="p2c|c2p", position_biased_input=False, embedding_size=24),
    "v2_abs_pos_token_types": dict(model_type="deberta-v2", relative_attention=True, max_relative_positions=16,
                                   pos_att_type="c2p|p2c", position_biased_input=True, type_vocab_size=3),
    "no_relative": dict(model_type="deberta-v2", relative_attention=False, position_biased_input=True),
}

HF_CLASSES = {
    ("deberta", None): transformers.DebertaModel,
    ("deberta", "masked_lm"): transformers.DebertaForMaskedLM,
    ("deberta", "sequence_classification"): transformers.DebertaForSequenceClassification,
    ("deberta", "token_classification"): transformers.DebertaForTokenClassification,
    ("deberta", "question_answering"): transformers.DebertaForQuestionAnswering,
    ("deberta-v2", None): transformers.DebertaV2Model,
    ("deberta-v2", "masked_lm"): transformers.DebertaV2ForMaskedLM,
    ("deberta-v2", "sequence_classification"): transformers.DebertaV2ForSequenceClassification,
    ("deberta-v2", "token_classification"): transformers.DebertaV2ForTokenClassification,
    ("deberta-v2", "question_answering"): transformers.DebertaV2ForQuestionAnswering,
    ("deberta-v2", "multiple_choice"): transformers.DebertaV2ForMultipleChoice,
}


def hf_config(family: str, **overrides) -> transformers.PreTrainedConfig:
    kwargs = {**TINY, **FAMILIES[family], **overrides}
    model_type = kwargs.pop("model_type")
    cls = transformers.DebertaConfig if model_type == "deberta" else transformers.DebertaV2Config
    return cls(**kwargs)


def random_hf_model(family: str, head: str | None = None, seed: int = 0, **overrides) -> torch.nn.Module:
    """A reference model in eval mode with noisy weights."""
    config = hf_config(family, **overrides)
    torch.manual_seed(seed)
    model = HF_CLASSES[(config.model_type, head)](config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def jax_twin(hf_model: torch.nn.Module, head: str | None = None, **config_overrides):
    """Our model and params holding the reference model's weights (through the real conversion path)."""
    config = DebertaConfig.from_hf_dict(hf_model.config.to_dict(), **config_overrides)
    model = build_model(config, head)
    state = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    params, report = state_dict_to_params(state, model)
    assert not report.missing and not report.mismatched, report
    return model, params


def padded_batch(vocab: int, batch: int, seq: int, seed: int = 0, type_vocab: int = 0):
    """Token ids, a right-padded 0/1 mask (row b keeps seq - 3b tokens, at least 2) and token types."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, vocab, size=(batch, seq))
    mask = np.ones((batch, seq), np.int64)
    for b in range(batch):
        mask[b, max(2, seq - 3 * b):] = 0
    ids = np.where(mask == 1, ids, 0)
    types = rng.integers(0, max(type_vocab, 1), size=(batch, seq)) if type_vocab else np.zeros_like(ids)
    return ids, mask, types


def to_torch(*arrays):
    return [torch.from_numpy(np.asarray(a)) for a in arrays]


def assert_gradients_match(hf_model, model, params, head: str, seq: int, batch: int = 3, tolerance: float = 1e-4):
    """Gradients of every parameter of a random linear probe of the logits, ours against the reference's.

    Some gradients are zero analytically (e.g. key biases, which shift a whole softmax row); both sides then hold
    float noise, so the relative error's denominator never drops below 1e-3 of the model's largest gradient.
    """
    cfg = hf_model.config
    ids, mask, types = padded_batch(cfg.vocab_size, batch, seq, type_vocab=cfg.type_vocab_size)
    probe_shape = {"sequence_classification": (batch, cfg.num_labels),
                   "token_classification": (batch, seq, cfg.num_labels)}.get(head, (batch, seq, cfg.vocab_size))
    probe = np.random.default_rng(3).normal(size=probe_shape).astype(np.float32)

    tids, tmask, ttypes = to_torch(ids, mask, types)
    hf_model.zero_grad()
    (hf_model(tids, attention_mask=tmask, token_type_ids=ttypes).logits * torch.from_numpy(probe)).sum().backward()
    ref_grads = {n: p.grad.numpy() for n, p in hf_model.named_parameters()}

    def loss(p):
        out = model.apply({"params": p}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                          token_type_ids=jnp.asarray(types))
        return jnp.sum(out.logits * probe)

    grads = params_to_state_dict(unpadded_params(model, jax.grad(loss)(params)), head)
    assert set(grads) <= set(ref_grads)
    floor = 1e-3 * max(np.abs(g).max() for g in ref_grads.values())
    for key, mine in grads.items():
        theirs = ref_grads[key]
        error = np.abs(mine - theirs).max() / max(np.abs(theirs).max(), floor)
        assert error <= tolerance, f"{key}: relative error {error}"
