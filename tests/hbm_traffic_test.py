"""The HBM-traffic estimate read from HLO text: loops weighted by their trip counts, on-core (S(1)) arrays free,
asynchronous moves counted once, fusions charged for the slices they read. Checked against closed forms on a
TPU-style program written here and on a program XLA compiled for this CPU."""

import textwrap

import jax
import jax.numpy as jnp
import pytest

from deberta_jax.tpu.hbm_traffic import hbm_bytes, hbm_traffic, source

# A loop of 5 trips (no known_trip_count: read from the condition's compare) whose body reads one [1024] f32 row of
# an [8, 1024] HBM table through a dynamic-slice fusion and adds an on-core (S(1)) vector; outside it, an
# asynchronous copy of 256 bf16 into on-core memory and a plain HBM -> HBM add.
TPU_STYLE = textwrap.dedent("""\
    HloModule jit_step, entry_computation_layout={(f32[8,1024]{1,0})->f32[1024]{0}}

    %fused_row (param_0: f32[8,1024], param_1: s32[], param_2: f32[1024]) -> f32[1024] {
      %param_0 = f32[8,1024]{1,0:T(8,128)} parameter(0)
      %param_1 = s32[]{:T(128)} parameter(1)
      %param_2 = f32[1024]{0:T(1024)S(1)} parameter(2)
      %zero = s32[]{:T(128)} constant(0)
      %ds = f32[1,1024]{1,0:T(1,128)} dynamic-slice(%param_0, %param_1, %zero), dynamic_slice_sizes={1,1024}
      %row = f32[1024]{0:T(1024)} bitcast(%ds)
      ROOT %sum = f32[1024]{0:T(1024)} add(%row, %param_2)
    }

    %body (state: (s32[], f32[8,1024], f32[1024])) -> (s32[], f32[8,1024], f32[1024]) {
      %state = (s32[]{:T(128)}, f32[8,1024]{1,0:T(8,128)}, f32[1024]{0:T(1024)S(1)}) parameter(0)
      %i = s32[]{:T(128)} get-tuple-element(%state), index=0
      %table = f32[8,1024]{1,0:T(8,128)} get-tuple-element(%state), index=1
      %bias = f32[1024]{0:T(1024)S(1)} get-tuple-element(%state), index=2
      %one = s32[]{:T(128)} constant(1)
      %next = s32[]{:T(128)} add(%i, %one)
      %out = f32[1024]{0:T(1024)} fusion(%table, %i, %bias), kind=kLoop, calls=%fused_row, metadata={op_name="jit(step)/while/body/closed_call/transpose(jvp(model))/encoder/layer_3/add"}
      ROOT %t = (s32[]{:T(128)}, f32[8,1024]{1,0:T(8,128)}, f32[1024]{0:T(1024)S(1)}) tuple(%next, %table, %bias)
    }

    %cond (state.1: (s32[], f32[8,1024], f32[1024])) -> pred[] {
      %state.1 = (s32[]{:T(128)}, f32[8,1024]{1,0:T(8,128)}, f32[1024]{0:T(1024)S(1)}) parameter(0)
      %i.1 = s32[]{:T(128)} get-tuple-element(%state.1), index=0
      %five = s32[]{:T(128)} constant(5)
      ROOT %lt = pred[]{:T(512)} compare(%i.1, %five), direction=LT
    }

    ENTRY %main (table.1: f32[8,1024], v: bf16[256]) -> f32[1024] {
      %table.1 = f32[8,1024]{1,0:T(8,128)} parameter(0)
      %v = bf16[256]{0:T(256)} parameter(1)
      %cs = (bf16[256]{0:T(256)S(1)}, bf16[256]{0:T(256)}, u32[]{:S(2)}) copy-start(%v)
      %cd = bf16[256]{0:T(256)S(1)} copy-done(%cs)
      %b0 = f32[1024]{0:T(1024)S(1)} convert(%cd), metadata={op_name="jit(step)/convert_element_type"}
      %zero.1 = s32[]{:T(128)} constant(0)
      %init = (s32[]{:T(128)}, f32[8,1024]{1,0:T(8,128)}, f32[1024]{0:T(1024)S(1)}) tuple(%zero.1, %table.1, %b0)
      %loop = (s32[]{:T(128)}, f32[8,1024]{1,0:T(8,128)}, f32[1024]{0:T(1024)S(1)}) while(%init), condition=%cond, body=%body
      %last = f32[8,1024]{1,0:T(8,128)} get-tuple-element(%loop), index=1
      ROOT %double = f32[8,1024]{1,0:T(8,128)} add(%last, %last), metadata={op_name="jit(step)/add"}
    }
    """)


def test_loops_count_trip_times_on_core_arrays_are_free_and_moves_count_once():
    traffic = hbm_traffic(TPU_STYLE)
    row, table, moved, index = 1024 * 4, 8 * 1024 * 4, 256 * 2, 4
    by_source = {entry["source"]: entry["bytes"] for entry in traffic["by_source"]}
    # Per trip: the row it slices, the index, the row it writes; the on-core bias is free. The counter's add, 3
    # scalars, has no source.
    assert by_source["backward model/encoder/layer_*/add"] == 5 * (row + index + row)
    assert by_source["(no source)"] == 5 * 3 * index
    assert by_source["forward add"] == 3 * table
    assert by_source["copy-start (memory-space assignment)"] == moved
    assert by_source["forward convert_element_type"] == 0  # on-core in, on-core out
    assert traffic["bytes"] == 5 * (2 * row + 4 * index) + 3 * table + moved
    assert traffic["loops"] == {"count": 1, "unknown_trip_counts": 0}


def test_results_are_split_by_memory_space_and_loop_bodies_weighted_by_trips():
    # The body writes the counter (4 bytes) and the fusion's [1024] f32 row, 5 times; the entry writes the on-core
    # convert ([1024] f32) and the [8, 1024] f32 sum in HBM; the asynchronous copy is a move, not a result.
    traffic = hbm_traffic(TPU_STYLE)
    assert traffic["loop_results"] == {"on_core": 0, "hbm": 5 * (4 + 1024 * 4)}
    assert traffic["results"] == {"on_core": 1024 * 4, "hbm": 5 * (4 + 1024 * 4) + 8 * 1024 * 4}
    on_core = TPU_STYLE.replace("%out = f32[1024]{0:T(1024)} fusion", "%out = f32[1024]{0:T(1024)S(1)} fusion")
    assert hbm_traffic(on_core)["loop_results"] == {"on_core": 5 * 1024 * 4, "hbm": 5 * 4}
    # an in-place update of the [8, 1024] table writes one row per trip, not the table
    updated = on_core.replace("  ROOT %t =", "  %out2 = f32[1,1024]{1,0:T(1,128)} bitcast(%out)\n"
                              "  %upd = f32[8,1024]{1,0:T(8,128)} dynamic-update-slice(%table, %out2, %i, %i)\n"
                              "  ROOT %t =")
    assert updated != on_core
    assert hbm_traffic(updated)["loop_results"] == {"on_core": 5 * 1024 * 4, "hbm": 5 * (4 + 1024 * 4)}


def test_a_loop_that_steps_its_counter_by_2_runs_half_as_many_trips():
    # XLA's unrolled windowed-einsum loops add 2 to their counter: i < 5 in steps of 2 is 3 trips (0, 2, 4)
    traffic = hbm_traffic(TPU_STYLE.replace("%one = s32[]{:T(128)} constant(1)", "%one = s32[]{:T(128)} constant(2)"))
    assert traffic["loops"] == {"count": 1, "unknown_trip_counts": 0}
    assert traffic["bytes"] == 3 * (2 * 1024 * 4 + 4 * 4) + 3 * 8 * 1024 * 4 + 256 * 2


def test_a_counter_copied_to_another_memory_space_before_its_add_still_gives_the_trip_count():
    # TPU programs of scanned layers copy the counter (to S(6)) and add to the copy
    traffic = hbm_traffic(TPU_STYLE.replace("%next = s32[]{:T(128)} add(%i, %one)",
                                            "%moved = s32[]{:T(128)S(6)} copy(%i)\n"
                                            "      %next = s32[]{:T(128)} add(%moved, %one)"))
    assert traffic["loops"] == {"count": 1, "unknown_trip_counts": 0}
    by_source = {entry["source"]: entry["bytes"] for entry in traffic["by_source"]}
    assert by_source["backward model/encoder/layer_*/add"] == 5 * (2 * 1024 * 4 + 4)


def test_a_loop_without_a_readable_trip_count_counts_once_and_is_reported():
    traffic = hbm_traffic(TPU_STYLE.replace("constant(5)", "parameter(1)"))
    assert traffic["loops"] == {"count": 1, "unknown_trip_counts": 1}
    assert traffic["bytes"] == (2 * 1024 + 4) * 4 + 3 * 8 * 1024 * 4 + 256 * 2


def test_a_loop_xla_compiled_here_is_charged_per_trip_where_xlas_analysis_charges_it_once():
    step = jax.jit(lambda x: jax.lax.fori_loop(0, 7, lambda i, x: jnp.sin(x) * 2, x))
    compiled = step.lower(jnp.zeros((1024, 1024), jnp.float32)).compile()
    traffic = hbm_traffic(compiled.as_text())
    per_trip = 2 * 1024 * 1024 * 4  # read x, write sin(x) * 2
    by_source = {entry["source"]: entry["bytes"] for entry in traffic["by_source"]}
    assert by_source["forward mul"] == 7 * per_trip
    assert 7 * per_trip <= traffic["bytes"] <= 8 * per_trip + 1024  # plus at most one copy of the carry and the counter
    cost = compiled.cost_analysis()
    xla = (cost[0] if isinstance(cost, (list, tuple)) else cost)["bytes accessed"]
    assert xla < 3 * per_trip  # the body once


def test_a_fusion_that_slices_an_operand_inside_a_nested_fusion_is_charged_for_the_slice():
    # a scanned layer reads its slice of the [layers, ...] stack of saved activations through a nested fusion
    program = textwrap.dedent("""\
        %inner (p0: f32[48,1024], p1: s32[]) -> f32[1024] {
          %p0 = f32[48,1024]{1,0} parameter(0)
          %p1 = s32[] parameter(1)
          %z = s32[] constant(0)
          %ds = f32[1,1024]{1,0} dynamic-slice(%p0, %p1, %z), dynamic_slice_sizes={1,1024}
          ROOT %row = f32[1024]{0} bitcast(%ds)
        }

        %outer (q0: f32[48,1024], q1: s32[], q2: f32[1024]) -> f32[1024] {
          %q0 = f32[48,1024]{1,0} parameter(0)
          %q1 = s32[] parameter(1)
          %q2 = f32[1024]{0} parameter(2)
          %layer = f32[1024]{0} fusion(%q0, %q1), kind=kLoop, calls=%inner
          ROOT %sum = f32[1024]{0} add(%layer, %q2)
        }

        ENTRY %main (stack: f32[48,1024], i: s32[], b: f32[1024]) -> f32[1024] {
          %stack = f32[48,1024]{1,0} parameter(0)
          %i = s32[] parameter(1)
          %b = f32[1024]{0} parameter(2)
          ROOT %f = f32[1024]{0} fusion(%stack, %i, %b), kind=kLoop, calls=%outer
        }
        """)
    row = 1024 * 4
    assert hbm_traffic(program)["bytes"] == row + 4 + row + row  # the slice, the index, b, the result


def test_slices_gathers_and_in_place_updates_are_charged_for_what_they_touch():
    program = textwrap.dedent("""\
        ENTRY %main (t: f32[64,1024], i: s32[], u: f32[1,1024]) -> f32[64,1024] {
          %t = f32[64,1024]{1,0} parameter(0)
          %i = s32[] parameter(1)
          %u = f32[1,1024]{1,0} parameter(2)
          %zero = s32[] constant(0)
          %row = f32[1,1024]{1,0} dynamic-slice(%t, %i, %zero), dynamic_slice_sizes={1,1024}
          %top = f32[2,1024]{1,0} slice(%t), slice={[0:2], [0:1024]}
          ROOT %put = f32[64,1024]{1,0} dynamic-update-slice(%t, %u, %i, %zero)
        }
        """)
    row = 1024 * 4
    assert hbm_traffic(program)["bytes"] == (2 * row + 2 * 4) + 2 * (2 * row) + 2 * row


def test_matmul_flops_of_a_loop_xla_compiled_here_count_every_trip():
    w = jnp.ones((256, 256), jnp.float32)
    step = jax.jit(lambda x: jax.lax.fori_loop(0, 7, lambda i, x: jnp.tanh(x @ w), x))
    traffic = hbm_traffic(step.lower(jnp.ones((64, 256), jnp.float32)).compile().as_text())
    assert traffic["matmul_flops"] == 7 * 2 * 64 * 256 * 256


def test_matmul_flops_of_a_padded_convolution_and_a_pallas_kernel():
    # [1, 8, 4] input (b0f), window 3 padded 1 each side -> [1, 8, 5]: over the 8 outputs 22 of the 24 taps land on
    # input; the kernel brings its own estimate.
    program = textwrap.dedent("""\
        ENTRY %main (x: f32[1,8,4], k: f32[3,4,5]) -> f32[1,8,5] {
          %x = f32[1,8,4]{2,1,0} parameter(0)
          %k = f32[3,4,5]{2,1,0} parameter(1)
          %conv = f32[1,8,5]{2,1,0} convolution(%x, %k), window={size=3 pad=1_1}, dim_labels=b0f_0io->b0f
          ROOT %kernel = f32[1,8,5]{2,1,0} custom-call(%conv), custom_call_target="tpu_custom_call", backend_config={"custom_call_config": {"cost_estimate":{"flops":"1000","transcendentals":"0"}}}
        }
        """)
    assert hbm_traffic(program)["matmul_flops"] == 2 * (8 * 5) * 4 * 22 // 8 + 1000


def test_matmul_flops_of_a_batched_product_written_as_a_dilated_strided_convolution():
    # XLA's form of hbqd,hbkd->hbqk on TPU (from a v3-base chunked compile): the batch dims h=12, b=8 are spatial,
    # lhs_dilate 12x8 with stride 11x7 leaves one real tap per output, so it is 2 x 12*8*128*128 outputs x d=64.
    program = textwrap.dedent("""\
        ENTRY %main (q: bf16[12,8,128,64], k: bf16[12,8,128,64]) -> f32[12,8,128,128] {
          %q = bf16[12,8,128,64]{3,2,1,0} parameter(0)
          %k = bf16[12,8,128,64]{3,2,1,0} parameter(1)
          ROOT %s = f32[12,8,128,128]{3,2,1,0} convolution(%q, %k), window={size=12x8 stride=11x7 lhs_dilate=12x8}, dim_labels=01bf_01oi->01bf
        }
        """)
    assert hbm_traffic(program)["matmul_flops"] == 2 * 12 * 8 * 128 * 128 * 64


@pytest.mark.parametrize("shape, size", [("bf16[8,128]{1,0:T(8,128)(2,1)}", 2048),
                                         ("bf16[8,128]{1,0:T(8,128)(2,1)S(1)}", 0),
                                         ("(f32[4]{0}, s32[2]{0:S(1)}, u32[]{:S(2)})", 16)])
def test_hbm_bytes_skip_arrays_tagged_with_another_memory_space(shape, size):
    assert hbm_bytes(shape) == size


def test_source_drops_transformation_wrappers_and_folds_layer_numbers():
    line = ('%f = f32[2] fusion(%a), metadata={op_name="jit(step)/while/body/closed_call/transpose(jvp(Model.call))'
            '/encoder/layer_11/attention/dot_general"}')
    assert source(line) == "backward Model.call/encoder/layer_*/attention/dot_general"
    assert source(line, depth=2) == "backward Model.call/encoder"
    assert source("%f = f32[2] add(%a, %b)") == "(no source)"
