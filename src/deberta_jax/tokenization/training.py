"""Training a sentencepiece model laid out as DeBERTa-v3's: [PAD]=0, [CLS]=1, [SEP]=2, [UNK]=3, [MASK] after the last
piece (the tokenizer adds it; it is not a piece of the model)."""

from __future__ import annotations

import io
import os
import tempfile
from typing import Iterator, Sequence

import numpy as np
import sentencepiece as spm

from deberta_jax.data.text_corpus import existing_files
from deberta_jax.data.text_files import text_lines
from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer

_MODEL_TYPES = ("unigram", "bpe", "char", "word")


def _lines(paths: Sequence[str], keep: np.ndarray | None = None) -> Iterator[str]:
    """The non-blank lines of `paths`, stripped; with `keep` ([n_lines] bool), only line i where keep[i]."""
    index = 0
    for path in paths:
        for line in text_lines(path):
            line = line.strip()
            if line:
                if keep is None or keep[index]:
                    yield line
                index += 1


def train_spm_tokenizer(input_paths: Sequence[str | os.PathLike], output_dir: str | os.PathLike, vocab_size: int, *,
                        model_type: str = "unigram", character_coverage: float = 0.9995,
                        max_sentence_length: int = 20000, input_sentence_size: int = 2_000_000,
                        seed: int = 0) -> DebertaV3Tokenizer:
    """Trains on the non-blank lines of `input_paths` (.txt / .txt.gz) and writes `output_dir/spm.model` and
    `tokenizer_config.json` (DebertaV3Tokenizer.save_pretrained's layout).

    Args:
      vocab_size: pieces in the model, the four specials included; the tokenizer's vocab_size is one more ([MASK]).
      max_sentence_length: lines longer than this many bytes are skipped by sentencepiece.
      input_sentence_size: lines sampled (uniformly, without replacement, in corpus order) for training when the
        corpus has more; 0 trains on every line.
      seed: seeds that sampling.
    Returns:
      The tokenizer loaded from `output_dir`.
    """
    paths = existing_files(input_paths, "input_paths")
    if vocab_size <= 4:
        raise ValueError(f"vocab_size={vocab_size}: must exceed the 4 special pieces")
    if model_type not in _MODEL_TYPES:
        raise ValueError(f"model_type={model_type!r}: must be one of {_MODEL_TYPES}")
    if not 0 < character_coverage <= 1:
        raise ValueError(f"character_coverage={character_coverage}: must be in (0, 1]")
    if input_sentence_size < 0:
        raise ValueError(f"input_sentence_size={input_sentence_size}: must be >= 0")
    # Sampled here rather than by sentencepiece, whose sample (0.2.3) stays the same whatever
    # set_random_generator_seed is given.
    keep = None
    if input_sentence_size:
        n_lines = sum(1 for _ in _lines(paths))
        if input_sentence_size < n_lines:
            keep = np.zeros(n_lines, bool)
            keep[np.random.default_rng(seed).choice(n_lines, input_sentence_size, replace=False)] = True
    # Written to memory rather than a model_prefix, whose (temporary) path the model would record.
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=_lines(paths, keep), model_writer=model, vocab_size=vocab_size, model_type=model_type,
        character_coverage=character_coverage, max_sentence_length=max_sentence_length, input_sentence_size=0,
        pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]", eos_id=2, eos_piece="[SEP]",
        unk_id=3, unk_piece="[UNK]", minloglevel=2)
    with tempfile.TemporaryDirectory() as tmp:
        trained = os.path.join(tmp, "spm.model")
        with open(trained, "wb") as f:
            f.write(model.getvalue())
        DebertaV3Tokenizer(trained).save_pretrained(output_dir)
    return DebertaV3Tokenizer.from_pretrained(output_dir)
