"""The config tree: typed sections, dotted overrides, recipe files, and the errors each mistake gives."""

import json

import pytest

from deberta_jax.config_tree import ConfigError, apply_overrides, from_dict, read_json
from deberta_jax.finetuning.train import FinetuneConfig, finetune_config
from deberta_jax.pretraining.config import PretrainConfig, load_pretrain_config


def test_dotted_overrides_reach_nested_sections_and_keep_the_rest():
    cfg = load_pretrain_config("tiny_cpu", ["optimizer.learning_rate=3e-4", "rtd.sharing=es",
                                            "model.overrides.hidden_size=64", "masking.mask_prob=0.2"])
    recipe = load_pretrain_config("tiny_cpu")
    assert cfg.optimizer.learning_rate == 3e-4 and cfg.optimizer.warmup_steps == recipe.optimizer.warmup_steps
    assert cfg.rtd.sharing == "es" and cfg.rtd.weight == 50.0
    assert cfg.model.overrides == {**recipe.model.overrides, "hidden_size": 64}
    # A partial section starts from the parent's default, not the section class's: max_ngram stays 1.
    assert cfg.masking.mask_prob == 0.2 and cfg.masking.max_ngram == 1
    assert cfg.data.corpus == recipe.data.corpus and all(p.endswith("kjv.txt.gz") for p in cfg.data.corpus)


def test_finetune_recipe_sections_merge_onto_finetuning_defaults():
    cfg = finetune_config("sst2", "m", recipe="base", overrides=["optimizer.layer_decay=0.8"])
    assert cfg.optimizer.learning_rate == 2e-5 and cfg.optimizer.warmup_steps == 500  # microsoft's sst2 base
    assert cfg.cls_dropout == 0.15 and cfg.epochs == 6.0
    assert cfg.optimizer.layer_decay == 0.8 and cfg.optimizer.weight_decay == 0.01
    default = FinetuneConfig(task="sst2", model="m")
    assert default.optimizer.warmup_ratio == 0.1 and default.loop.keep_checkpoints == 1
    only_lr = FinetuneConfig(task="sst2", model="m", optimizer={"learning_rate": 1e-3})
    assert only_lr.optimizer.warmup_ratio == 0.1  # FinetuneConfig's default section, not OptimizerConfig's 0.0
    assert FinetuneConfig(**only_lr.to_dict()) == only_lr  # a written config.json reads back equal


@pytest.mark.parametrize("override,message", [
    ("data.batch_size=16.5", r"PretrainConfig.data.batch_size=16.5: expected int"),
    ("steps=2.5", r"PretrainConfig.steps=2.5: expected int"),
    ("optimizer.learning_rate=abc", r"--set optimizer.learning_rate=abc: expected float"),
    ("optimizer.learning_rate=-1", r"PretrainConfig.optimizer.learning_rate=-1.0: must be > 0"),
    ("rtd.decoupled_clipping=maybe", r"expected bool"),
    ("optimizer.no_such=1", r"PretrainConfig.optimizer has no key 'no_such'"),
    ("optimizer=1", r"optimizer is a section"),
    ("steps.x=1", r"steps is not a section"),
    ("learning_rate", r"expected key=value"),
    ("loop.keep_checkpoints=0", r"keep_checkpoints=0: must be >= 1"),
    ("mesh.shape=[2,2]", r"PretrainConfig.mesh.shape=\(2, 2\)"),
    ("data.corpus=[]", r"PretrainConfig.data.corpus=\(\): give exactly one of data.corpus, data.tfds_dataset and data.prepared"),
])
def test_each_bad_override_is_one_config_error_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_pretrain_config("tiny_cpu", [override])


def test_unknown_keys_in_files_are_named_with_their_path(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"objective": "mlm", "data": {"corpus": ["x.txt"], "seq_length": 64}}))
    with pytest.raises(ConfigError, match=r"recipe.json: PretrainConfig.data: unknown key\(s\) \['seq_length'\]"):
        load_pretrain_config(str(path))
    with pytest.raises(ConfigError, match=r"FinetuneConfig: unknown key\(s\) \['learning_rate'\]"):
        from_dict(FinetuneConfig, {"task": "sst2", "model": "m", "learning_rate": 1e-3})


def test_json_errors_name_file_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "steps": 10,\n  "objective": mlm\n}\n')
    with pytest.raises(ConfigError, match=r"broken.json:3:16: invalid JSON"):
        read_json(path)
    path.write_bytes(b'{"steps": "\xff"}')
    with pytest.raises(ConfigError, match=r"broken.json, line 1, byte 11: not UTF-8 text"):
        read_json(path)


def test_overrides_leave_the_given_values_untouched():
    values = {"task": "sst2", "model": "m", "optimizer": {"learning_rate": 1e-3}}
    changed = apply_overrides(FinetuneConfig, values, ["optimizer.learning_rate=2e-3", "sift.enabled=true"])
    assert values == {"task": "sst2", "model": "m", "optimizer": {"learning_rate": 1e-3}}
    assert changed["optimizer"]["learning_rate"] == 2e-3 and changed["sift"] == {"enabled": True}


def test_pretrain_config_round_trips_through_its_dict():
    cfg = load_pretrain_config("v3_base")
    assert from_dict(PretrainConfig, json.loads(json.dumps(cfg.to_dict()))) == cfg
