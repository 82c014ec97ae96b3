"""`--data tfds` for SuperGLUE through tensorflow-datasets' real super_glue builder, offline and without TensorFlow:
the hand-written fixtures, zipped as SuperGLUE's downloads are, are served from 127.0.0.1; every task read through
tfds must give the examples that the JSONL reader gives from the same files."""

import functools
import http.server
import importlib.util
import pathlib
import threading
import zipfile

import pytest

from deberta_jax.data.superglue import readers, tasks

tfds = pytest.importorskip("tensorflow_datasets")
super_glue = pytest.importorskip("tensorflow_datasets.text.super_glue")

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "superglue"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds_superglue")
    served = root / "served"
    served.mkdir()
    for task in map(tasks.get_task, tasks.TASK_NAMES):
        with zipfile.ZipFile(served / f"{task.directory}.zip", "w") as archive:
            for path in (FIXTURES / task.directory).iterdir():
                archive.write(path, f"{task.directory}/{path.name}")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configs = {c.name: c for c in super_glue.SuperGlue.BUILDER_CONFIGS}
    try:
        with pytest.MonkeyPatch.context() as patch:
            for task in map(tasks.get_task, tasks.TASK_NAMES):
                patch.setattr(configs[task.short_name], "data_url",
                              f"http://127.0.0.1:{server.server_address[1]}/{task.directory}.zip")
            patch.setenv("NO_PROXY", "127.0.0.1")
            patch.setenv("TFDS_DATA_DIR", str(root / "not_this"))
            for name in tasks.TASK_NAMES:  # prepares each (download, extract, array_record) by its first read
                readers.load_split(name, "tfds", "test", data_dir=str(root / "data"))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert not (root / "not_this").exists()
    return root / "data"


def test_prepared_as_array_record_without_tensorflow(data_dir):
    assert importlib.util.find_spec("tensorflow") is None, "this test is about the path without TensorFlow"
    for name in tasks.TASK_NAMES:
        assert list((data_dir / tasks.get_task(name).tfds_name).glob("*/*.array_record*")), name


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_tfds_gives_the_jsonl_examples(data_dir, name):
    task = tasks.get_task(name)
    for split in task.splits:
        assert readers.load_split(task, "tfds", split, data_dir=str(data_dir)) == \
            readers.load_split(task, FIXTURES, split), (name, split)
