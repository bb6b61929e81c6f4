"""What a network costs on a chip: layer tables, accelerator presets, analytic/memory models,
profiling on the current JAX backend, measurement backends (ONNX Runtime, the ZigZag simulator)
and the learned latency surrogate.

Example:
    >>> import hwmodel
    >>> spec = hwmodel.ACCELERATORS["npu"]
    >>> spec.parallelism
    16
"""

from hwmodel import analytic, measure, memory, profile, simulator, surrogate  # simulator registers `zigzag`
from hwmodel.accelerators import ACCELERATORS, AcceleratorSpec, make_npu
from hwmodel.layers import LayerTable, OpKind, prune_dead, total_flops, total_params
from hwmodel.surrogate import FeatureConfig, Surrogate

__all__ = ["ACCELERATORS", "AcceleratorSpec", "FeatureConfig", "LayerTable", "OpKind", "Surrogate",
           "analytic", "make_npu", "measure", "memory", "profile", "prune_dead", "simulator", "surrogate", "total_flops", "total_params"]
