"""keras-hub's DeBERTa-v3 on the JAX backend, called through `stateless_call` under `jax.jit` (AOT-compiled)."""

from __future__ import annotations

import os
import time

import numpy as np

from benchmarks.cases import Case, make_inputs
from benchmarks.runners.base import ADAM_EPS, CLIP_NORM, LEARNING_RATE, WEIGHT_DECAY, JitRunner


def keras_not_applicable(cfg) -> str | None:
    """Why keras-hub's DebertaV3Backbone cannot express this config (None when it can)."""
    problems = []
    if cfg.is_v1:
        problems.append("v1 (keras-hub has DeBERTa-v3 only)")
    if not (cfg.relative_attention and cfg.position_buckets > 0 and cfg.share_att_key
            and set(cfg.pos_att_type) == {"c2p", "p2c"} and cfg.norm_rel_embeddings):
        problems.append("needs relative attention with log buckets, share_att_key, c2p|p2c and LayerNorm'd "
                        "relative embeddings")
    if cfg.position_biased_input or cfg.type_vocab_size or cfg.conv_kernel_size or cfg.embed_dim != cfg.hidden_size:
        problems.append("no absolute positions, token types, conv branch or embedding_size projection")
    if cfg.hidden_act != "gelu" or cfg.attention_head_size not in (None, cfg.hidden_size // cfg.num_attention_heads):
        problems.append("gelu and head_dim = hidden / heads only")
    if cfg.hidden_dropout_prob != cfg.attention_probs_dropout_prob:
        problems.append("one dropout rate for hidden states and attention")
    return "; ".join(problems) or None


def keras_import():
    """keras-hub on the JAX backend, or an exception that says why not."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"keras was already imported with backend {keras.backend.backend()!r}; set "
                           "KERAS_BACKEND=jax before anything imports keras")
    import keras_hub

    return keras, keras_hub


def copy_hf_weights_to_keras(backbone, state: dict[str, np.ndarray], mlm=None) -> None:
    """Copies transformers DebertaV2 weights (torch layout, `deberta.` prefixed) into keras-hub's layers."""
    heads = backbone.num_heads
    hidden = backbone.hidden_dim

    def put(var, value):
        value = np.asarray(value, np.float32)
        if tuple(var.shape) != value.shape:
            raise ValueError(f"{var.path}: keras shape {tuple(var.shape)} vs transformers {value.shape}")
        var.assign(value)

    def dense(layer, prefix, split_heads=False):
        w, b = state[prefix + ".weight"].T, state[prefix + ".bias"]
        if split_heads:
            w, b = w.reshape(hidden, heads, -1), b.reshape(heads, -1)
        put(layer.kernel, w)
        put(layer.bias, b)

    def norm(layer, prefix):
        put(layer.gamma, state[prefix + ".weight"])
        put(layer.beta, state[prefix + ".bias"])

    p = "deberta."
    put(backbone.token_embedding.embeddings, state[p + "embeddings.word_embeddings.weight"])
    norm(backbone.embeddings_layer_norm, p + "embeddings.LayerNorm")
    put(backbone.relative_embeddings.rel_embeddings, state[p + "encoder.rel_embeddings.weight"])
    norm(backbone.relative_embeddings.layer_norm, p + "encoder.LayerNorm")
    for i, layer in enumerate(backbone.transformer_layers):
        q = f"{p}encoder.layer.{i}."
        att = layer._self_attention_layer
        dense(att._query_dense, q + "attention.self.query_proj", split_heads=True)
        dense(att._key_dense, q + "attention.self.key_proj", split_heads=True)
        dense(att._value_dense, q + "attention.self.value_proj", split_heads=True)
        dense(att._output_dense, q + "attention.output.dense")
        norm(layer._self_attention_layer_norm, q + "attention.output.LayerNorm")
        dense(layer._feedforward_intermediate_dense, q + "intermediate.dense")
        dense(layer._feedforward_output_dense, q + "output.dense")
        norm(layer._feedforward_layer_norm, q + "output.LayerNorm")
    if mlm is not None:
        head = mlm.masked_lm_head
        dense(head._intermediate_dense, "cls.predictions.transform.dense")
        norm(head._intermediate_layer_norm, "cls.predictions.transform.LayerNorm")
        put(head._bias, state["cls.predictions.bias"])


class KerasRunner(JitRunner):
    family = "keras-hub"

    def __init__(self, case: Case, hf_state: dict):
        super().__init__(case, "keras-hub")
        self.hf_state = hf_state

    def build(self) -> None:
        reason = keras_not_applicable(self.case.cfg)
        if reason:
            raise RuntimeError(f"keras-hub DebertaV3Backbone cannot express this config: {reason}")
        keras, keras_hub = keras_import()
        import jax
        import jax.numpy as jnp

        t0 = time.perf_counter()
        cfg = self.case.cfg
        keras.utils.set_random_seed(self.case.seed)
        policy = "mixed_bfloat16" if self.case.dtype == "bfloat16" else "float32"
        backbone = keras_hub.models.DebertaV3Backbone(
            vocabulary_size=cfg.vocab_size, num_layers=cfg.num_hidden_layers, num_heads=cfg.num_attention_heads,
            hidden_dim=cfg.hidden_size, intermediate_dim=cfg.intermediate_size, dropout=cfg.hidden_dropout_prob,
            max_sequence_length=cfg.max_relative, bucket_size=cfg.position_buckets, dtype=policy)
        mlm = keras_hub.models.DebertaV3MaskedLM(backbone=backbone) if self.case.workload == "train" else None
        if mlm is not None:
            # keras-hub's MaskedLMHead builds its LayerNorm with epsilon 1e-5; transformers uses the config's.
            mlm.masked_lm_head._intermediate_layer_norm.epsilon = cfg.layer_norm_eps
            self.meta["mlm_head_layer_norm_epsilon"] = f"set to the config's {cfg.layer_norm_eps:g} (keras-hub: 1e-5)"
        try:
            copy_hf_weights_to_keras(backbone, self.hf_state, mlm)
            self.meta["weights"] = "the transformers weights, copied variable by variable"
        except Exception as e:  # noqa: BLE001 - keep keras-hub's own init and say so
            self.meta["weights"] = f"keras-hub's own random init (copying transformers weights failed: {e!r})"
        self.meta.update(executor="keras Model.stateless_call under jax.jit (AOT-compiled)", dtype_policy=policy)
        inputs = make_inputs(self.case)
        x = {"token_ids": jnp.asarray(inputs["input_ids"]), "padding_mask": jnp.asarray(inputs["attention_mask"])}
        self.model = mlm if mlm is not None else backbone
        tv = [v.value for v in self.model.trainable_variables]
        ntv = [v.value for v in self.model.non_trainable_variables]
        if self.case.workload == "forward":
            def forward(tv, ntv, x):
                return backbone.stateless_call(tv, ntv, x, training=False)[0]

            self.args = (tv, ntv, x)
            self.compiled = jax.jit(forward).lower(*self.args).compile()
        else:
            x["mask_positions"] = jnp.asarray(inputs["masked_positions"])
            y = jnp.asarray(inputs["masked_labels"])
            w = jnp.asarray(inputs["masked_weights"])
            optimizer = keras.optimizers.AdamW(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY,
                                               beta_1=0.9, beta_2=0.999, epsilon=ADAM_EPS, global_clipnorm=CLIP_NORM)
            optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
            optimizer.build(self.model.trainable_variables)
            ov = [v.value for v in optimizer.variables]
            loss_obj = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            model = self.model

            def train_step(state, x, y, w):
                tv, ntv, ov = state

                def loss_fn(tv):
                    logits, new_ntv = model.stateless_call(tv, ntv, x, training=True)
                    return loss_obj(y, logits, sample_weight=w), new_ntv

                (loss, new_ntv), grads = jax.value_and_grad(loss_fn, has_aux=True)(tv)
                new_tv, new_ov = optimizer.stateless_apply(ov, grads, tv)
                return (new_tv, new_ntv, new_ov), loss

            self.state = (tv, ntv, ov)
            self.batch = (x, y, w)
            self.compiled = jax.jit(train_step, donate_argnums=(0,)).lower(self.state, *self.batch).compile()

            def eval_logits(tv, ntv, x):
                return model.stateless_call(tv, ntv, x, training=False)[0]

            self.eval_logits = jax.jit(eval_logits)
            self.meta["train_step"] = ("value_and_grad of SparseCategoricalCrossentropy at the masked positions, "
                                       "keras AdamW (global_clipnorm 1.0, decay 0.01 off bias/LayerNorm); dropout on")
        self.compile_s = time.perf_counter() - t0

    def train_step(self):
        self.state, loss = self.compiled(self.state, *self.batch)
        return loss

    def check_output(self) -> np.ndarray:
        if self.case.workload == "forward":
            return np.asarray(self.compiled(*self.args), np.float32)
        tv, ntv, _ = self.state
        return np.asarray(self.eval_logits(tv, ntv, self.batch[0]), np.float32)
