"""Datasheet peak FLOP/s of accelerators, the denominator of MFU (model FLOPs utilisation).

The harness also measures a matmul peak in the same run (`training.throughput.measure_matmul_peak`); that is what
the device delivers to one large matmul, and "fraction of peak" is taken against it. MFU, the figure papers quote,
is taken against the vendor's dense (no structured sparsity) tensor-core rate instead, listed here per dtype.

Sources (dense figures; the datasheets print the 2:4-sparsity rate, twice these, for the tensor-core dtypes):
  NVIDIA H100 / H200 SXM: "NVIDIA H200 Tensor Core GPU" datasheet and "NVIDIA H100 Tensor Core GPU" datasheet,
  SXM columns: BF16 / FP16 tensor core 1,979 TFLOPS with sparsity -> 989.4 dense; TF32 tensor core 989 with
  sparsity -> 494.7 dense; FP32 (no tensor core) 67 TFLOPS. H200 and H100 SXM share the compute rates (the H200
  differs in memory: 141 GB HBM3e at 4.8 TB/s).
  NVIDIA A100 SXM: "NVIDIA A100 Tensor Core GPU" datasheet: BF16 312 TFLOPS dense, TF32 156, FP32 19.5.
"""

from __future__ import annotations

_H100_SXM = {"bfloat16": 989.4e12, "float16": 989.4e12, "tensorfloat32": 494.7e12, "float32": 66.9e12}
_A100 = {"bfloat16": 312e12, "float16": 312e12, "tensorfloat32": 156e12, "float32": 19.5e12}

# device_kind as jax reports it (torch.cuda.get_device_name gives the same strings) -> dense FLOP/s by dtype.
DATASHEET_PEAKS: dict[str, dict] = {
    "NVIDIA H200": {**_H100_SXM, "source": "NVIDIA H200 Tensor Core GPU datasheet, SXM (dense = sparse / 2)"},
    "NVIDIA H100 80GB HBM3": {**_H100_SXM, "source": "NVIDIA H100 Tensor Core GPU datasheet, SXM (dense = sparse / 2)"},
    "NVIDIA A100-SXM4-80GB": {**_A100, "source": "NVIDIA A100 Tensor Core GPU datasheet, SXM (dense)"},
    "NVIDIA A100-SXM4-40GB": {**_A100, "source": "NVIDIA A100 Tensor Core GPU datasheet, SXM (dense)"},
}


def datasheet_peak(device_kind: str, dtype: str) -> dict | None:
    """{"flops_per_s", "dtype", "device_kind", "source"} for a known device and dtype, else None.

    float32 maps to the plain FP32 rate: XLA on GPU may use TF32 for fp32 matmuls unless
    JAX_DEFAULT_MATMUL_PRECISION=highest, in which case the MFU against FP32 overstates (the tensorfloat32 entry
    is there for that reading).
    """
    entry = DATASHEET_PEAKS.get(device_kind)
    if entry is None or dtype not in entry:
        return None
    return {"flops_per_s": entry[dtype], "dtype": dtype, "device_kind": device_kind, "source": entry["source"]}
