"""What a network costs on a chip: layer tables, accelerator presets, analytic/memory models,
profiling on the current JAX backend, and the learned latency surrogate.

Example:
    >>> import hwmodel
    >>> spec = hwmodel.ACCELERATORS["npu"]
    >>> spec.parallelism
    16
"""

from hwmodel import analytic, memory, profile, surrogate
from hwmodel.accelerators import ACCELERATORS, AcceleratorSpec, make_npu
from hwmodel.layers import LayerTable, OpKind, prune_dead, total_flops, total_params
from hwmodel.surrogate import FeatureConfig, Surrogate

__all__ = ["ACCELERATORS", "AcceleratorSpec", "FeatureConfig", "LayerTable", "OpKind", "Surrogate",
           "analytic", "make_npu", "memory", "profile", "prune_dead", "surrogate", "total_flops", "total_params"]
