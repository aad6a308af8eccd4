"""First measurement for issue 13 item 1: the Fast3R network on an inference engine vs our eager torch.

    pip install openvino          # not a dependency of the package (yet)
    python -P benchmarks/bench_engines.py --size 256 --views 5 --threads 2

The release ViT-L/512 config with random weights (the 2.6 GB release cannot be downloaded here; dense
kernels do not care about the values), 5 views, one process, engines run one after the other on the
same inputs: eager torch fp32 (our model, which measured 0.98x upstream's time), then OpenVINO
(``openvino.convert_model`` of the same module, compiled for CPU with the given threads and precision
hint). Timed: the network only (encoder, decoder, DPT heads up to the raw head maps), best of
``--repeats`` after one warm-up; the compile time is printed apart. Outputs are compared on the raw
global head map (max absolute difference, and relative to its range).

This is a measurement, not an integration: the backend option, the on-disk cache and the tolerance
gate of the issue are not built yet.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from showroom_ros.models import Fast3R

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run with -P: the script's folder is not on the path
from bench_fast3r import build_model  # the same random release-config model as the torch bench


class HeadMaps(torch.nn.Module):
    """The network part of :class:`Fast3R` as a module of one tensor: (V, 3, H, W) -> raw global head map."""

    def __init__(self, model: Fast3R, views: int, height: int, width: int) -> None:
        super().__init__()
        self.model = model
        self.views, self.size = views, (height, width)
        self.register_buffer("ids", model.resolve_image_ids(1, views, None, True, None), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raw_global, _ = self.model._network(list(images.split(1)), 1, self.size, self.ids, None, None)
        return raw_global


def best_of(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, choices=(256, 512), help="long side: 256x192 or 512x384")
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precisions", default="f32", help="OpenVINO precision hints, comma separated (f32,bf16)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = (192, 256) if args.size == 256 else (384, 512)
    network = HeadMaps(build_model("teacher", torch.float32, torch.device("cpu"), None), args.views, height, width)
    network.eval()
    images = torch.rand(args.views, 3, height, width, generator=torch.Generator().manual_seed(1)) * 2 - 1
    print(f"load average {Path('/proc/loadavg').read_text().split()[:3]}; {args.views} views {width}x{height}, "
          f"{args.threads} threads, torch {torch.__version__}")

    with torch.inference_mode():
        reference = network(images)
        eager = best_of(lambda: network(images), args.repeats)
    span = float(reference.max() - reference.min())
    print("| engine | precision | seconds | ratio to eager | max abs diff | diff / range | compile s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| torch eager | fp32 | {eager:.2f} | 1.00 | 0 | 0 | - |")

    import openvino as ov

    started = time.perf_counter()
    with torch.no_grad():
        converted = ov.convert_model(network, example_input=images)
    convert_s = time.perf_counter() - started
    core = ov.Core()
    for precision in args.precisions.split(","):
        started = time.perf_counter()
        compiled = core.compile_model(
            converted,
            "CPU",
            {
                "INFERENCE_NUM_THREADS": args.threads,
                "INFERENCE_PRECISION_HINT": precision,
                "PERFORMANCE_HINT": "LATENCY",
            },
        )
        compile_s = convert_s + time.perf_counter() - started
        request = compiled.create_infer_request()
        seconds = best_of(lambda request=request: request.infer([images.numpy()]), args.repeats)
        output = torch.from_numpy(request.get_output_tensor(0).data.copy())
        diff = float((output - reference).abs().max())
        print(f"| OpenVINO {ov.__version__.split('-')[0]} | {precision} | {seconds:.2f} | {seconds / eager:.2f} | "
              f"{diff:.2e} | {diff / span:.2e} | {compile_s:.0f} |")


if __name__ == "__main__":
    main()
