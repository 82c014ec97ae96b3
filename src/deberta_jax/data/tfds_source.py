"""A split of a tensorflow-datasets dataset as a random-access source, prepared on first use, without TensorFlow.

    source = prepared_data_source("glue/sst2", "train", data_dir=None)   # len(source), source[i] -> {feature: value}

The first call downloads the dataset and writes it as array_record files under `data_dir` (tfds' default:
$TFDS_DATA_DIR or ~/tensorflow_datasets); later calls read those files. Several JAX processes: process 0 prepares. A dataset's builder module must be imported
(registered) before the call; `tensorflow_datasets.text.glue` for GLUE.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import types

log = logging.getLogger(__name__)


def _as_text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _open(path, mode: str = "r"):
    from etils import epath

    return epath.Path(path).open(mode)


# What tfds' archive extractor asks of TensorFlow: tf.compat.as_text on member names, tf.io.gfile.GFile to read the
# archive and write each member.
_PLAIN_PYTHON_TF = types.SimpleNamespace(compat=types.SimpleNamespace(as_text=_as_text),
                                         io=types.SimpleNamespace(gfile=types.SimpleNamespace(GFile=_open)))


@contextlib.contextmanager
def extraction_without_tensorflow():
    """While open, tfds' archive extractor runs on plain Python where TensorFlow is not installed.

    In tensorflow-datasets 4.9.10, extracting a downloaded archive (download_and_extract: GLUE's zip files) is the one
    step of download_and_prepare that imports TensorFlow (core/download/extractor.py: tf.compat.as_text,
    tf.io.gfile.GFile); downloading, generating and writing array_record files need none. Where TensorFlow is
    installed, or a tfds without that module attribute is, nothing is changed.
    """
    from tensorflow_datasets.core.download import extractor

    if importlib.util.find_spec("tensorflow") is not None or not hasattr(extractor, "tf"):
        yield
        return
    original = extractor.tf
    extractor.tf = _PLAIN_PYTHON_TF
    try:
        yield
    finally:
        extractor.tf = original


def prepared_data_source(name: str, split: str, data_dir: str | None = None):
    """`split` of tfds dataset `name` as an ArrayRecordDataSource; downloads and prepares it first if `data_dir`
    does not hold it yet. A failed preparation raises RuntimeError naming the dataset, the directory and the cause."""
    import tensorflow_datasets as tfds

    from deberta_jax.distributed import all_processes_reach, is_main_process

    # array_record, tfds' only random-access format, whether or not data_dir is given (tfds.data_source picks it only
    # when neither data_dir nor builder_kwargs are given; its default otherwise, tfrecord, needs TensorFlow to write).
    def builder():
        return tfds.builder(name, data_dir=data_dir, file_format="array_record")

    # In a run of several processes sharing data_dir, process 0 prepares and the others read what it wrote.
    preparing = builder() if is_main_process() else None
    if preparing is not None and not preparing.is_prepared():
        log.info("preparing %s in %s (download, then array_record files; once)", name, preparing.data_dir)
        try:
            with extraction_without_tensorflow():
                preparing.download_and_prepare()
        except Exception as error:
            raise RuntimeError(
                f"could not prepare tfds dataset {name} in {preparing.data_dir}: {type(error).__name__}: {error}. "
                "It is downloaded once: without internet, prepare it on a machine with internet and copy that data "
                "directory here") from error
    all_processes_reach(f"tfds {name} prepared")
    return builder().as_data_source(split=split)
