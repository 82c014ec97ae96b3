"""The `deberta-jax` command line: convert both ways and parity, on a checkpoint made by transformers."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from deberta_jax.cli import main
from deberta_jax.conversion.jax_checkpoint import load_checkpoint, save_checkpoint
from deberta_jax import load_pretrained
from reference import padded_batch, random_hf_model

pytestmark = pytest.mark.reference


def test_convert_round_trip_and_parity(tmp_path, capsys):
    random_hf_model("v3", "masked_lm").save_pretrained(tmp_path / "hf")
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "jax"), "--head", "masked_lm"]) == 0
    model, params = load_checkpoint(tmp_path / "jax")
    reference_model, reference_params = load_pretrained(tmp_path / "hf", "masked_lm")
    ids, mask, _ = padded_batch(99, 2, 9)
    a = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits
    b = reference_model.apply({"params": reference_params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    assert main(["convert", str(tmp_path / "jax"), str(tmp_path / "back")]) == 0
    assert main(["parity", str(tmp_path / "back"), "--head", "masked_lm", "--seq-len", "16",
                 "--json", str(tmp_path / "parity.json")]) == 0
    result = json.loads((tmp_path / "parity.json").read_text())
    assert result["worst"] <= 1e-5 and "logits" in result["max_abs"] and "layer_1" in result["max_abs"]
    assert "PASS" in capsys.readouterr().out


def test_checkpoint_refuses_to_overwrite(tmp_path):
    random_hf_model("v3").save_pretrained(tmp_path / "hf")
    model, params = load_pretrained(tmp_path / "hf")
    save_checkpoint(tmp_path / "jax", model, params)
    with pytest.raises(FileExistsError):
        save_checkpoint(tmp_path / "jax", model, params)
    with pytest.raises(FileNotFoundError, match="not a deberta-jax checkpoint"):
        load_checkpoint(tmp_path / "hf")
