"""Broken input files are reported by name and place: text that is not UTF-8 (file, line, byte offset), malformed
JSON (file:line:col), a truncated safetensors file (its size and the size its header promises), a corrupt .gz."""

import gzip
import json
import re
import types

import numpy as np
import pytest

from deberta_jax.config import DebertaConfig
from deberta_jax.config_tree import ConfigError
from deberta_jax.conversion import safetensors_io
from deberta_jax.data.glue.encoding import num_batches
from deberta_jax.data.glue.readers import load_tsv_split
from deberta_jax.data.text_corpus import read_documents
from deberta_jax.sharding.mesh import check_batch_divides
from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer

# Line 3 starts at byte 12 ("one\n" + "two two\n"); its "\xff" is byte 12 + 3 = 15.
LATIN1 = b"one\ntwo two\nthr\xffee\nfour\n"


def at(path) -> str:
    """A regex matching `path` literally."""
    return re.escape(str(path))


@pytest.mark.parametrize("compress", [False, True])
def test_corpus_that_is_not_utf8_names_file_line_and_byte(tmp_path, compress):
    path = tmp_path / ("corpus.txt.gz" if compress else "corpus.txt")
    path.write_bytes(gzip.compress(LATIN1) if compress else LATIN1)
    with pytest.raises(ValueError, match=rf"^{at(path)}, line 3, byte 15: not UTF-8 text \(invalid start byte 0xff\)"):
        list(read_documents([path]))


def test_a_decoding_error_past_the_first_chunk_has_its_file_offset(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"x" * 99 + b"\n" + b"\n" * 20000 + b"\xe9t\xe9\n")  # far past the 8 KiB decoder chunk
    with pytest.raises(ValueError, match=rf"^{at(path)}, line 20002, byte 20100: not UTF-8 text \(invalid continuation"):
        list(read_documents([path]))


def test_a_truncated_multibyte_character_at_the_end(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes("fin \u00e9".encode()[:-1])
    with pytest.raises(ValueError, match=r"line 1, byte 4: not UTF-8 text \(unexpected end of data 0xc3\)"):
        list(read_documents([path]))


@pytest.mark.parametrize("corrupt", ["not gzip", "cut short"])
def test_a_corrupt_gzip_corpus_is_named(tmp_path, corrupt):
    path = tmp_path / "corpus.txt.gz"
    compressed = gzip.compress(" ".join(str(i * i) for i in range(5000)).encode())
    path.write_bytes(b"plain text" if corrupt == "not gzip" else compressed[:len(compressed) // 2])
    with pytest.raises(ValueError, match=rf"^{at(path)}: not a complete gzip file"):
        list(read_documents([path]))


def test_glue_tsv_that_is_not_utf8_names_file_line_and_byte(tmp_path):
    (tmp_path / "SST-2").mkdir()
    path = tmp_path / "SST-2" / "train.tsv"
    path.write_bytes(b"\xef\xbb\xbfsentence\tlabel\ngood\t1\ncaf\xe9\t0\n")  # a BOM (counted), then Latin-1
    with pytest.raises(ValueError, match=rf"^{at(path)}, line 3, byte 28: not UTF-8 text \(invalid continuation"):
        load_tsv_split("sst2", tmp_path, "train")


def test_malformed_hf_config_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "model_type": "deberta-v2",\n  "hidden_size": 768,,\n}\n')
    with pytest.raises(ConfigError, match=rf"^{at(path)}:3:22: invalid JSON"):
        DebertaConfig.from_json_file(path)
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object of config keys, got list"):
        DebertaConfig.from_json_file(path)


def test_malformed_tokenizer_config_names_the_file(tmp_path):
    path = tmp_path / "tokenizer_config.json"
    path.write_text('{"do_lower_case": tru}')
    with pytest.raises(ConfigError, match=rf"^{at(path)}:1:19: invalid JSON"):
        DebertaV3Tokenizer.from_pretrained(tmp_path)


def test_truncated_safetensors_names_file_and_both_sizes(tmp_path):
    path = tmp_path / "model.safetensors"
    safetensors_io.save_file({"a": np.arange(6, dtype=np.float32), "b": np.ones((2, 2), np.float32)}, path)
    blob = path.read_bytes()
    path.write_bytes(blob[:-5])
    with pytest.raises(ValueError, match=rf"^{at(path)} is truncated: {len(blob) - 5} bytes, but its header promises "
                                         rf"{len(blob)}$"):
        safetensors_io.load_file(path)
    path.write_bytes(blob[:20])
    with pytest.raises(ValueError, match=rf"^{at(path)} is truncated or not a safetensors file: 20 bytes, but its "
                                         r"header alone takes \d+$"):
        safetensors_io.load_file(path)
    path.write_bytes(blob[:3])
    with pytest.raises(ValueError, match="too short for the 8-byte header length"):
        safetensors_io.load_file(path)


def test_malformed_safetensors_header_is_named(tmp_path):
    path = tmp_path / "model.safetensors"
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    with pytest.raises(ValueError, match="tensor 'a' has a malformed header entry"):
        safetensors_io.load_file(path)
    path.write_bytes((4).to_bytes(8, "little") + b"{{{{")
    with pytest.raises(ValueError, match="the safetensors header is not valid JSON"):
        safetensors_io.load_file(path)


def test_a_batch_size_of_zero_is_an_error_not_a_zero_division():
    with pytest.raises(ValueError, match="batch_size=0: must be >= 1"):
        num_batches(types.SimpleNamespace(__len__=lambda: 10), 0)


def test_a_batch_that_does_not_split_over_the_devices_is_named():
    mesh = types.SimpleNamespace(shape={"data": 4, "fsdp": 2, "tensor": 1})
    check_batch_divides(16, mesh, "batch_size")
    with pytest.raises(ValueError, match=r"^batch_size 4 is not divisible by the 8 data-parallel devices"):
        check_batch_divides(4, mesh, "batch_size")
