"""A local directory or a Hugging Face Hub id (`owner/name`) -> a local directory holding the files asked for.

A path that exists locally wins; anything else shaped like `owner/name` is a Hub id, and only the files a caller
needs are downloaded, one `hf_hub_download` each, into the Hub cache. The environment is read at each call, not
when huggingface_hub was imported: HF_ENDPOINT, HF_HOME / HF_HUB_CACHE and HF_HUB_OFFLINE (only the cache then).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re

from deberta_jax.config_tree import read_json

log = logging.getLogger(__name__)

# The Hub's repo names: letters, digits, '-', '_', '.', one owner and one name.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# What load_pretrained reads (hf_checkpoint.read_state_dict), in the order it prefers them.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_TRUE = ("1", "ON", "YES", "TRUE")


def is_hub_id(name_or_path: str | os.PathLike) -> bool:
    """True for `owner/name` that is not a local path."""
    text = os.fspath(name_or_path)
    return not os.path.exists(text) and _HUB_ID.fullmatch(text) is not None


def resolve_model(name_or_path: str | os.PathLike, revision: str | None = None) -> str:
    """A directory with config.json and the weights (model.safetensors, else a sharded safetensors index and its
    shards, else pytorch_model.bin) of a local directory or a Hub id at `revision` (branch, tag or commit)."""
    repo = _hub_repo(name_or_path, revision, "a DeBERTa checkpoint in HF format")
    if repo is None:
        return os.fspath(name_or_path)
    repo, directory = repo.pinned("config.json")
    weights = repo.first_of(WEIGHT_FILES)
    if weights.endswith(".index.json"):
        for shard in sorted(set(read_json(weights)["weight_map"].values())):
            repo.fetch(shard)
    return directory


def resolve_tokenizer(name_or_path: str | os.PathLike, revision: str | None = None) -> str:
    """A directory with spm.model (and tokenizer_config.json when the repo has one), or the local path as given
    (a directory or a `.model` file)."""
    repo = _hub_repo(name_or_path, revision, "a DeBERTa-v2/v3 repo with its sentencepiece model")
    if repo is None:
        return os.fspath(name_or_path)
    repo, directory = repo.pinned("spm.model")
    repo.fetch("tokenizer_config.json", optional=True)
    return directory


def _hub_repo(name_or_path: str | os.PathLike, revision: str | None, expected: str) -> "_HubRepo | None":
    if not is_hub_id(name_or_path):
        if revision is not None:
            what = "a local path" if os.path.exists(name_or_path) else "not one, nor a local path"
            raise ValueError(f"revision {revision!r} is for Hub ids (owner/name); {os.fspath(name_or_path)!r} is "
                             f"{what}")
        return None
    from huggingface_hub import constants  # only a Hub id needs huggingface_hub

    home = os.environ.get("HF_HOME")
    cache = os.environ.get("HF_HUB_CACHE") or (os.path.join(home, "hub") if home else constants.HF_HUB_CACHE)
    return _HubRepo(repo_id=os.fspath(name_or_path), revision=revision or "main", asked=revision or "main",
                    expected=expected,
                    endpoint=(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/"),
                    cache_dir=os.path.expanduser(os.path.expandvars(cache)),
                    offline=os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE or constants.HF_HUB_OFFLINE)


@dataclasses.dataclass(frozen=True)
class _HubRepo:
    """One Hub model repo at one revision; `asked` is the revision as the caller gave it and `expected` what the
    repo should be, for messages."""

    repo_id: str
    revision: str
    asked: str
    expected: str
    endpoint: str
    cache_dir: str
    offline: bool

    def pinned(self, filename: str) -> tuple["_HubRepo", str]:
        """Fetches `filename`; returns this repo pinned to the commit it came from (so every later file comes from
        the same commit, and from the cache without a request once there) and the snapshot directory."""
        path = self.fetch(filename)
        directory = os.path.dirname(path)
        commit = os.path.basename(directory)
        return dataclasses.replace(self, revision=commit), directory

    def first_of(self, filenames: tuple[str, ...]) -> str:
        """The local path of the first of `filenames` the repo has."""
        for filename in filenames:
            path = self.fetch(filename, optional=True)
            if path is not None:
                return path
        if self.offline:
            raise FileNotFoundError(f"Hub model {self.repo_id!r} (revision {self.asked}): none of "
                                    f"{', '.join(filenames)} is in the cache {self.cache_dir}, and HF_HUB_OFFLINE is "
                                    f"set: download the model once online, or pass a local directory")
        raise FileNotFoundError(f"Hub model {self.repo_id!r} (revision {self.asked}) has none of "
                                f"{', '.join(filenames)}: is it {self.expected}?")

    def fetch(self, filename: str, optional: bool = False) -> str | None:
        """The local path of `filename` (downloaded unless cached); None for a missing optional file."""
        from huggingface_hub import errors, hf_hub_download

        where = f"Hub model {self.repo_id!r} (revision {self.asked})"
        try:
            path = hf_hub_download(self.repo_id, filename, revision=self.revision, cache_dir=self.cache_dir,
                                   endpoint=self.endpoint, local_files_only=self.offline)
        except errors.RepositoryNotFoundError as e:
            raise FileNotFoundError(
                f"{self.repo_id!r} is neither a local path nor a model on the Hub at {self.endpoint}: check the "
                f"id; for a private or gated model, log in (hf auth login) or set HF_TOKEN") from e
        except errors.RevisionNotFoundError as e:
            raise FileNotFoundError(f"Hub model {self.repo_id!r} has no revision {self.asked!r}: give a branch, tag "
                                    f"or commit it has (--revision)") from e
        except errors.RemoteEntryNotFoundError as e:
            if optional:
                return None
            raise FileNotFoundError(f"{where} has no {filename}: is it {self.expected}?") from e
        except errors.LocalEntryNotFoundError as e:
            if self.offline and optional:  # offline, a file not cached may as well not exist
                return None
            if self.offline:
                raise FileNotFoundError(f"{where}: {filename} is not in the cache {self.cache_dir}, and "
                                        f"HF_HUB_OFFLINE is set: download the model once online, or pass a local "
                                        f"directory") from e
            cause = next((line for line in str(e.__cause__ or e).splitlines() if line.strip()), "")[:200]
            raise ConnectionError(f"{where}: could not download {filename} from {self.endpoint}, and it is not in "
                                  f"the cache {self.cache_dir}: check the network (or HF_ENDPOINT), or pass a local "
                                  f"directory ({cause})") from e
        log.info("%s: %s", where, path)
        return path
