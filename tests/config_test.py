"""Config validation, HF config.json in and out, and full-size presets against transformers' parameter counts."""

import dataclasses

import jax
import numpy as np
import pytest
import torch
import transformers

from deberta_jax.config import PRESETS, DebertaConfig, preset
from deberta_jax.model.modeling import abstract_params, build_model
from deberta_jax.model.vocab_padding import unpadded_params


@pytest.mark.parametrize("changes,field", [
    (dict(pos_att_type=["p2p"]), "pos_att_type"),
    (dict(hidden_size=30, num_attention_heads=4), "num_attention_heads"),
    (dict(model_type="deberta-v4"), "model_type"),
    (dict(hidden_act="gelu_exotic"), "hidden_act"),
    (dict(conv_kernel_size=2), "conv_kernel_size"),
    (dict(conv_kernel_size=3, conv_groups=5), "conv_groups"),
    (dict(model_type="deberta", position_buckets=256), "position_buckets"),
    (dict(model_type="deberta", share_att_key=True), "share_att_key"),
    (dict(relative_attention=False, pos_att_type=("c2p",)), "pos_att_type"),
    (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
    (dict(attention_head_size=10), "attention_head_size"),
    (dict(dtype="float8"), "dtype"),
    (dict(norm_rel_ebd="batch_norm"), "norm_rel_ebd"),
    (dict(attention_impl="auto", hidden_size=64, num_attention_heads=8), "attention_impl"),  # head_dim 8
    (dict(attention_impl="pallas", attention_block_q=96), "attention_block_q"),
    (dict(attention_impl="auto", attention_block_k=8), "attention_block_k"),
])
def test_bad_values_are_rejected_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"DebertaConfig\.{field}="):
        DebertaConfig(**{"relative_attention": True, "pos_att_type": ("c2p",), **changes})


def test_pos_att_type_string_forms():
    assert DebertaConfig(relative_attention=True, pos_att_type="p2c|c2p").pos_att_type == ("p2c", "c2p")
    assert DebertaConfig(relative_attention=True, pos_att_type=["C2P"]).pos_att_type == ("c2p",)


def test_unknown_config_json_key_is_an_error():
    with pytest.raises(ValueError, match="talking_heads_v9"):
        DebertaConfig.from_hf_dict({"model_type": "deberta-v2", "talking_heads_v9": 1})


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_hf_config_round_trip(tmp_path, name):
    config = preset(name, num_labels=3)
    config.to_json_file(tmp_path / "config.json", "DebertaV2Model")
    hf = transformers.AutoConfig.from_pretrained(tmp_path)
    assert hf.model_type == config.model_type
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
                  "max_relative_positions", "position_biased_input", "layer_norm_eps", "num_labels"):
        assert getattr(hf, field) == getattr(config, field), field
    assert list(hf.pos_att_type) == list(config.pos_att_type)
    for field in ("position_buckets", "share_att_key", "norm_rel_ebd", "conv_kernel_size", "conv_act"):
        if not config.is_v1:
            assert getattr(hf, field) == getattr(config, field), field
    assert DebertaConfig.from_hf_dict(hf.to_dict()) == config


def _count(shapes) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))


def _hf_param_count(config: DebertaConfig) -> int:
    hf_config = transformers.AutoConfig.for_model(**config.to_hf_dict())
    with torch.device("meta"):
        model = transformers.AutoModel.from_config(hf_config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_full_size_presets_have_reference_parameter_counts(name):
    config = preset(name)
    model = build_model(config)
    shapes = unpadded_params(model, abstract_params(model))  # jax.eval_shape: nothing allocated; vocab_size rows
    assert _count(shapes) == _hf_param_count(config)


def test_v3_base_parameter_budget():
    # Published: 85.45M backbone + 98.38M embeddings = 183.83M (128100 x 768 word embeddings + rel table + LN).
    shapes = abstract_params(build_model(preset("deberta-v3-base", vocab_pad_multiple=1)))
    assert round(_count(shapes) / 1e6, 2) == 183.83
    assert round(_count(shapes["embeddings"]) / 1e6, 2) == 98.38
    # padded to a multiple of 128 by default: 28 more rows of 768 in the word table, nothing else
    padded = abstract_params(build_model(preset("deberta-v3-base")))
    assert preset("deberta-v3-base").padded_vocab_size == 128128
    assert _count(padded) - _count(shapes) == _count(padded["embeddings"]) - _count(shapes["embeddings"]) == 28 * 768


def test_replace_rejects_unknown_fields():
    with pytest.raises(ValueError, match="hidden_sise"):
        preset("deberta-v3-xsmall").replace(hidden_sise=3)
    assert dataclasses.is_dataclass(preset("deberta-v3-xsmall"))


def test_pooler_width_follows_hidden_size_on_replace():
    assert preset("deberta-v3-base").replace(hidden_size=32, num_attention_heads=4).pooler_hidden_size == 32
