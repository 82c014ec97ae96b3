"""HF checkpoints in and out: round trips through transformers, key reports, shapes, formats."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from deberta_jax import load_pretrained, save_pretrained
from reference import padded_batch, random_hf_model, to_torch

AUTO = {
    None: transformers.AutoModel,
    "masked_lm": transformers.AutoModelForMaskedLM,
    "sequence_classification": transformers.AutoModelForSequenceClassification,
    "token_classification": transformers.AutoModelForTokenClassification,
    "question_answering": transformers.AutoModelForQuestionAnswering,
    "multiple_choice": transformers.AutoModelForMultipleChoice,
}


def _outputs_hf(model, head, ids, mask):
    tids, tmask = to_torch(ids, mask)
    with torch.no_grad():
        out = model(tids, attention_mask=tmask)
    if head is None:
        return out.last_hidden_state.numpy()
    if head == "question_answering":
        return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], -1)
    return out.logits.numpy()


def _outputs_jax(model, params, head, ids, mask):
    out = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    if head is None:
        return np.asarray(out.last_hidden_state)
    if head == "question_answering":
        return np.stack([np.asarray(out.start_logits), np.asarray(out.end_logits)], -1)
    return np.asarray(out.logits)


CASES = [("v3", h) for h in AUTO] + [("v1", None), ("v1", "masked_lm"), ("v1", "sequence_classification"),
                                      ("v2_conv_no_share", "masked_lm"), ("v3_embedding_size", "masked_lm")]


@pytest.mark.reference
@pytest.mark.parametrize("family,head", CASES)
def test_round_trip_through_transformers(tmp_path, family, head):
    hf_model = random_hf_model(family, head, num_labels=2)
    hf_model.save_pretrained(tmp_path / "hf")
    model, params, report = load_pretrained(tmp_path / "hf", head, return_report=True)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    save_pretrained(tmp_path / "ours", model, params)
    reloaded = AUTO[head].from_pretrained(tmp_path / "ours").eval()
    assert type(reloaded) is type(hf_model)
    ids, mask, _ = padded_batch(99, 2, 9)
    if head == "multiple_choice":
        ids, mask = ids.reshape(1, 2, 9), mask.reshape(1, 2, 9)
    # Bit-identical weights; outputs then agree up to torch's own run-to-run float noise.
    for key, value in hf_model.state_dict().items():
        np.testing.assert_array_equal(reloaded.state_dict()[key].numpy(), value.numpy(), err_msg=key)
    original = _outputs_hf(hf_model, head, ids, mask)
    np.testing.assert_allclose(_outputs_hf(reloaded, head, ids, mask), original, rtol=0, atol=1e-6)
    np.testing.assert_allclose(_outputs_jax(model, params, head, ids, mask), original, rtol=0, atol=1e-5)


@pytest.mark.reference
def test_microsoft_style_extra_keys_are_reported_not_loaded(tmp_path):
    hf_model = random_hf_model("v3", "masked_lm", legacy=False)
    hf_model.save_pretrained(tmp_path)
    from deberta_jax.conversion import safetensors_io
    state = dict(safetensors_io.load_file(tmp_path / "model.safetensors"))
    state["mask_predictions.dense.weight"] = np.zeros((32, 32), np.float32)
    state["mask_predictions.classifier.weight"] = np.zeros((1, 32), np.float32)
    state["deberta.embeddings.position_embeddings.weight"] = np.zeros((128, 32), np.float32)
    safetensors_io.save_file(state, tmp_path / "model.safetensors")
    _, _, report = load_pretrained(tmp_path, "masked_lm", return_report=True)
    assert report.unexpected == ["deberta.embeddings.position_embeddings.weight", "mask_predictions.classifier.weight",
                                 "mask_predictions.dense.weight"]
    # The backbone alone ignores the MLM head too.
    _, _, report = load_pretrained(tmp_path, None, return_report=True)
    assert "lm_predictions.lm_head.dense.weight" in report.unexpected
    assert "embeddings.position_embeddings.weight" in report.unexpected


@pytest.mark.slow
@pytest.mark.reference
def test_backbone_checkpoint_into_head_reports_new_head(tmp_path):
    hf_model = random_hf_model("v3")
    hf_model.save_pretrained(tmp_path)
    model, params, report = load_pretrained(tmp_path, "sequence_classification", num_labels=3, return_report=True)
    assert report.missing == ["classifier.bias", "classifier.weight", "pooler.dense.bias", "pooler.dense.weight"]
    ids, mask, _ = padded_batch(99, 2, 7)
    out = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    assert out.logits.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(out.last_hidden_state), _outputs_hf(hf_model, None, ids, mask),
                               rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.reference
def test_shape_mismatch_names_key_and_shapes(tmp_path):
    random_hf_model("v3", "sequence_classification", num_labels=3).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"'classifier.bias' has shape \(3,\).*expects \(5,\)"):
        load_pretrained(tmp_path, "sequence_classification", num_labels=5)
    _, params, report = load_pretrained(tmp_path, "sequence_classification", num_labels=5,
                                        ignore_mismatched_sizes=True, return_report=True)
    assert report.mismatched == ["classifier.bias", "classifier.weight"]
    assert params["classifier"]["kernel"].shape == (32, 5)


@pytest.mark.reference
def test_bfloat16_and_sharded_checkpoints(tmp_path):
    hf_model = random_hf_model("v3", "masked_lm")
    hf_model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    model, params = load_pretrained(tmp_path / "bf16", "masked_lm")
    expected = hf_model.deberta.embeddings.word_embeddings.weight.detach().float().numpy()
    _assert_padded_table(params, expected, model.config.padded_vocab_size)
    hf_model.float().save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert os.path.exists(tmp_path / "sharded" / "model.safetensors.index.json")
    _, sharded = load_pretrained(tmp_path / "sharded", "masked_lm")
    _assert_padded_table(sharded, hf_model.deberta.embeddings.word_embeddings.weight.detach().numpy(),
                         model.config.padded_vocab_size)


def _assert_padded_table(params, hf_table, padded_rows: int):
    """The loaded word table is the checkpoint's, then zero rows up to the padded vocabulary (99 -> 128)."""
    table = np.asarray(params["deberta"]["embeddings"]["word_embeddings"]["embedding"])
    assert table.shape == (padded_rows, hf_table.shape[1]) and padded_rows == 128 > hf_table.shape[0]
    np.testing.assert_array_equal(table[:len(hf_table)], hf_table)
    assert not table[len(hf_table):].any()


@pytest.mark.reference
def test_pytorch_bin_checkpoint(tmp_path):
    hf_model = random_hf_model("v1")
    hf_model.config.save_pretrained(tmp_path)
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    model, params = load_pretrained(tmp_path)
    ids, mask, _ = padded_batch(99, 2, 7)
    np.testing.assert_allclose(_outputs_jax(model, params, None, ids, mask), _outputs_hf(hf_model, None, ids, mask),
                               rtol=0, atol=1e-5)


@pytest.mark.reference
@pytest.mark.subprocess
def test_safetensors_loading_needs_no_torch(tmp_path):
    random_hf_model("v3").save_pretrained(tmp_path)
    code = ("import sys; sys.modules['torch'] = None\n"
            "from deberta_jax import load_pretrained, save_pretrained\n"
            f"m, p = load_pretrained({str(tmp_path)!r})\n"
            f"save_pretrained({str(tmp_path / 'out')!r}, m, p)\n"
            "assert 'torch' not in [k for k, v in sys.modules.items() if v is not None]\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_files_and_bad_config_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deberta-v2", "pos_att_type": "p2p"}))
    with pytest.raises(ValueError, match="pos_att_type"):
        load_pretrained(tmp_path)
