"""The three inference engines Fast3R's network can run on: how each builds its artefact in a folder and
loads a runner from it (torch.compile/inductor, ONNX Runtime, OpenVINO).

:class:`showroom_ros.models.engines.NetworkEngine` decides which engine runs, gates it against eager torch
and owns the cache; this module only knows each engine's own API. Each builder takes the network as a
module of tensors only (``engines.NetworkGraph``).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: Stacked views and image ids in, the raw head maps out.
Runner = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


def inference_threads() -> int:
    """The threads every engine is given: torch's own setting, so all of them compete on equal terms."""
    return max(1, torch.get_num_threads())


def inferenceinference_threads() -> int:
    return max(1, torch.get_numinference_threads())


def _build_compile(graph: nn.Module, directory: Path, precision: str, example: tuple[torch.Tensor, ...]) -> None:
    """Nothing to export: inductor keeps its own cache (pointed into ``directory`` by :func:`_load_compile`)."""
    del graph, directory, precision, example


def _load_compile(graph: nn.Module, directory: Path, precision: str) -> Runner:
    # Inductor's own artefact cache lives beside ours unless the user chose one; freezing folds the
    # weights into the graph so it can pre-pack them for oneDNN (the measured gain on CPU).
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(directory.parent / "inductor"))
    # Static shapes: one compilation per view count (3-5 keyframes, plus the probe's 2). The dynamic graph
    # inductor makes at the second count ran at 1.30x eager torch's time on ViT-L (docs/benchmarks.md).
    compiled = torch.compile(graph, dynamic=False, options={"freezing": True})

    def run(images: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with torch.no_grad(), amp:
            return tuple(out.float() for out in compiled(images, ids))

    return run


def _export_onnx(graph: nn.Module, path: Path, example: tuple[torch.Tensor, ...]) -> None:
    outputs = ["raw_global", "raw_local"] if graph.has_local else ["raw_global"]
    dynamic = {"images": {0: "views_x_batch"}, "image_ids": {0: "batch", 1: "views"}}
    dynamic |= {name: {0: "views_x_batch"} for name in outputs}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants: H, W fixed
        torch.onnx.export(
            graph,
            example,
            str(path),
            input_names=["images", "image_ids"],
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
            external_data=True,
        )


def _build_onnxruntime(graph: nn.Module, directory: Path, precision: str, example: tuple[torch.Tensor, ...]) -> None:
    _export_onnx(graph, directory / "network.onnx", example)
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(directory / "network.onnx"),
            str(directory / "network.int8.onnx"),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
            use_external_data_format=True,
        )


def _load_onnxruntime(graph: nn.Module, directory: Path, precision: str) -> Runner:
    import onnxruntime as ort

    del graph
    options = ort.SessionOptions()
    options.intra_op_num_threads = inference_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    name = "network.int8.onnx" if precision == "int8" else "network.onnx"
    session = ort.InferenceSession(str(directory / name), options, providers=["CPUExecutionProvider"])

    def run(images: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feeds = {"images": images.detach().float().contiguous().numpy(), "image_ids": ids.detach().long().numpy()}
        return tuple(torch.from_numpy(out) for out in session.run(None, feeds))

    return run


def _build_openvino(graph: nn.Module, directory: Path, precision: str, example: tuple[torch.Tensor, ...]) -> None:
    import openvino as ov

    del precision  # one f32 IR; the precision is a compile-time hint
    height, width = example[0].shape[-2:]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        converted = ov.convert_model(
            graph,
            example_input=example,
            input=[ov.PartialShape([-1, 3, height, width]), ov.PartialShape([-1, -1])],
        )
    ov.save_model(converted, str(directory / "network.xml"), compress_to_fp16=False)


class _OpenVINORunner:
    """The IR compiled for the shape at hand: static shapes run faster on the CPU plugin than dynamic ones.

    Measured: the dynamic-views IR ran at 1.23x eager torch's time, the same IR reshaped to the call's
    shape before compiling faster than eager (docs/benchmarks.md). Only the latest shape is kept compiled
    (each compiled model holds its own copy of the weights); ``CACHE_DIR`` keeps the compiled blobs on disk
    beside the IR, so a change of view count costs a blob import, not a compile.
    """

    def __init__(self, directory: Path, precision: str) -> None:
        import openvino as ov

        self._ov = ov
        self._core = ov.Core()
        self._core.set_property({"CACHE_DIR": str(directory / "compiled")})
        self._source = self._core.read_model(str(directory / "network.xml"))
        hint = {"fp32": "f32", "bf16": "bf16"}[precision]
        self._config = {
            "INFERENCE_NUM_THREADS": inference_threads(),
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY",
        }
        self._shape: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self._compiled: Any = None
        self._request: Any = None
        self.executed = self._executed_precision()

    def _executed_precision(self) -> str:
        """What the CPU plugin makes of the hint (f32 where bf16 is not native), asked of a one-op model."""
        ops = self._ov.opset13
        x = ops.parameter([1, 4], self._ov.Type.f32)
        probe = self._ov.Model([ops.relu(x)], [x])
        value = self._core.compile_model(probe, "CPU", self._config).get_property("INFERENCE_PRECISION_HINT")
        name = value.to_string() if hasattr(value, "to_string") else str(value)
        return {"f32": "fp32", "bf16": "bf16"}.get(name, name)

    def __call__(self, images: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shape = (tuple(images.shape), tuple(ids.shape))
        if shape != self._shape:
            self._compiled = self._request = None  # release the previous shape's weights first
            model = self._source.clone()
            model.reshape(
                {
                    model.input(0): self._ov.PartialShape(list(shape[0])),
                    model.input(1): self._ov.PartialShape(list(shape[1])),
                }
            )
            self._compiled = self._core.compile_model(model, "CPU", self._config)
            self._request = self._compiled.create_infer_request()
            self._shape = shape
        self._request.infer([images.detach().float().contiguous().numpy(), ids.detach().long().numpy()])
        outputs = range(len(self._compiled.outputs))
        return tuple(torch.from_numpy(self._request.get_output_tensor(i).data.copy()) for i in outputs)


def _load_openvino(graph: nn.Module, directory: Path, precision: str) -> Runner:
    del graph
    return _OpenVINORunner(directory, precision)


BUILDERS = {"compile": _build_compile, "onnxruntime": _build_onnxruntime, "openvino": _build_openvino}
LOADERS = {"compile": _load_compile, "onnxruntime": _load_onnxruntime, "openvino": _load_openvino}
