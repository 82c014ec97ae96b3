"""DeBERTa backbone and task models. Each is a linen module whose params mirror HF's state-dict layout.

Call with `model.apply({"params": params}, input_ids, attention_mask=..., token_type_ids=..., deterministic=True)`
(and `rngs={"dropout": key}` when deterministic=False): every argument after `input_ids` is keyword-only.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from deberta_jax.config import FUSED_ATTENTION_IMPLS, DebertaConfig
from deberta_jax.model.embeddings import DebertaEmbeddings
from deberta_jax.model.encoder import DebertaEncoder, LayerInputs
from deberta_jax.model.heads import ContextPooler, LegacyMLMHead, MLMPredictions
from deberta_jax.model.layers import dense, expand_mask


@flax.struct.dataclass
class DebertaOutput:
    """last_hidden_state [B, N, hidden]; hidden_states (embeddings first), attentions and what the last encoder
    layer received (`LayerInputs`) when asked for; logits for a head ([B, N, vocab] MLM, [B, labels]
    classification, [B, N, labels] token / QA, [B, C] choice); start_logits / end_logits [B, N] for question
    answering."""

    last_hidden_state: jnp.ndarray
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None
    last_layer_inputs: Optional[LayerInputs] = None
    logits: Optional[jnp.ndarray] = None
    start_logits: Optional[jnp.ndarray] = None
    end_logits: Optional[jnp.ndarray] = None


class DebertaModel(nn.Module):
    """The backbone (HF's `DebertaModel` / `DebertaV2Model`): embeddings + encoder.

    `external_word_embeddings`: own no word table; callers pass `inputs_embeds` (see DebertaEmbeddings).
    """

    config: DebertaConfig
    external_word_embeddings: bool = False

    def setup(self):
        self.embeddings = DebertaEmbeddings(self.config, self.external_word_embeddings)
        self.encoder = DebertaEncoder(self.config)

    def attend(self, hidden):
        """Tied decoder: [..., embedding_size] -> [..., padded_vocab]."""
        return self.embeddings.attend(hidden)

    def rerun_last_layer(self, received: LayerInputs, query_states, deterministic: bool = True):
        """The last encoder layer again on what it received, querying with `query_states` [B, N, hidden] (see
        `DebertaEncoder.rerun_last_layer`). Returns [B, N, hidden]."""
        return self.encoder.rerun_last_layer(received, query_states, deterministic)

    def __call__(self, input_ids=None, *, attention_mask=None, token_type_ids=None, position_ids=None,
                 inputs_embeds=None, embedding_perturbation=None, deterministic: bool = True,
                 output_hidden_states: bool = False, output_attentions: bool = False,
                 output_last_layer_inputs: bool = False) -> DebertaOutput:
        """The backbone's inputs; every head takes them too, by keyword after `input_ids`.

        Args:
          input_ids: int [B, N]; or inputs_embeds [B, N, embedding_size] instead.
          attention_mask: [B, N] (1 = token) or [B, N, N] (query may see key); default all ones.
          token_type_ids, position_ids: int [B, N].
          embedding_perturbation: [B, N, hidden] added to the normalised embeddings (SiFT), or None.
          output_hidden_states, output_attentions, output_last_layer_inputs: fill those fields of the output.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
        if len(shape) != 2:
            raise ValueError(f"input_ids must be [batch, seq]; got shape {tuple(shape)}")
        if attention_mask is None:
            attention_mask = jnp.ones(shape, jnp.int32)
        if attention_mask.shape[:2] != tuple(shape) or attention_mask.shape[-1] != shape[1]:
            raise ValueError(f"attention_mask shape {attention_mask.shape} does not fit inputs of shape {tuple(shape)}")
        if output_attentions and self.config.attention_impl in FUSED_ATTENTION_IMPLS:
            raise ValueError(f"output_attentions=True needs the probabilities, which attention_impl="
                             f"{self.config.attention_impl!r} never materialises; use 'reference' or 'skew'")
        _, token_mask = expand_mask(attention_mask)
        embedded = self.embeddings(input_ids, token_mask, token_type_ids, position_ids, inputs_embeds,
                                   deterministic=deterministic, perturbation=embedding_perturbation)
        hidden, probs, received = self.encoder(embedded, attention_mask, token_mask, deterministic=deterministic)
        return DebertaOutput(
            last_hidden_state=hidden[-1],
            hidden_states=hidden if output_hidden_states else None,
            attentions=probs if output_attentions else None,
            last_layer_inputs=received if output_last_layer_inputs else None,
        )


class _WithBackbone(nn.Module):
    """Shared wiring: runs the `deberta` backbone, then the subclass's `head` on its output.

    Call arguments are the backbone's: `input_ids`, then keywords (see `DebertaModel.__call__`).
    """

    config: DebertaConfig

    def __call__(self, input_ids=None, *, deterministic: bool = True, **backbone_kwargs) -> DebertaOutput:
        return self.head(self.deberta(input_ids, deterministic=deterministic, **backbone_kwargs), deterministic)

    def head(self, out: DebertaOutput, deterministic: bool) -> DebertaOutput:
        raise NotImplementedError


class DebertaForMaskedLM(_WithBackbone):
    """Backbone + MLM head with the decoder tied to the word embeddings (`cls.*` or `lm_predictions.*`).

    Call with `masked_positions` (int [B, M]) to compute logits [B, M, vocab] only there. The logits cover the
    `vocab_size` real ids; with `padded_vocab=True` they keep the padded width (`config.padded_vocab_size`, the
    padded ids' logits at the dtype's minimum), which the mesh axes divide: what the pretraining losses take.
    """

    def setup(self):
        self.deberta = DebertaModel(self.config)
        if self.config.legacy:
            self.cls = LegacyMLMHead(self.config)
        else:
            self.lm_predictions = MLMPredictions(self.config)

    def mlm_logits(self, hidden):
        """[..., hidden] -> [..., padded_vocab], the padded ids' masked; callers pass only the positions they
        score."""
        head = self.cls if self.config.legacy else self.lm_predictions
        return head(hidden, self.deberta.attend)

    def __call__(self, input_ids=None, *, masked_positions=None, padded_vocab: bool = False,
                 deterministic: bool = True, **backbone_kwargs) -> DebertaOutput:
        out = self.deberta(input_ids, deterministic=deterministic, **backbone_kwargs)
        return self.head(out, deterministic, masked_positions, padded_vocab)

    def head(self, out, deterministic, masked_positions=None, padded_vocab: bool = False):
        hidden = out.last_hidden_state
        if masked_positions is not None:
            hidden = jnp.take_along_axis(hidden, masked_positions[..., None], axis=1)
        logits = self.mlm_logits(hidden)
        return out.replace(logits=logits if padded_vocab else logits[..., :self.config.vocab_size])


class DebertaForSequenceClassification(_WithBackbone):
    """Backbone + ContextPooler + classifier; num_labels = 1 is regression."""

    def setup(self):
        cfg = self.config
        self.deberta = DebertaModel(cfg)
        self.pooler = ContextPooler(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob if cfg.cls_dropout is None else cfg.cls_dropout)
        self.classifier = dense(cfg, self.num_outputs, ("embed", "classes"))

    @property
    def num_outputs(self) -> int:
        return self.config.num_labels

    def head(self, out, deterministic):
        pooled = self.dropout(self.pooler(out.last_hidden_state, deterministic), deterministic=deterministic)
        return out.replace(logits=self.classifier(pooled))


class DebertaForTokenClassification(_WithBackbone):
    def setup(self):
        cfg = self.config
        self.deberta = DebertaModel(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.classifier = dense(cfg, cfg.num_labels, ("embed", "classes"))

    def head(self, out, deterministic):
        hidden = self.dropout(out.last_hidden_state, deterministic=deterministic)
        return out.replace(logits=self.classifier(hidden))


class DebertaForQuestionAnswering(_WithBackbone):
    """Span extraction: qa_outputs gives start and end logits per token (num_labels must be 2)."""

    def setup(self):
        cfg = self.config
        if cfg.num_labels != 2:
            raise ValueError(f"question answering needs num_labels=2 (start, end); got {cfg.num_labels}")
        self.deberta = DebertaModel(cfg)
        self.qa_outputs = dense(cfg, cfg.num_labels, ("embed", "classes"))

    def head(self, out, deterministic):
        logits = self.qa_outputs(out.last_hidden_state)
        return out.replace(logits=logits, start_logits=logits[..., 0], end_logits=logits[..., 1])


class DebertaForMultipleChoice(DebertaForSequenceClassification):
    """Inputs [B, C, N] (every array argument carries the choice axis); each choice is pooled and scored with one
    logit; logits [B, C]."""

    @property
    def num_outputs(self) -> int:
        return 1

    def __call__(self, input_ids=None, **backbone_kwargs) -> DebertaOutput:
        ref = input_ids if input_ids is not None else backbone_kwargs.get("inputs_embeds")
        if ref is None or ref.ndim < 3:
            raise ValueError("multiple choice inputs must be [batch, choices, seq]")
        batch, choices = ref.shape[:2]

        def flat(x):  # arrays lose the choice axis; flags and None pass through
            return x.reshape((batch * choices,) + x.shape[2:]) if isinstance(x, (jax.Array, np.ndarray)) else x

        out = super().__call__(flat(input_ids), **{k: flat(v) for k, v in backbone_kwargs.items()})
        return out.replace(logits=out.logits.reshape(batch, choices))


# head name -> (module class, HF architecture suffix)
HEADS = {
    None: (DebertaModel, "Model"),
    "masked_lm": (DebertaForMaskedLM, "ForMaskedLM"),
    "sequence_classification": (DebertaForSequenceClassification, "ForSequenceClassification"),
    "token_classification": (DebertaForTokenClassification, "ForTokenClassification"),
    "question_answering": (DebertaForQuestionAnswering, "ForQuestionAnswering"),
    "multiple_choice": (DebertaForMultipleChoice, "ForMultipleChoice"),
}


def head_of(model: nn.Module) -> str | None:
    """The head name of a model, by its nearest registered class (subclasses, e.g. pretraining models, map to
    the head whose params they extend)."""
    for cls in type(model).__mro__:
        for name, (registered, _) in HEADS.items():
            if registered is cls:
                return name
    raise TypeError(f"{type(model).__name__} is not a deberta-jax model")


def hf_architecture(config: DebertaConfig, head: str | None) -> str:
    """The transformers class name for a head, e.g. "DebertaV2ForMaskedLM"."""
    if head == "multiple_choice" and config.is_v1:
        raise ValueError("transformers has no DebertaForMultipleChoice for v1 (model_type='deberta')")
    return ("Deberta" if config.is_v1 else "DebertaV2") + HEADS[head][1]


def build_model(config: DebertaConfig, head: str | None = None) -> nn.Module:
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; known: {[h for h in HEADS if h]} or None")
    return HEADS[head][0](config)


def dummy_inputs(head: str | None, seq_len: int = 8) -> jnp.ndarray:
    """Token ids of the shape a head expects ([1, seq] or [1, 1, seq] for multiple choice)."""
    return jnp.zeros((1, 1, seq_len) if head == "multiple_choice" else (1, seq_len), jnp.int32)


def init_params(model: nn.Module, rng, seq_len: int = 8):
    """Freshly initialised params as a plain pytree (logical-axis boxes removed)."""
    head = head_of(model)
    return nn.meta.unbox(model.init(rng, dummy_inputs(head, seq_len))["params"])


def abstract_boxed_params(model: nn.Module, seq_len: int = 8):
    """ShapeDtypeStructs of the params in their logical-axis boxes, computed without allocating them."""
    head = head_of(model)
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), dummy_inputs(head, seq_len)))["params"]


def abstract_params(model: nn.Module, seq_len: int = 8):
    """ShapeDtypeStructs of the params, computed without allocating them."""
    return nn.meta.unbox(abstract_boxed_params(model, seq_len))
