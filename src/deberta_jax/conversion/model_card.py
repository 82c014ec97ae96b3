"""README.md model cards for exported HF directories: what the model is, the run that made it (recipe, steps,
data), its final metrics, and how to load it with deberta-jax and with transformers.

`model_card` builds the text from plain dicts (the export's config.json and the run's records); the writers read
config.json from the directory and put README.md beside it.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from deberta_jax.config_tree import read_json
from deberta_jax.model.modeling import HEADS

_HEAD_OF_SUFFIX = {suffix: head for head, (_, suffix) in HEADS.items()}
_PIPELINE = {None: "feature-extraction", "masked_lm": "fill-mask", "sequence_classification": "text-classification",
             "token_classification": "token-classification", "question_answering": "question-answering"}
_AUTO_CLASS = {None: "AutoModel", "masked_lm": "AutoModelForMaskedLM",
               "sequence_classification": "AutoModelForSequenceClassification",
               "token_classification": "AutoModelForTokenClassification",
               "question_answering": "AutoModelForQuestionAnswering", "multiple_choice": "AutoModelForMultipleChoice"}
_RTD_SHARING = {"gdes": "gradient-disentangled embedding sharing (GDES)", "es": "embedding sharing (ES)",
                "nes": "no embedding sharing (NES)"}


def head_of_architecture(config: Mapping[str, Any]) -> str | None:
    """The deberta-jax head of an HF config.json's `architectures` ("DebertaV2ForMaskedLM" -> "masked_lm")."""
    (architecture,) = config["architectures"]
    suffix = architecture.removeprefix("DebertaV2").removeprefix("Deberta")
    if suffix not in _HEAD_OF_SUFFIX:
        raise ValueError(f"config.json: unknown architecture {architecture!r}")
    return _HEAD_OF_SUFFIX[suffix]


def _number(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _table(rows: Sequence[tuple[str, Any]], header: tuple[str, str] = ("", "")) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    lines += [f"| {name} | {_number(value)} |" for name, value in rows]
    return "\n".join(lines)


def model_card(config: Mapping[str, Any], *, name: str, description: str, tags: Sequence[str],
               training: Sequence[tuple[str, Any]], run_config: Mapping[str, Any], data: str,
               metrics_note: str, metrics: Sequence[tuple[str, float]]) -> str:
    """The README.md of an exported directory.

    Args:
      config: the directory's config.json.
      name: the directory's name, used in the loading examples.
      description: what the model is, one paragraph.
      tags: Hub tags besides deberta-jax and the model type (e.g. the objective or task).
      training: (name, value) rows of the run's main settings; run_config: the run's whole configuration.
      data: what it was trained on, one paragraph.
      metrics_note: which step or checkpoint the metrics are of; metrics: (name, value) rows.
    """
    head = head_of_architecture(config)
    front = ["---", "library_name: transformers", "tags:", "- deberta-jax", f"- {config['model_type']}",
             *[f"- {tag}" for tag in tags]]
    if head in _PIPELINE:
        front.append(f"pipeline_tag: {_PIPELINE[head]}")
    front.append("---")
    attention_types = ", ".join(config.get("pos_att_type") or ["none"])
    relative = (f"relative attention: {config.get('position_buckets', 0)} position buckets, max relative positions "
                f"{config.get('max_relative_positions')}, attention types {attention_types}"
                if config.get("relative_attention") else "no relative attention")
    model_rows = [("architecture", f"{config['architectures'][0]} ({config['model_type']})"),
                  ("layers", config["num_hidden_layers"]), ("hidden size", config["hidden_size"]),
                  ("attention heads", config["num_attention_heads"]),
                  ("intermediate size", config["intermediate_size"]),
                  ("vocabulary", f"{config['vocab_size']} (sentencepiece, spm.model)"),
                  ("positions", relative)]
    if head == "sequence_classification":
        model_rows.append(("labels", len(config.get("id2label", {})) or 1))
    head_arg = "" if head is None else f", {head!r}"
    usage = f"""```python
from deberta_jax import load_pretrained
from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer

model, params = load_pretrained({name!r}{head_arg})
tokenizer = DebertaV3Tokenizer.from_pretrained({name!r})
```

```python
from transformers import {_AUTO_CLASS[head]}, AutoTokenizer

model = {_AUTO_CLASS[head]}.from_pretrained({name!r})
tokenizer = AutoTokenizer.from_pretrained({name!r})
```"""
    sections = [
        "\n".join(front),
        f"# {name}",
        description,
        "## Model",
        _table(model_rows),
        "## Training",
        _table(training),
        "The run's whole configuration:",
        "```json\n" + json.dumps(run_config, indent=2, sort_keys=True) + "\n```",
        "## Data",
        data,
        "## Results",
        metrics_note,
        _table(metrics, ("metric", "value")),
        "## Usage",
        "From this directory (run from its parent), or from its Hub id (`owner/name`) once uploaded:",
        usage,
        "Exported by deberta-jax (DeBERTa v1/v2/v3 in JAX/Flax).",
    ]
    return "\n\n".join(sections) + "\n"


def _write(directory: str, text: str) -> str:
    path = os.path.join(directory, "README.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _numeric(metrics: Mapping[str, Any], skip: Sequence[str] = ()) -> list[tuple[str, float]]:
    return [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and k not in skip]


def pretraining_card(config: Mapping[str, Any], role: str, run_config: Mapping[str, Any],
                     summary: Mapping[str, Any]) -> str:
    """The card of export/{role} (discriminator, generator or mlm) of a pretraining run with `run_config`
    (PretrainConfig.to_dict()) and `summary` (its summary.json)."""
    objective, data, model = run_config["objective"], run_config["data"], run_config["model"]
    if objective == "rtd":
        sharing = _RTD_SHARING[run_config["rtd"]["sharing"]]
        description = {
            "discriminator": "The discriminator of a DeBERTa-v3 style pretraining run with replaced token detection "
                             f"(RTD) and {sharing}: the backbone to fine-tune.",
            "generator": "The generator of a DeBERTa-v3 style pretraining run with replaced token detection (RTD) "
                         f"and {sharing}: the small masked language model that proposes the replaced tokens.",
        }[role]
        tags = ["replaced-token-detection"]
    else:
        emd = run_config["emd"]["steps"]
        description = ("A DeBERTa masked language model pretrained with masked language modelling (MLM)"
                       + (f" and the enhanced mask decoder ({emd} steps; its extra weights are not exported)."
                          if emd else "."))
        tags = ["masked-language-modeling"]
    corpus = data.get("corpus") or []
    source = (f"Text files: {', '.join(f'`{c}`' for c in corpus)}." if corpus else
              f"The tensorflow-datasets dataset `{data['tfds_dataset']}`, split `{data['tfds_split']}`.")
    tokenizer = (f"the sentencepiece model `{data['tokenizer']}`" if data.get("tokenizer") else
                 f"a {data['tokenizer_vocab_size']}-piece sentencepiece model trained on the same text")
    optimizer = run_config["optimizer"]
    training = [("objective", objective), ("steps", summary["steps"]),
                ("batch", f"{data['batch_size']} sequences of {data['seq_len']} tokens"
                          + (f" ({data['grad_accum_steps']} accumulation steps)" if data["grad_accum_steps"] > 1
                             else "")),
                ("learning rate", optimizer.get("learning_rate")),
                ("model preset", model["preset"] + (f" with {json.dumps(model['overrides'])}" if model["overrides"]
                                                    else "")),
                ("seed", run_config["seed"])]
    final = summary.get("final") or {}
    note = (f"The run's metrics at its last logged step ({final.get('step', summary['steps'])}), the mean over the "
            "steps since the log before it" + (" (mlm_*: the generator's, rtd_*: the discriminator's)"
                                               if objective == "rtd" else "") + ":")
    return model_card(config, name=role, description=description, tags=tags, training=training,
                      run_config=run_config, data=f"{source} Tokenized with {tokenizer}.", metrics_note=note,
                      metrics=_numeric(final, skip=("step",)))


def write_pretraining_cards(directories: Sequence[str], run_config: Mapping[str, Any],
                            summary: Mapping[str, Any]) -> list[str]:
    """README.md in each export directory of a pretraining run (named discriminator, generator or mlm)."""
    return [_write(d, pretraining_card(read_json(os.path.join(d, "config.json")), os.path.basename(d), run_config,
                                       summary)) for d in directories]


def finetuning_card(config: Mapping[str, Any], summary: Mapping[str, Any], name: str = "export") -> str:
    """The card of a fine-tuning export with `summary` (the run's metrics.json)."""
    run_config = summary["config"]
    task, source = summary["task"], run_config["model"]
    if run_config.get("revision"):
        source += f" (revision {run_config['revision']})"
    best = summary["best"]
    metrics = [(f"{split} {metric}", value) for split, values in best.get("metrics", {}).items()
               for metric, value in values.items()]
    data = run_config["data"]
    kind = "sequence regression" if len(config.get("id2label", {})) == 1 else "sequence classification"
    training = [("task", task), ("initialised from", source), ("steps", summary["steps"]),
                ("epochs", run_config["epochs"]), ("batch size", run_config["batch_size"]),
                ("max length", run_config["max_length"]),
                ("learning rate", run_config["optimizer"]["learning_rate"]),
                ("SiFT", "on" if run_config["sift"]["enabled"] else "off"), ("seed", run_config["seed"])]
    benchmark, short = ("SuperGLUE", task.split("/", 1)[1]) if task.startswith("superglue/") else ("GLUE", task)
    if (config.get("architectures") or [""])[0].endswith("ForMultipleChoice"):
        kind = "multiple-choice"
    return model_card(
        config, name=name, tags=[f"{benchmark.lower()}-{short}", "text-classification"], training=training,
        run_config=run_config,
        description=f"A DeBERTa model with a {kind} head, fine-tuned on the {benchmark} task {short} from {source}.",
        data=(f"{benchmark} {short} from " + ("tensorflow-datasets" if data == "tfds" else f"the directory `{data}`")
              + f": {summary['train_examples']} training examples ({summary['truncated_train_examples']} truncated "
              f"to {run_config['max_length']} tokens)."),
        metrics_note=(f"The best checkpoint by {summary['main_metric']}, at step {best.get('step')}, on the "
                      f"validation split(s):"),
        metrics=metrics)


def write_finetuning_card(directory: str, summary: Mapping[str, Any]) -> str:
    """README.md in a fine-tuning export directory."""
    config = read_json(os.path.join(directory, "config.json"))
    return _write(directory, finetuning_card(config, summary, os.path.basename(directory)))
