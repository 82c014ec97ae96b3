"""What ships with the package besides code, read through importlib.resources so that it works from an installed
wheel as well as from a checkout.

    pretrain/NAME.json   pretraining recipes (`deberta-jax pretrain --config NAME`); corpus paths in a recipe are
                         relative to the recipe file
    glue/published.json  microsoft/DeBERTa's published GLUE fine-tuning settings, per task and model
    superglue/published.json  the same for SuperGLUE (COPA and ReCoRD: all that microsoft/DeBERTa publishes)
    glue/ours.json       our task-independent fine-tuning recipes (e.g. "tiny-cpu")
    ../corpora/          the small corpus the CPU recipe pretrains on (the King James Bible)
"""

from __future__ import annotations

import importlib.resources
import os


def recipe_path(kind: str, name: str) -> str:
    """The file of recipe `name` (without .json) of `kind` ("pretrain", "glue" or "superglue")."""
    return str(importlib.resources.files(__name__).joinpath(kind, name + ".json"))


def recipe_names(kind: str) -> list[str]:
    directory = importlib.resources.files(__name__).joinpath(kind)
    return sorted(entry.name[:-5] for entry in directory.iterdir() if entry.name.endswith(".json"))


def bundled_corpus(name: str = "kjv.txt.gz") -> str:
    """The path of a corpus that ships with the package."""
    path = str(importlib.resources.files("deberta_jax").joinpath("corpora", name))
    if not os.path.exists(path):
        raise FileNotFoundError(f"no bundled corpus {name!r} in {os.path.dirname(path)}")
    return path
