"""The DeBERTa-v3 sentencepiece tokenizer, giving the ids, token types and masks of transformers'
`DebertaV2Tokenizer`.

transformers normalises text itself (runs of whitespace and tab/newline to one space, NFC, right strip; optional
lower-casing; a leading word boundary unless the text starts with a space) and does not apply the model's NFKC
table. By default this tokenizer does the same and runs the
sentencepiece model with its normaliser set to identity; `normalization="sentencepiece"` keeps the model's own
table instead (what microsoft/DeBERTa's tokenizer does).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import unicodedata
from typing import Sequence

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from deberta_jax.config_tree import read_json
from deberta_jax.conversion.hub import resolve_tokenizer

SPECIAL_TOKENS = {"pad": "[PAD]", "cls": "[CLS]", "sep": "[SEP]", "unk": "[UNK]", "mask": "[MASK]"}
_WHITESPACE = re.compile(r"\s{2,}|[\n\r\t]")
_TRUNCATION = ("longest_first", "only_first", "only_second")


class DebertaV3Tokenizer:
    """Sentencepiece tokenizer with DeBERTa's specials: `[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]`.

    Ids of [PAD], [CLS], [SEP], [UNK] come from the model's pieces (0, 1, 2, 3 in the released models); [MASK] is
    the model's piece if it has one, else the id after the last piece.
    """

    def __init__(self, spm_path: str | os.PathLike, do_lower_case: bool = False,
                 normalization: str = "transformers"):
        if normalization not in ("transformers", "sentencepiece"):
            raise ValueError(f"normalization must be 'transformers' or 'sentencepiece', got {normalization!r}")
        self.spm_path = os.fspath(spm_path)
        self.do_lower_case = do_lower_case
        self.normalization = normalization
        proto = sentencepiece_model_pb2.ModelProto()
        with open(self.spm_path, "rb") as f:
            proto.ParseFromString(f.read())
        if normalization == "transformers":
            proto.normalizer_spec.name = "identity"
            proto.normalizer_spec.precompiled_charsmap = b""
            proto.normalizer_spec.remove_extra_whitespaces = False
            proto.normalizer_spec.add_dummy_prefix = False  # prefixed in _normalize, as transformers does
        self._sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        pieces = {self._sp.id_to_piece(i): i for i in range(self._sp.get_piece_size())}
        missing = [t for k, t in SPECIAL_TOKENS.items() if k != "mask" and t not in pieces]
        if missing:
            raise ValueError(f"{self.spm_path}: sentencepiece model lacks the pieces {missing}")
        self.pad_id, self.cls_id, self.sep_id, self.unk_id = (
            pieces[SPECIAL_TOKENS[k]] for k in ("pad", "cls", "sep", "unk"))
        self.mask_id = pieces.get(SPECIAL_TOKENS["mask"], self._sp.get_piece_size())
        self.vocab_size = max(self._sp.get_piece_size(), self.mask_id + 1)
        self._special = {t: pieces.get(t, self.mask_id) for t in SPECIAL_TOKENS.values()}
        self._special_split = re.compile("(" + "|".join(re.escape(t) for t in self._special) + ")")

    # ------------------------------------------------------------------ files
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, revision: str | None = None, **kwargs) -> "DebertaV3Tokenizer":
        """From a directory with `spm.model` (and optionally `tokenizer_config.json`), a `.model` file, or a Hub id
        (`owner/name` at `revision`, when no such local path exists)."""
        path = resolve_tokenizer(path, revision)
        if os.path.isdir(path):
            config_file = os.path.join(path, "tokenizer_config.json")
            if os.path.exists(config_file):
                kwargs.setdefault("do_lower_case", bool(read_json(config_file).get("do_lower_case", False)))
            path = os.path.join(path, "spm.model")
        if not os.path.exists(path):
            raise FileNotFoundError(f"no sentencepiece model at {path}")
        return cls(path, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Writes spm.model and tokenizer_config.json, which transformers' DebertaV2Tokenizer loads."""
        os.makedirs(directory, exist_ok=True)
        shutil.copyfile(self.spm_path, os.path.join(directory, "spm.model"))
        config = {"tokenizer_class": "DebertaV2Tokenizer", "do_lower_case": self.do_lower_case,
                  **{f"{k}_token": v for k, v in SPECIAL_TOKENS.items()}, "bos_token": "[CLS]", "eos_token": "[SEP]"}
        with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)

    # ------------------------------------------------------------------ text -> ids
    def _normalize(self, text: str) -> str:
        if self.normalization == "sentencepiece":
            return text
        if self.do_lower_case:
            text = text.lower()
        text = unicodedata.normalize("NFC", _WHITESPACE.sub(" ", text)).rstrip()
        # transformers' Metaspace prepends the word boundary only where the text does not start with one.
        return text if text.startswith(" ") or not text else " " + text

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without [CLS]/[SEP]. Special-token strings in the text map to their ids."""
        ids: list[int] = []
        for part in self._special_split.split(text):
            if part in self._special:
                ids.append(self._special[part])
            elif part:
                ids.extend(self._sp.encode(self._normalize(part)))
        return ids

    def tokenize(self, text: str) -> list[str]:
        return [self.id_to_token(i) for i in self.encode(text)]

    def id_to_token(self, token_id: int) -> str:
        return SPECIAL_TOKENS["mask"] if token_id == self.mask_id else self._sp.id_to_piece(int(token_id))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        special = {self.pad_id, self.cls_id, self.sep_id, self.mask_id}
        words, run = [], []

        def flush(ids):  # drop the word boundary that encoding prepended
            text = self._sp.decode(ids)
            return text[1:] if text.startswith(" ") else text

        for i in map(int, ids):
            if i in special:
                if skip_special_tokens:
                    continue
                words.append(flush(run))
                words.append(self.id_to_token(i))
                run = []
            else:
                run.append(i)
        words.append(flush(run))
        return " ".join(w for w in words if w)

    def __call__(self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None, *,
                 max_length: int | None = None, truncation: bool | str = False, padding: bool | str = False,
                 return_numpy: bool = False) -> dict:
        """Encodes one text (or pair) or a batch of them.

        Args:
          truncation: False, True / "longest_first", "only_first" or "only_second" (needs max_length).
          padding: False, True / "longest", or "max_length".
        Returns:
          dict with input_ids, token_type_ids, attention_mask (lists, or int32 arrays with return_numpy=True).
        """
        batched = not isinstance(text, str)
        texts = list(text) if batched else [text]
        if text_pair is None:
            pairs = [None] * len(texts)
        else:
            pairs = list(text_pair) if batched else [text_pair]
            if len(pairs) != len(texts):
                raise ValueError(f"got {len(texts)} texts but {len(pairs)} text pairs")
        if truncation is True:
            truncation = "longest_first"
        if truncation and truncation not in _TRUNCATION:
            raise ValueError(f"truncation must be one of {_TRUNCATION}, True or False; got {truncation!r}")
        if truncation and max_length is None:
            raise ValueError("truncation needs max_length")
        rows = [self._build(a, b, max_length if truncation else None, truncation) for a, b in zip(texts, pairs)]
        if padding is True:
            padding = "longest"
        if padding not in (False, "longest", "max_length"):
            raise ValueError(f"padding must be False, True, 'longest' or 'max_length'; got {padding!r}")
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length")
        if padding:
            target = max_length if padding == "max_length" else max(len(r[0]) for r in rows)
            rows = [(ids + [self.pad_id] * (target - len(ids)), types + [0] * (target - len(ids)),
                     [1] * len(ids) + [0] * (target - len(ids))) for ids, types, _ in rows]
        out = {"input_ids": [r[0] for r in rows], "token_type_ids": [r[1] for r in rows],
               "attention_mask": [r[2] for r in rows]}
        if return_numpy:
            if len({len(r[0]) for r in rows}) > 1:
                raise ValueError("rows differ in length; pass padding to return arrays")
            out = {k: np.asarray(v, np.int32) for k, v in out.items()}
        return out if batched else {k: v[0] for k, v in out.items()}

    def _build(self, text: str, pair: str | None, max_length: int | None, truncation):
        first = self.encode(text)
        # An empty pair is no pair, as in transformers.
        second = self.encode(pair) if pair else None
        if max_length is not None:
            first, second = truncate_pair(first, second, max_length - (3 if second is not None else 2), truncation)
        ids = [self.cls_id] + first + [self.sep_id]
        types = [0] * len(ids)
        if second is not None:
            ids += second + [self.sep_id]
            types += [1] * (len(second) + 1)
        return ids, types, [1] * len(ids)


def truncate_pair(first: list[int], second: list[int] | None, budget: int, strategy: str):
    """Cuts tokens from the end so that both fit in `budget`, as HF tokenizers' strategies do.

    "longest_first" keeps a sequence that fits in its share whole and cuts the other; when neither fits, each gets
    half (the longer one the odd token).
    """
    if budget < 0:
        raise ValueError("max_length is too small to hold the special tokens")
    if second is None:
        if strategy == "only_second":
            raise ValueError("truncation='only_second' needs a text pair")
        return first[:budget], None
    if len(first) + len(second) <= budget:
        return first, second
    # Like the reference, refuse to cut a sequence away entirely.
    if strategy == "only_first":
        if len(second) >= budget:
            raise ValueError(f"the second sequence ({len(second)} tokens) leaves no room in the budget of {budget}")
        return first[:budget - len(second)], second
    if strategy == "only_second":
        if len(first) >= budget:
            raise ValueError(f"the first sequence ({len(first)} tokens) leaves no room in the budget of {budget}")
        return first, second[:budget - len(first)]
    short, long_ = sorted((len(first), len(second)))
    long_keep = short if short > budget else max(short, budget - short)
    short_keep = short
    if short_keep + long_keep > budget:
        short_keep = budget // 2
        long_keep = short_keep + budget % 2
    if len(first) <= len(second):
        return first[:short_keep], second[:long_keep]
    return first[:long_keep], second[:short_keep]
