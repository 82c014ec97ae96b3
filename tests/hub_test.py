"""Hub ids wherever a model directory is accepted, offline: a Hub cache the test writes in the layout huggingface_hub
documents, and a Hub stand-in on 127.0.0.1 (HF_ENDPOINT) serving the two endpoints huggingface_hub 2.4's
`hf_hub_download` calls: HEAD and GET /{owner}/{name}/resolve/{revision}/{file}."""

import hashlib
import http.server
import json
import pathlib
import shutil
import threading

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from deberta_jax.cli import main as cli
from deberta_jax.config import preset
from deberta_jax.conversion import safetensors_io
from deberta_jax.conversion.hf_checkpoint import load_pretrained, save_pretrained
from deberta_jax.conversion.hub import resolve_model, resolve_tokenizer
from deberta_jax.model.modeling import DebertaForSequenceClassification, DebertaModel, init_params
from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer
from deberta_jax.tokenization.training import train_spm_tokenizer

REPO = "someone/tiny-deberta"
COMMITS = {"main": "a" * 40, "v1": "b" * 40, "legacy": "c" * 40, "sharded": "e" * 40}
BIG = "flax_model.msgpack"  # in the repo, never needed
WORDS = "the quick brown fox jumps over lazy dog while a cat sleeps in warm sun and birds sing on old trees".split()
TEXT = "\n".join(" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(12)) for i in range(200))


def _save(directory, model, seed, tokenizer):
    save_pretrained(directory, model, init_params(model, jax.random.PRNGKey(seed)))
    tokenizer.save_pretrained(directory)
    return {p.name: p.read_bytes() for p in directory.iterdir()}


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    """Local copies of what the Hub stand-in serves: {revision: directory}."""
    root = tmp_path_factory.mktemp("hub_models")
    (root / "corpus.txt").write_text(TEXT, encoding="utf-8")
    tokenizer = train_spm_tokenizer([str(root / "corpus.txt")], str(root / "tokenizer"), 40)
    config = preset("deberta-v3-xsmall", vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, position_buckets=8, max_relative_positions=32)
    directories = {}
    for revision, seed in (("main", 0), ("v1", 1)):
        directories[revision] = root / revision
        _save(root / revision, DebertaModel(config), seed, tokenizer)
    directories["legacy"] = root / "legacy"  # the weights only as pytorch_model.bin (bytes never parsed here)
    directories["legacy"].mkdir()
    shutil.copy(root / "main" / "config.json", root / "legacy" / "config.json")
    (root / "legacy" / "pytorch_model.bin").write_bytes(b"not read by this test")
    directories["sharded"] = root / "sharded"  # v1's weights in two shards, as transformers writes big models
    directories["sharded"].mkdir()
    state = safetensors_io.load_file(root / "v1" / "model.safetensors")
    shards = {name: f"model-0000{1 + i % 2}-of-00002.safetensors" for i, name in enumerate(sorted(state))}
    for shard in set(shards.values()):
        safetensors_io.save_file({k: v for k, v in state.items() if shards[k] == shard}, root / "sharded" / shard)
    (root / "sharded" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": shards}))
    for name in ("config.json", "spm.model", "tokenizer_config.json"):
        shutil.copy(root / "v1" / name, root / "sharded" / name)
    directories["sst2"] = root / "sst2"
    _save(root / "sst2", DebertaForSequenceClassification(config.replace(num_labels=2)), 2, tokenizer)
    return directories


class FakeHub(http.server.ThreadingHTTPServer):
    """Serves {repo: {revision: (commit, {filename: bytes})}}; a commit hash also works as its revision. Records
    (method, path) of every file request."""

    def __init__(self, repos):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos = repos
        self.requests = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_port}"

    def requested(self, method):
        return sorted(path.rsplit("/", 1)[-1] for m, path in self.requests if m == method)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _answer(self, body):
        parts = self.path.lstrip("/").split("/", 4)
        if len(parts) != 5 or parts[2] != "resolve":
            return self._error(404, "NotAHubFileRequest")
        self.server.requests.append((self.command, self.path))
        owner, name, _, revision, filename = parts
        revisions = self.server.repos.get(f"{owner}/{name}")
        if revisions is None:
            return self._error(401, "RepoNotFound")
        by_commit = {commit: (commit, files) for commit, files in revisions.values()}
        commit, files = revisions.get(revision) or by_commit.get(revision) or (None, None)
        if commit is None:
            return self._error(404, "RevisionNotFound")
        if filename not in files:
            return self._error(404, "EntryNotFound", commit)
        data = files[filename]
        self.send_response(200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status, code, commit=None):
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def fake_hub(repos):
    served = {revision: (COMMITS.get(revision, "d" * 40), {p.name: p.read_bytes() for p in directory.iterdir()})
              for revision, directory in repos.items()}
    served["main"][1][BIG] = bytes(16 << 20)
    no_tokenizer = {"config.json": served["main"][1]["config.json"], "model.safetensors": b"x"}
    server = FakeHub({REPO: {k: v for k, v in served.items() if k != "sst2"},
                      "someone/tiny-sst2": {"main": served["sst2"]},
                      "someone/no-tokenizer": {"main": (COMMITS["main"], no_tokenizer)}})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def hub_constants(monkeypatch):
    """huggingface_hub reads its environment once, at import (whichever test imports it first): these tests set
    the environment and rely on deberta-jax reading it at each call."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # No user-agent telemetry: it would ask the endpoint huggingface_hub was imported with for its agent registry.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)


@pytest.fixture
def hub_env(fake_hub, tmp_path, monkeypatch):
    """A fresh, empty Hub cache under HF_HOME and the stand-in as HF_ENDPOINT."""
    fake_hub.requests.clear()
    for name in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    return fake_hub


def _assert_same_params(a, b):
    a, b = flatten_dict(a), flatten_dict(b)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=str(key))


def _one_error_line(capsys):
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("deberta-jax: error: ")]
    return line


def test_a_hub_id_downloads_only_the_files_needed(hub_env, repos, tmp_path):
    model, params = load_pretrained(REPO)
    _, local_params = load_pretrained(repos["main"])
    _assert_same_params(params, local_params)
    # The weights come from the commit that config.json resolved to.
    commit = COMMITS["main"]
    assert hub_env.requests == [("HEAD", f"/{REPO}/resolve/main/config.json"),
                                ("GET", f"/{REPO}/resolve/main/config.json"),
                                ("HEAD", f"/{REPO}/resolve/{commit}/model.safetensors"),
                                ("GET", f"/{REPO}/resolve/{commit}/model.safetensors")]
    tokenizer = DebertaV3Tokenizer.from_pretrained(REPO)
    assert tokenizer.encode("the lazy cat jumps") == DebertaV3Tokenizer.from_pretrained(repos["main"]).encode(
        "the lazy cat jumps")
    assert hub_env.requested("GET") == ["config.json", "model.safetensors", "spm.model", "tokenizer_config.json"]
    assert not [path for _, path in hub_env.requests if BIG in path]
    assert tokenizer.spm_path.startswith(str(tmp_path / "hf_home" / "hub"))

    hub_env.requests.clear()
    load_pretrained(REPO)  # cached: one HEAD to learn main's commit, no download
    assert hub_env.requested("GET") == []


def test_a_revision_reaches_the_hub(hub_env, repos):
    _, params = load_pretrained(REPO, revision="v1")
    _, local_params = load_pretrained(repos["v1"])
    _assert_same_params(params, local_params)
    assert hub_env.requests[0] == ("HEAD", f"/{REPO}/resolve/v1/config.json")


def test_a_sharded_checkpoint_comes_with_its_shards(hub_env, repos):
    _, params = load_pretrained(REPO, revision="sharded")
    _assert_same_params(params, load_pretrained(repos["v1"])[1])
    assert hub_env.requested("GET") == ["config.json", "model-00001-of-00002.safetensors",
                                        "model-00002-of-00002.safetensors", "model.safetensors.index.json"]


def test_without_safetensors_the_pytorch_bin_is_fetched(hub_env):
    directory = resolve_model(REPO, "legacy")
    assert sorted(p.name for p in pathlib.Path(directory).iterdir()) == ["config.json", "pytorch_model.bin"]
    heads = [path.rsplit("/", 1)[-1] for m, path in hub_env.requests if m == "HEAD"]
    assert heads == ["config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"]


def test_offline_reads_a_cache_in_the_hub_layout(repos, tmp_path, monkeypatch, capsys):
    # The layout huggingface_hub documents: models--{owner}--{name}/refs/{revision} holds the commit, and
    # snapshots/{commit}/ the files.
    storage = tmp_path / "hf_home" / "hub" / "models--someone--tiny-deberta"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(COMMITS["main"])
    shutil.copytree(repos["main"], storage / "snapshots" / COMMITS["main"])
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing may be asked of it
    _, params = load_pretrained(REPO)
    _, local_params = load_pretrained(repos["main"])
    _assert_same_params(params, local_params)
    assert DebertaV3Tokenizer.from_pretrained(REPO).vocab_size == DebertaV3Tokenizer.from_pretrained(
        repos["main"]).vocab_size
    assert cli(["convert", REPO, str(tmp_path / "converted")]) == 0
    assert (tmp_path / "converted" / "deberta_jax.json").exists()

    assert cli(["convert", "someone/not-cached", str(tmp_path / "out")]) == 1
    line = _one_error_line(capsys)
    assert "'someone/not-cached'" in line and "config.json is not in the cache" in line and "HF_HUB_OFFLINE" in line
    assert cli(["convert", REPO, str(tmp_path / "out"), "--revision", "v1"]) == 1
    assert "(revision v1)" in _one_error_line(capsys)


@pytest.mark.parametrize("argv,expected", [
    (["convert", "someone/no-such-model"], "'someone/no-such-model' is neither a local path nor a model on the Hub"),
    (["convert", REPO, "--revision", "v9"], "Hub model 'someone/tiny-deberta' has no revision 'v9'"),
    (["finetune", "--task", "sst2", "--model", "someone/no-tokenizer", "--workdir", "W"],
     "Hub model 'someone/no-tokenizer' (revision main) has no spm.model: is it a DeBERTa-v2/v3 repo with its "
     "sentencepiece model?"),
])
def test_hub_errors_are_one_clear_line(argv, expected, hub_env, tmp_path, capsys):
    argv = [str(tmp_path / a) if a == "W" else a for a in argv]
    if argv[0] == "convert":
        argv.insert(2, str(tmp_path / "out"))
    assert cli(argv) == 1
    assert expected in _one_error_line(capsys)


def test_no_weights_and_not_a_hub_are_named(hub_env, monkeypatch):
    del hub_env.repos[REPO]["legacy"][1]["pytorch_model.bin"]
    try:
        with pytest.raises(FileNotFoundError, match="has none of model.safetensors, model.safetensors.index.json, "
                                                    "pytorch_model.bin"):
            resolve_model(REPO, "legacy")
    finally:
        hub_env.repos[REPO]["legacy"][1]["pytorch_model.bin"] = b"not read by this test"
    monkeypatch.setenv("HF_ENDPOINT", f"{hub_env.url}/not-the-hub")  # a web server, but no Hub there
    with pytest.raises(ConnectionError, match=rf"could not download config.json from {hub_env.url}/not-the-hub, and "
                                              r"it is not in the cache .*: check the network \(or HF_ENDPOINT\).*404"):
        resolve_model(REPO)


@pytest.mark.slow  # huggingface_hub retries a refused connection with backoff for about 20 s
def test_no_network_is_named(hub_env, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9 (discard)
    with pytest.raises(ConnectionError, match=r"could not download config.json from http://127.0.0.1:9.*"
                                              r"(?i:connect)"):
        resolve_model(REPO)


def test_a_local_path_wins_and_takes_no_revision(hub_env, repos, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(repos["v1"], tmp_path / REPO)
    _, params = load_pretrained(REPO)
    _assert_same_params(params, load_pretrained(repos["v1"])[1])
    assert resolve_tokenizer(REPO) == REPO and hub_env.requests == []
    with pytest.raises(ValueError, match="revision 'v1' is for Hub ids"):
        load_pretrained(REPO, revision="v1")


def test_predict_and_finetune_take_a_hub_id_and_revision(hub_env, tmp_path, monkeypatch, capsys):
    glue = tmp_path / "glue" / "SST-2"
    glue.mkdir(parents=True)
    (glue / "test.tsv").write_text("index\tsentence\n" + "".join(f"{i}\tthe lazy cat {i}\n" for i in range(5)))
    assert cli(["predict", "--task", "sst2", "--model", "someone/tiny-sst2", "--revision", "main", "--data",
                str(tmp_path / "glue"), "--out", str(tmp_path / "out")]) == 0
    assert len((tmp_path / "out" / "SST-2.tsv").read_text().splitlines()) == 6
    assert hub_env.requests[0] == ("HEAD", "/someone/tiny-sst2/resolve/main/spm.model")

    import deberta_jax.finetuning.train as finetuning
    seen = {}

    def finetune(cfg, workdir, resume):  # the command's config is what this test is after, not a run
        seen["cfg"] = cfg
        return {"task": cfg.task, "best": {}, "steps_per_second": 1.0, "export": workdir}

    monkeypatch.setattr(finetuning, "finetune", finetune)
    assert cli(["finetune", "--task", "sst2", "--model", REPO, "--revision", "v1", "--workdir", str(tmp_path)]) == 0
    assert (seen["cfg"].model, seen["cfg"].revision) == (REPO, "v1")


@pytest.mark.slow
@pytest.mark.reference
def test_parity_on_a_hub_id(hub_env, capsys):
    assert cli(["parity", REPO, "--revision", "v1", "--seq-len", "16"]) == 0
    assert "PASS" in capsys.readouterr().out
