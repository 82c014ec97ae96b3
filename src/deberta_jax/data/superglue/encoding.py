"""SuperGLUE examples as the sequences the model scores, and their batches.

Every task becomes rows of GLUE's `Example` (one tokenized sequence each), encoded by GLUE's `encode_examples`:

  classification   one row per example: BoolQ (question, passage), CB / RTE / AX-g (premise, hypothesis), AX-b
                   (sentence1, sentence2), WiC (both sentences, the word marked in each), WSC (the text with the noun
                   phrase and the pronoun marked).
  multiple_choice  `num_choices` consecutive rows per example, COPA's: (premise, "because" / "so" + choice), the
                   connective by whether the choices are the premise's cause or its effect.
  candidates       one row per candidate, labelled 1 when right: MultiRC (passage, question + answer), ReCoRD
                   (passage, the query with "@placeholder" replaced by the entity).

Spans are marked in the text itself, so any tokenizer and any pretrained vocabulary take them: the first span of an
example between "[ " and " ]", the second (WSC's pronoun) between "{ " and " }"; WiC's word is the first span of each
sentence, so "[ ]" in both. The spaces keep the marked words' own pieces.

    encoded = encode_task(examples, "superglue/copa", tokenizer, max_length=128)
    for batch in task_batches(encoded, 16, shuffle=True, seed=0, epoch=0):
        batch["input_ids"]   # [16, 2, L] (COPA); [16, L] otherwise
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from deberta_jax.data.glue.encoding import DEFAULT_BUCKETS, EncodedSplit, bucketed_batches, encode_examples
from deberta_jax.data.glue.readers import Example
from deberta_jax.data.superglue.readers import CandidatesExample, ChoiceExample, ClassificationExample
from deberta_jax.data.superglue.tasks import SuperGlueTask, get_task

if TYPE_CHECKING:
    from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer

MARKERS = (("[ ", " ]"), ("{ ", " }"))
RECORD_HIGHLIGHT = "@highlight\n"  # ReCoRD's passages list their summary points after it; read as ". "


# ================================================================================================ texts
def mark_spans(text: str, spans: Sequence[tuple[int, int, int]]) -> str:
    """`text` with each (start, end, marker number) span wrapped in MARKERS[marker number]; spans must not
    overlap."""
    out, position = [], 0
    for start, end, marker in sorted(spans):
        if start < position:
            raise ValueError(f"spans overlap at character {start} of {text!r}")
        out += [text[position:start], MARKERS[marker][0], text[start:end], MARKERS[marker][1]]
        position = end
    return "".join(out + [text[position:]])


def _classification_row(task: SuperGlueTask, example: ClassificationExample, position: int) -> Example:
    texts = list(example.texts)
    for which in range(len(texts)):
        # WiC: one span per sentence, both the first; WSC: two spans in one text, the first and the second
        mine = [(s, e, 0 if task.short_name == "wic" else number)
                for number, (t, s, e) in enumerate(example.spans) if t == which]
        texts[which] = mark_spans(texts[which], mine)
    return Example(texts[0], texts[1] if len(texts) > 1 else None, example.label, position)


def _lower_first(text: str) -> str:
    """"The sun rose." -> "the sun rose." (after a connective); "I ..." and acronyms keep their capital."""
    first = text.split(" ", 1)[0]
    return text if first == "I" or first[1:2].isupper() else text[:1].lower() + text[1:]


def copa_rows(example: ChoiceExample, position: int) -> list[Example]:
    connective = {"cause": "because", "effect": "so"}.get(example.question)
    if connective is None:
        raise ValueError(f"COPA example idx={example.idx}: question {example.question!r} is not cause or effect")
    return [Example(example.premise, f"{connective} {_lower_first(choice)}", None, position)
            for choice in example.choices]


def candidate_text(task: SuperGlueTask, example: CandidatesExample, candidate: str) -> str:
    if task.short_name == "record":
        if "@placeholder" not in example.question:
            raise ValueError(f"ReCoRD query idx={example.idx} has no @placeholder: {example.question!r}")
        return example.question.replace("@placeholder", candidate)
    return f"{example.question} {candidate}"


def passage_text(task: SuperGlueTask, example: CandidatesExample) -> str:
    return example.passage.replace(RECORD_HIGHLIGHT, ". ") if task.short_name == "record" else example.passage


# ================================================================================================ encoding
@dataclasses.dataclass(frozen=True)
class RowFormat:
    """What GLUE's encoder asks of a task, for SuperGLUE's rows."""

    name: str
    is_pair: bool
    num_labels: int
    is_regression: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedTask:
    """A split's rows (`rows.idx[r]` is row r's position) and which example each row belongs to.

    Fields:
      rows: the encoded sequences; rows.labels [rows] are class ids (classification), 0/1 per candidate
        (candidates) or -1 (multiple choice).
      example_of_row: [rows] int64, the position of the row's example in `examples`.
      labels: [n] int32 per example: class id, right choice, or -1 (candidates, unlabelled).
      examples: the examples, in reading order.
    """

    task: SuperGlueTask
    rows: EncodedSplit
    example_of_row: np.ndarray
    labels: np.ndarray
    examples: tuple

    def __len__(self) -> int:
        return len(self.examples)


def task_rows(task: str | SuperGlueTask, examples: Sequence) -> tuple[list[Example], np.ndarray]:
    """The GLUE rows of `examples` and [rows] the example position of each."""
    task = get_task(task)
    rows, owner = [], []
    for position, example in enumerate(examples):
        if task.format == "classification":
            new = [_classification_row(task, example, 0)]
        elif task.format == "multiple_choice":
            new = copa_rows(example, 0)
        else:
            passage = passage_text(task, example)
            labels = example.labels or (None,) * len(example.candidates)
            new = [Example(passage, candidate_text(task, example, c), label, 0)
                   for c, label in zip(example.candidates, labels)]
        for row in new:
            rows.append(dataclasses.replace(row, idx=len(rows)))
            owner.append(position)
    return rows, np.array(owner, np.int64)


def encode_task(examples: Sequence, task: str | SuperGlueTask, tokenizer: "DebertaV3Tokenizer", max_length: int,
                buckets: Sequence[int] = DEFAULT_BUCKETS) -> EncodedTask:
    task = get_task(task)
    rows, owner = task_rows(task, examples)
    if not rows:
        raise ValueError(f"no sequences to encode for task {task.name} (examples without candidates?)")
    is_pair = rows[0].text_b is not None
    fmt = RowFormat(task.name, is_pair, 2 if task.format == "multiple_choice" else len(task.label_names))
    encoded = encode_examples(rows, fmt, tokenizer, max_length, buckets)
    if task.format == "classification":
        labels = encoded.labels
    elif task.format == "multiple_choice":
        labels = np.array([-1 if e.label is None else e.label for e in examples], np.int32)
    else:
        labels = np.full(len(examples), -1, np.int32)
    return EncodedTask(task, encoded, owner, labels, tuple(examples))


# ================================================================================================ batching
def num_batches(encoded: EncodedTask, batch_size: int) -> int:
    units = len(encoded) if encoded.task.format == "multiple_choice" else len(encoded.rows)
    return -(-units // batch_size)


def task_batches(encoded: EncodedTask, batch_size: int, shuffle: bool, seed: int = 0,
                 epoch: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of fixed-shape batches: GLUE's bucketed batches of rows, except for multiple choice, whose batches
    hold `batch_size` whole examples (input_ids etc. [batch_size, num_choices, L], labels [batch_size] the right
    choice, idx the example's position, weights 0 on padding examples). Rows' idx is their position in `rows`."""
    if encoded.task.format != "multiple_choice":
        yield from bucketed_batches(encoded.rows, batch_size, shuffle, seed, epoch)
        return
    choices = encoded.task.num_choices
    n = len(encoded)
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    buckets = np.asarray(encoded.rows.buckets)
    lengths = encoded.rows.lengths
    for start in range(0, n, batch_size):
        members = order[start:start + batch_size]
        n_pad = batch_size - len(members)
        row_ids = (members[:, None] * choices + np.arange(choices)).reshape(-1)
        length = int(buckets[np.searchsorted(buckets, lengths[row_ids].max())])
        # a padding example repeats the first one's rows with weight 0
        padded = np.concatenate([row_ids, np.tile(row_ids[:choices], n_pad)])
        batch = {k: v.reshape(batch_size, choices, length)
                 for k, v in encoded.rows.rows(padded, length).items()}
        batch["labels"] = np.concatenate([encoded.labels[members], np.zeros(n_pad, np.int32)])
        batch["idx"] = np.concatenate([members, np.full(n_pad, -1, np.int64)])
        batch["weights"] = np.concatenate([np.ones(len(members), np.float32), np.zeros(n_pad, np.float32)])
        yield batch
