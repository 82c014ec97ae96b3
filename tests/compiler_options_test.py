"""A recipe's `compiler` section: each platform's options reach that platform's compile of the real train step,
and no other's; an option the compiler does not know, or a value that is not a scalar, is a one-line ConfigError
naming its key.

The proof that options reach the compiler is XLA's own `xla_dump_to`: the compile writes its programs there only
when the option arrives.
"""

import importlib.util

import jax
import pytest

from deberta_jax.config_tree import ConfigError
from deberta_jax.pretraining.config import load_pretrain_config
from deberta_jax.sharding.mesh import make_mesh
from deberta_jax.tpu.compile import pretrain_step
from deberta_jax.training.compiler_options import CompilerSection, mesh_compiler_options

TINY = ["data.seq_len=16", "data.batch_size=4", "model.overrides.num_hidden_layers=2",
        "model.overrides.hidden_size=32", "model.overrides.intermediate_size=64",
        "model.overrides.num_attention_heads=2"]
needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed")


def _compile(sets, devices):
    spec = pretrain_step(load_pretrain_config("tiny_cpu", [*TINY, *sets]), devices)
    spec.step.lower(*spec.args).compile()
    return spec


def _dumped(path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def _dumped_step(path) -> bool:
    """Whether XLA dumped the train step's program (`module_NNNN.jit_step[.cl_ID].before_optimizations.txt`), not
    only the trivial program that checks the options."""
    return any(".jit_step." in name and name.endswith("before_optimizations.txt") for name in _dumped(path))


def test_a_cpu_option_reaches_the_train_step_compile(tmp_path):
    dump = tmp_path / "dump"
    spec = _compile([f"compiler.cpu.xla_dump_to={dump}"], jax.devices()[:1])
    assert spec.describe["compiler_options"] == {"xla_dump_to": str(dump)}
    assert _dumped_step(dump), _dumped(dump)


def test_another_platforms_options_stay_out_of_a_cpu_compile():
    # XLA:CPU rejects a TPU flag ("No such compile option"), so compiling proves it was left out.
    spec = _compile(["compiler.tpu.xla_tpu_enable_windowed_einsum_for_all_gather=false"], jax.devices()[:1])
    assert spec.describe["compiler_options"] == {}


def test_an_unknown_option_is_one_line_naming_its_key():
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    with pytest.raises(ConfigError) as error:
        mesh_compiler_options(CompilerSection(cpu={"xla_no_such_option": True}), mesh, "PretrainConfig.compiler")
    message = str(error.value)
    assert message.startswith("PretrainConfig.compiler.cpu.xla_no_such_option: not an option of XLA's cpu compiler")
    assert "\n" not in message


def test_options_must_be_scalars_by_name():
    with pytest.raises(ConfigError, match=r"tiny_cpu.json: PretrainConfig.compiler.gpu=.*must map option names to booleans"):
        load_pretrain_config("tiny_cpu", ['compiler.gpu={"xla_gpu_flag": [1, 2]}'])


@needs_libtpu
def test_a_recipes_tpu_options_reach_the_tpu_compiler_and_the_report_and_a_misspelt_one_is_named(tmp_path):
    from deberta_jax.tpu.report import compile_for_topology, summary_lines

    dump = tmp_path / "dump"
    sets = [f"compiler.tpu.xla_dump_to={dump}", "compiler.tpu.xla_tpu_enable_windowed_einsum_for_all_gather=false"]
    report = compile_for_topology("tiny_cpu", "v5e-4", overrides=[*TINY, *sets])
    assert report["step"]["compiler_options"] == {"xla_dump_to": str(dump),
                                                  "xla_tpu_enable_windowed_einsum_for_all_gather": False}
    assert _dumped_step(dump), _dumped(dump)
    assert (f'  compiler options xla_dump_to="{dump}" xla_tpu_enable_windowed_einsum_for_all_gather=false'
            in summary_lines(report))
    with pytest.raises(ConfigError, match=r"^FinetuneConfig.compiler.tpu.xla_tpu_windowed_einsum: not an option"):
        compile_for_topology("tiny_cpu", "v5e-4", finetune_task="sst2",
                             overrides=["batch_size=4", "max_length=16", "compiler.tpu.xla_tpu_windowed_einsum=false"])
