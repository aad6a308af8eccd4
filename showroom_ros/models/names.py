"""The names a user types for the learned models, each spelled once: devices, dtypes, engines, weights, cache size.

The node's parameter table, the CLI, the backends' and the distillation's config checks and the model code
all import these, so a name added here is accepted (and offered) everywhere at once. Standard library only:
the parameter table and the CLI import this at start-up, and ``showroom_ros.models`` loads its torch modules
lazily, so importing this module stays cheap (test_model_names.py checks that torch stays out).
"""

from __future__ import annotations

FAST3R_RELEASE_REPO = "jedyang97/Fast3R_ViT_Large_512"
"""The released Fast3R weights (Hugging Face id): the default of the node's ``model``, the CLI and distill's teacher."""

DEVICES = ("auto", "cpu", "cuda")
"""Devices of the learned models (``cuda:N`` picks one GPU); ``auto``: CUDA when torch sees a GPU, else CPU."""

COMPUTE_DTYPES = ("fp32", "bf16", "fp16")
"""The precisions a model computes in (:data:`showroom_ros.models.dtypes.TORCH_DTYPES` maps them to torch)."""

DTYPES = ("auto", *COMPUTE_DTYPES)
"""What a user may ask for; ``auto`` is resolved per device by whoever loads the model."""

DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
"""torch's spellings, accepted as input and normalised to ours."""

ENGINES = ("auto", "torch", "compile", "onnxruntime", "openvino")
"""Inference engines of the network (models/engines.py): ``torch`` is eager, ``auto`` measures and keeps the fastest."""

DEFAULT_ENGINE = "torch"
"""Eager torch: an engine is opt-in, as it costs a build (minutes) and a copy of the weights on disk."""

ENGINE_PRECISIONS = ("fp32", "bf16", "int8")
"""The precisions an engine is built in (int8: ONNX Runtime only, never chosen by ``auto``)."""

ENGINE_PRECISION_CHOICES = ("auto", *ENGINE_PRECISIONS)
"""What a user may ask for; ``auto`` is the model's compute dtype."""

ENGINE_CACHE_MAX_GB = 20.0
"""Default size limit of the engine cache: room for the release model at both input sizes on two engines."""


def normalise_dtype(dtype: str) -> str:
    """The dtype in our spelling (one of :data:`DTYPES`); torch's spellings are accepted too.

    Raises ValueError naming the valid ones, without importing torch, so a config is checked at start-up.
    """
    name = str(dtype).strip().lower()
    name = DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype '{dtype}': use one of {', '.join(DTYPES)}")
    return name
