"""A corpus tokenized once into sharded ArrayRecord files of packed rows, with a manifest; and reading it back.

    deberta-jax prepare-data --tokenizer tok/ --seq-len 128 --out data/wiki --workers 8 \\
        --tfds wikipedia/20230601.en [--host-index 3 --host-count 16]

Layout of the output directory:

    manifest.json                      format version, tokenizer fingerprint, seq_len, per-shard row/token counts
    rows-00000-of-00016.array_record   one record per row: seq_len int32 ids (little-endian)
    rows-00000-of-00016.json           the shard's counts, written last: the shard is complete when it exists

Shard i holds documents [i*D/S, (i+1)*D/S) of the corpus in order (D documents, S shards), packed as
`PackedSequences` packs a token stream (`[CLS] body [SEP]`, the last row of the shard padded). Rows never span two
shards, so the rows of a one-shard preparation equal `PackedSequences` over the whole corpus, and those of S shards
equal `PackedSequences` over each shard's documents: at most one short row per shard instead of one per corpus,
and hosts and workers need no token counts from each other. A shard is written under a temporary name and renamed
when complete; a rerun skips complete shards, so an interrupted preparation continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import time
from typing import Iterator, Sequence

import numpy as np

from deberta_jax.data.text_corpus import PackedSequences, existing_files, read_documents, tokenize_documents
from deberta_jax.data.tfds_source import prepared_data_source
from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer

FORMAT = "deberta-jax-packed-rows"
VERSION = 1
MANIFEST = "manifest.json"
_WRITE_CHUNK = 4096  # rows cut and written at a time


# ---------------------------------------------------------------------------------------------- documents
@dataclasses.dataclass(frozen=True)
class TextFiles:
    """Documents of text files (`read_documents`), counted per file so a shard reads only the files it covers."""

    paths: tuple[str, ...]
    counts: tuple[int, ...]  # documents per file

    @classmethod
    def open(cls, paths: Sequence[str | os.PathLike]) -> "TextFiles":
        paths = tuple(existing_files(paths, "corpus"))
        return cls(paths, tuple(sum(1 for _ in read_documents([p])) for p in paths))

    def __len__(self) -> int:
        return sum(self.counts)

    def describe(self) -> dict:
        return {"text_files": [os.path.abspath(p) for p in self.paths], "documents": list(self.counts),
                "sizes": [os.path.getsize(p) for p in self.paths]}

    def documents(self, start: int, stop: int) -> Iterator[str]:
        """Documents [start, stop) of the corpus, in order."""
        first = 0
        for path, count in zip(self.paths, self.counts):
            lo, hi = max(start - first, 0), min(stop - first, count)
            if lo < hi:
                for index, document in enumerate(read_documents([path])):
                    if index >= hi:
                        break
                    if index >= lo:
                        yield document
            first += count


@dataclasses.dataclass(frozen=True)
class TfdsText:
    """The non-blank `text_key` strings of a tensorflow-datasets split (e.g. "wikipedia/20230601.en"), by example.

    Reads array_record files, which needs no TensorFlow; the first use prepares the dataset in `data_dir` (tfds'
    default directory if None), see data/tfds_source.py. In a run of several JAX processes every process must
    first call `len()` (process 0 prepares, the others wait); the opened source is kept, so later calls do not wait.
    """

    name: str
    split: str
    text_key: str = "text"
    data_dir: str | None = None

    @functools.cached_property
    def _source(self):
        return prepared_data_source(self.name, self.split, self.data_dir)

    def __getstate__(self) -> dict:  # a worker process opens the source itself
        return {k: v for k, v in self.__dict__.items() if k != "_source"}

    def __len__(self) -> int:
        return len(self._source)

    def describe(self) -> dict:
        return {"tfds": self.name, "split": self.split, "text_key": self.text_key, "examples": len(self)}

    def documents(self, start: int, stop: int) -> Iterator[str]:
        """The texts of examples [start, stop), blank ones skipped."""
        for index in range(start, min(stop, len(self))):
            example = self._source[index]
            if self.text_key not in example:
                raise ValueError(f"text_key={self.text_key!r} is not a feature of {self.name}; it has "
                                 f"{sorted(example)}")
            text = example[self.text_key]
            if isinstance(text, (bytes, np.bytes_)):
                text = text.decode("utf-8")
            if text.strip():
                yield text


# ---------------------------------------------------------------------------------------------- fingerprints
def tokenizer_fingerprint(tokenizer: DebertaV3Tokenizer) -> dict:
    """What decides the ids: sha256 of spm.model and the settings that change the ids of the same model file."""
    with open(tokenizer.spm_path, "rb") as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    return {"spm_sha256": sha256, "do_lower_case": bool(tokenizer.do_lower_case),
            "normalization": tokenizer.normalization, "vocab_size": int(tokenizer.vocab_size),
            "cls_id": int(tokenizer.cls_id), "sep_id": int(tokenizer.sep_id), "pad_id": int(tokenizer.pad_id)}


def shard_name(index: int, count: int) -> str:
    return f"rows-{index:05d}-of-{count:05d}"


# ---------------------------------------------------------------------------------------------- writing
@dataclasses.dataclass(frozen=True)
class _ShardJob:
    source: TextFiles | TfdsText
    tokenizer: tuple[str, bool, str]  # spm_path, do_lower_case, normalization: rebuilt in the worker
    seq_len: int
    out_dir: str
    index: int
    count: int
    start: int  # documents [start, stop)
    stop: int
    plan: str  # the preparation's fingerprint: every shard of one directory has the same


def _shard_info(out_dir: str, index: int, count: int) -> dict | None:
    path = os.path.join(out_dir, shard_name(index, count) + ".json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json_atomically(path: str, value: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1)
    os.replace(tmp, path)


def _prepare_shard(job: _ShardJob) -> dict:
    """Tokenizes and packs documents [start, stop) into shard `index`; returns its counts (also its .json file)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    t0 = time.perf_counter()
    tokenizer = DebertaV3Tokenizer(job.tokenizer[0], do_lower_case=job.tokenizer[1], normalization=job.tokenizer[2])
    name = shard_name(job.index, job.count)
    documents = 0

    def counted():
        nonlocal documents
        for document in job.source.documents(job.start, job.stop):
            documents += 1
            yield document

    # A shard without tokens is empty; the corpus as a whole is checked once every shard is done.
    tokens = tokenize_documents(counted(), tokenizer, progress=False, allow_empty=True)
    final = os.path.join(job.out_dir, name + ".array_record")
    tmp = os.path.join(job.out_dir, f".{name}.array_record.tmp{os.getpid()}")
    # group_size:1: each row is its own compressed chunk, so a random read decodes one row.
    writer = ArrayRecordWriter(tmp, "group_size:1")
    rows = 0
    try:
        if len(tokens):
            packed = PackedSequences(tokens, job.seq_len, tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
            for first in range(0, len(packed), _WRITE_CHUNK):
                ids, _ = packed.batch(np.arange(first, min(first + _WRITE_CHUNK, len(packed))))
                for row in ids.astype("<i4"):
                    writer.write(row.tobytes())
            rows = len(packed)
        writer.close()
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    info = {"plan": job.plan, "file": name + ".array_record", "rows": rows, "tokens": int(len(tokens)),
            "documents": documents, "first_document": job.start, "seconds": round(time.perf_counter() - t0, 3)}
    _write_json_atomically(os.path.join(job.out_dir, name + ".json"), info)
    return info


def preparation_plan(source: TextFiles | TfdsText, tokenizer: DebertaV3Tokenizer, seq_len: int, shards: int) -> str:
    """sha256 of everything that decides the rows: format, tokenizer, seq_len, shard count and the corpus."""
    return hashlib.sha256(json.dumps([FORMAT, VERSION, tokenizer_fingerprint(tokenizer), seq_len, shards,
                                      source.describe()], sort_keys=True).encode()).hexdigest()


def prepare(source: TextFiles | TfdsText, tokenizer: DebertaV3Tokenizer, seq_len: int, out_dir: str | os.PathLike,
            shards: int = 16, workers: int = 1, host_index: int = 0, host_count: int = 1,
            log=print) -> dict | None:
    """Prepares this host's shards (i % host_count == host_index) with `workers` processes; writes the manifest
    once every shard of the directory is complete. Returns the manifest, or None while other hosts' shards are
    missing.

    shards: at most this many (never more than documents). Complete shards of the same preparation are skipped;
    those of another (tokenizer, seq_len, corpus, shard count) raise ValueError naming the directory.
    """
    if seq_len < 3:
        raise ValueError(f"seq_len={seq_len}: must be >= 3 to hold [CLS], a token and [SEP]")
    if workers < 1 or shards < 1:
        raise ValueError(f"workers={workers}, shards={shards}: both must be >= 1")
    if not 0 <= host_index < host_count:
        raise ValueError(f"host_index={host_index}: must be in [0, host_count={host_count})")
    out_dir = os.path.abspath(os.fspath(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    n_documents = len(source)
    if n_documents == 0:
        raise ValueError(f"the corpus has no documents: {_corpus_name(source)}")
    count = min(shards, n_documents)
    fingerprint = tokenizer_fingerprint(tokenizer)
    plan = preparation_plan(source, tokenizer, seq_len, count)
    bounds = [i * n_documents // count for i in range(count + 1)]
    todo = []
    for index in range(host_index, count, host_count):
        done = _shard_info(out_dir, index, count)
        if done is not None and done.get("plan") != plan:
            raise ValueError(f"{out_dir} holds shards of another preparation (tokenizer, seq_len, corpus or shard "
                             f"count differ): use another --out directory or delete it")
        if done is None:
            todo.append(_ShardJob(source, (tokenizer.spm_path, tokenizer.do_lower_case, tokenizer.normalization),
                                  seq_len, out_dir, index, count, bounds[index], bounds[index + 1], plan))
    mine = len(range(host_index, count, host_count))
    log(f"prepare-data: {count} shards, host {host_index} of {host_count} has {mine}, {mine - len(todo)} already "
        f"complete, {len(todo)} to prepare with {workers} worker(s)")
    t0 = time.perf_counter()
    if workers == 1 or len(todo) <= 1:
        results = [_prepare_shard(job) for job in todo]
    else:  # spawn: the caller may hold threads (JAX's), which a forked child would inherit broken
        pool = multiprocessing.get_context("spawn").Pool(min(workers, len(todo)))
        try:
            results = list(pool.imap_unordered(_prepare_shard, todo))
            pool.close()  # workers exit by themselves (terminate would leak their semaphores: tqdm's lock)
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()
    if results:
        tokens = sum(r["tokens"] for r in results)
        seconds = time.perf_counter() - t0
        log(f"prepare-data: {len(results)} shards, {tokens} tokens in {seconds:.1f} s "
            f"({tokens / max(seconds, 1e-9):,.0f} tokens/s with {workers} worker(s))")
    infos = [_shard_info(out_dir, index, count) for index in range(count)]
    if any(info is None for info in infos):
        return None
    manifest = {"format": FORMAT, "version": VERSION, "seq_len": seq_len, "tokenizer": fingerprint,
                "source": source.describe(), "plan": plan,
                "rows": sum(i["rows"] for i in infos), "tokens": sum(i["tokens"] for i in infos),
                "shards": [{k: i[k] for k in ("file", "rows", "tokens", "documents")} for i in infos]}
    if manifest["rows"] == 0:
        raise ValueError(f"the corpus has no tokens: no documents with text in {_corpus_name(source)}")
    _write_json_atomically(os.path.join(out_dir, MANIFEST), manifest)
    return manifest


def _corpus_name(source: TextFiles | TfdsText) -> str:
    return ", ".join(source.paths) if isinstance(source, TextFiles) else f"tfds {source.name} split {source.split}"


# ---------------------------------------------------------------------------------------------- reading
def read_manifest(directory: str | os.PathLike, tokenizer: DebertaV3Tokenizer | None = None,
                  seq_len: int | None = None) -> dict:
    """The manifest of a prepared directory, checked against the tokenizer and seq_len the reader uses."""
    path = os.path.join(os.fspath(directory), MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {MANIFEST} in {directory}: not a prepared corpus, or not every host's shards "
                                f"are prepared yet (deberta-jax prepare-data)")
    with open(path, encoding="utf-8") as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(f"{path}: format {manifest.get('format')!r} version {manifest.get('version')!r}, this "
                         f"deberta-jax reads {FORMAT!r} version {VERSION}")
    if seq_len is not None and manifest["seq_len"] != seq_len:
        raise ValueError(f"{path}: prepared with seq_len={manifest['seq_len']}, but data.seq_len={seq_len}")
    if tokenizer is not None:
        ours = tokenizer_fingerprint(tokenizer)
        theirs = manifest["tokenizer"]
        different = [k for k in ours if ours[k] != theirs.get(k)]
        if different:
            raise ValueError(f"{path}: prepared with another tokenizer than {tokenizer.spm_path} "
                             f"({', '.join(different)} differ)")
    for shard in manifest["shards"]:
        if not os.path.exists(os.path.join(os.fspath(directory), shard["file"])):
            raise FileNotFoundError(f"{directory}: shard {shard['file']} of {MANIFEST} is missing")
    return manifest


def shard_paths(directory: str | os.PathLike, manifest: dict) -> list[str]:
    """The non-empty shards' files, in order: global row r is row r - first(shard) of its shard."""
    return [os.path.join(os.fspath(directory), s["file"]) for s in manifest["shards"] if s["rows"]]


def decode_row(record: bytes, seq_len: int, pad_id: int, sep_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids [seq_len] int32, attention_mask [seq_len] int32) of one record: the mask covers up to the row's
    last [SEP]; only the last row of a shard has padding after it."""
    ids = np.frombuffer(record, "<i4").astype(np.int32)
    if ids.shape != (seq_len,):
        raise ValueError(f"a prepared row has {ids.size} ids, the manifest says seq_len={seq_len}")
    length = seq_len
    if ids[-1] == pad_id:
        length = int(np.flatnonzero(ids == sep_id)[-1]) + 1
    return ids, (np.arange(seq_len) < length).astype(np.int32)
