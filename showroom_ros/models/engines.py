"""Fast3R's network on an inference engine: torch.compile (inductor), ONNX Runtime or OpenVINO.

Only the learned part runs on the engine (stacked views and image ids in, raw head maps out:
:meth:`Fast3R.network`); input checks, activations and everything after stay in torch, so every engine
returns exactly what the eager model returns, within the engine's numerical error.

Why a gate and a cache: an engine is only worth it when it is both faster and right. Each exported or
compiled artefact is built once per (weights, image size, engine version, precision) and kept on disk
under a key of all of those (``meta.json`` holds the key and the accuracy measured at build time); a
cache whose key does not match is rebuilt, never used. At build time the engine's pointmaps are compared
with our eager fp32 torch on a fixed probe input. ``auto`` measures: eager torch and every engine of
:data:`AUTO_CANDIDATES` that is installed, builds and stays within the tolerance run the probe, and the
fastest wins; the decision is cached too (keyed also by the CPU), so later starts build nothing else.

Precisions: ``fp32``; ``bf16`` (torch autocast for ``compile``, the CPU plugin's precision hint for
``openvino``: on a CPU without native bf16 OpenVINO executes in f32 and :attr:`EngineReport.executed`
says so); ``int8`` (ONNX Runtime dynamic quantisation of the linear layers), only when asked for by name:
its error is reported, not gated.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from showroom_ros.models.config import Fast3RConfig
from showroom_ros.models.dpt_head import pointmap_activation
from showroom_ros.models.dtypes import dtype_name
from showroom_ros.models.engine_backends import BUILDERS, LOADERS, Runner, inference_threads
from showroom_ros.models.engine_cache import default_max_bytes, mark_used, trim_cache
from showroom_ros.models.names import ENGINE_PRECISIONS, ENGINES

LOG = logging.getLogger(__name__)

#: The engines ``auto`` measures against eager torch on this machine (which is fastest depends on the CPU:
#: on the AVX2-only CPU of docs/benchmarks.md none beat eager torch). Eager torch is always a contender.
AUTO_CANDIDATES = ("openvino", "onnxruntime", "compile")
#: Max absolute pointmap difference (pts3d, the model's units) allowed against eager fp32 torch.
DEFAULT_TOLERANCE = 1e-3
#: Bumped when the artefact layout or the exported graph changes, so old caches are rebuilt.
CACHE_FORMAT = 1
PROBE_VIEWS = 2
CACHE_ENV = "SHOWROOM_ENGINE_CACHE"


class EngineError(RuntimeError):
    """An engine that cannot be used: not installed, unsupported precision, failed build or gate."""


class EngineModel(Protocol):
    """What an engine needs of a model; :class:`~showroom_ros.models.fast3r.Fast3R` is one.

    Structural, so this module never imports fast3r.py: fast3r.py imports this module to attach engines,
    and an import back would close a cycle.
    """

    config: Fast3RConfig
    downstream_head_local: nn.Module | None

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def network(
        self, stacked: torch.Tensor, ids: torch.Tensor, head_chunk_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def state_dict(self) -> Mapping[str, torch.Tensor]: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...


@dataclass
class EngineReport:
    """What an engine build or cache load did, for logs and status."""

    engine: str
    precision: str
    executed: str  # the precision the engine really computes in (OpenVINO may run a bf16 hint in f32)
    image_size: tuple[int, int]
    directory: str
    built: bool  # False: loaded from the on-disk cache
    seconds: float  # build or load time
    max_abs_diff: float  # pts3d vs eager fp32 torch on the probe, measured at build time
    tolerance: float
    passed: bool

    def summary(self) -> str:
        source = f"built in {self.seconds:.1f} s" if self.built else f"loaded from cache in {self.seconds:.1f} s"
        verdict = "within" if self.passed else "OUTSIDE"
        return (
            f"{self.engine} {self.precision} (executes {self.executed}) at {self.image_size[1]}x"
            f"{self.image_size[0]}: {source}; max |pts3d - torch fp32| {self.max_abs_diff:.2e}, {verdict} "
            f"tolerance {self.tolerance:.0e}"
        )


def default_cache_dir() -> Path:
    """``$SHOWROOM_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/showroom_ros/engines`` (~/.cache/...)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "showroom_ros" / "engines"


def engine_version(engine: str) -> str:
    """The installed version of an engine's package; raises EngineError naming the pip package if absent."""
    if engine in ("torch", "compile"):
        return torch.__version__
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino"}.get(engine)
    if module is None:
        raise EngineError(f"unknown engine '{engine}': use one of {', '.join(ENGINES)}")
    try:
        imported = __import__(module)
    except ImportError as error:
        extra = "onnxruntime onnx" if engine == "onnxruntime" else "openvino"
        raise EngineError(f"engine '{engine}' is not installed ({error}); pip install {extra}") from None
    return str(getattr(imported, "__version__", "unknown"))


def check_engine(engine: str, precision: str) -> None:
    """Validate a name pair before anything is built (clear errors for parameters and CLI flags)."""
    if engine not in ENGINES:
        raise EngineError(f"unknown engine '{engine}': use one of {', '.join(ENGINES)}")
    if precision not in ENGINE_PRECISIONS:
        raise EngineError(f"unknown engine precision '{precision}': use one of {', '.join(ENGINE_PRECISIONS)}")
    if precision == "int8" and engine == "auto":
        raise EngineError("int8 is never chosen automatically: ask for engine 'onnxruntime' by name")
    if precision == "int8" and engine != "onnxruntime":
        raise EngineError("int8 is available only with engine 'onnxruntime' (dynamic quantisation)")
    if precision == "bf16" and engine == "onnxruntime":
        raise EngineError("onnxruntime has no bf16 CPU kernels; use fp32 or int8 with it")


def weights_digest(model: EngineModel) -> str:
    """A content hash of every parameter and buffer (names, dtypes, shapes, bytes): the cache key's core."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


class NetworkGraph(nn.Module):
    """:meth:`Fast3R.network` as a module of tensors only, the form exporters and compilers take.

    images (V*B, 3, H, W) float32 in [-1, 1], view-major, and image_ids (B, V) int64 -> raw global head map
    (V*B, 4, H, W) and, with a local head, the raw local map. Heads run on all views at once (no Python
    branch on V), and V and B stay dynamic in the exported graphs.
    """

    def __init__(self, model: EngineModel) -> None:
        super().__init__()
        self.model = model
        self.has_local = model.downstream_head_local is not None

    def forward(self, images: torch.Tensor, image_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raw_global, raw_local = self.model.network(images, image_ids, head_chunk_size=1 << 20)
        return (raw_global,) if raw_local is None else (raw_global, raw_local)




# --- gate, cache and selection ----------------------------------------------------------------------------


def probe_inputs(model: EngineModel, image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed input every engine is checked on: seeded noise images and sequential image ids."""
    generator = torch.Generator().manual_seed(20250611)
    images = torch.rand(PROBE_VIEWS, 3, *image_size, generator=generator) * 2 - 1
    ids = torch.arange(PROBE_VIEWS, dtype=torch.int64).unsqueeze(0)
    return images.to(model.device), ids


def pointmap_difference(
    model: EngineModel, reference: tuple[torch.Tensor, ...], candidate: tuple[torch.Tensor, ...]
) -> float:
    """Max absolute difference of the activated pointmaps (global, and local when present)."""
    head = model.config.head
    worst = 0.0
    for ref, got in zip(reference, candidate, strict=True):
        ref_pts, _ = pointmap_activation(ref.float().cpu(), head.depth_mode, head.conf_mode)
        got_pts, _ = pointmap_activation(got.float().cpu(), head.depth_mode, head.conf_mode)
        worst = max(worst, float((ref_pts - got_pts).abs().max()))
    return worst


class NetworkEngine:
    """One engine (or ``auto``) for one model: builds, caches and gates a runner per image size.

    ``run`` takes what :meth:`Fast3R.network` takes and returns its raw head maps.
    """

    def __init__(
        self,
        model: EngineModel,
        engine: str = "auto",
        precision: str = "fp32",
        cache_dir: str | Path | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
        candidates: tuple[str, ...] = AUTO_CANDIDATES,
        cache_max_bytes: int | None = None,
    ) -> None:
        check_engine(engine, precision if engine != "auto" else "fp32")
        if engine == "auto" and precision == "int8":
            raise EngineError("int8 is never chosen automatically: ask for engine 'onnxruntime' by name")
        if engine == "torch":
            raise EngineError("engine 'torch' is the eager model itself: do not attach an engine for it")
        if model.dtype != torch.float32:
            raise EngineError("engines are built from fp32 weights; load the model in fp32 (they set precision)")
        if not tolerance >= 0:
            raise EngineError(f"tolerance must be >= 0, got {tolerance}")
        self.model = model
        self.engine = engine
        self.precision = precision
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.tolerance = float(tolerance)
        # Least recently used entries beyond this are removed after each build (engine_cache.py); 0: no limit.
        self.cache_max_bytes = default_max_bytes() if cache_max_bytes is None else int(cache_max_bytes)
        if self.cache_max_bytes < 0:
            raise EngineError(f"cache_max_bytes must be >= 0 (0: no limit), got {cache_max_bytes}")
        self.candidates = tuple(candidates)  # auto's order; every name must be a real engine
        for name in self.candidates:
            check_engine(name, "fp32")
            if name in ("auto", "torch"):
                raise EngineError(f"auto's candidates are engines, not '{name}' (eager torch is the fallback)")
        self._digest: str | None = None
        self._runners: dict[tuple[int, int], Runner | None] = {}  # None: eager torch (auto found nothing)
        self.reports: dict[tuple[int, int], EngineReport] = {}
        self.failures: dict[tuple[int, int], str] = {}

    def is_prepared(self, image_size: tuple[int, int]) -> bool:
        """Whether a forward at this (H, W) runs without a build first (for progress messages)."""
        return (int(image_size[0]), int(image_size[1])) in self._runners

    # -- use
    def serves(self, autocast_dtype: torch.dtype | None) -> bool:
        """Whether a forward asked for in ``autocast_dtype`` is this engine's to run."""
        wanted = "fp32" if autocast_dtype is None else dtype_name(autocast_dtype)
        return wanted == self.precision or (wanted == "fp32" and self.precision == "int8")

    def run(self, images: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        size = (int(images.shape[-2]), int(images.shape[-1]))
        runner = self._runners[size] if size in self._runners else self.prepare(size)
        if runner is not None:
            try:
                outputs = runner(images.float(), ids.to(torch.int64))
            except Exception as error:  # e.g. out of memory compiling a new view count: eager still works
                self.failures[size] = f"engine {self.engine} {self.precision} failed at run time: {error}"
                LOG.error("%s; running eager torch from now on at this size", self.failures[size])
                self._runners[size] = None
            else:
                return outputs[0], outputs[1] if len(outputs) > 1 else None
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bf16" else contextlib.nullcontext()
        with amp:
            return self.model.network(images, ids)

    # -- build
    def prepare(self, image_size: tuple[int, int]) -> Runner | None:
        """Build or load (and gate) the runner for one image size; None means eager torch (auto only)."""
        size = (int(image_size[0]), int(image_size[1]))
        if self.engine != "auto":
            # A named engine that cannot build or misses the tolerance is not used: the model runs eagerly
            # (correct, slower) and ``failures`` says why, so a robot keeps reconstructing.
            try:
                runner, report = self._prepare_one(self.engine, size)
            except Exception as error:
                self.failures[size] = f"engine {self.engine} {self.precision} failed to build: {error}"
                LOG.error("%s; running eager torch", self.failures[size])
                self._runners[size] = None
                return None
            self.reports[size] = report
            if not report.passed and self.precision != "int8":
                self.failures[size] = f"engine {report.summary()}"
                LOG.error("%s; running eager torch", self.failures[size])
                self._runners[size] = None
                return None
            LOG.info("engine %s", report.summary())
            self._runners[size] = runner
            return runner
        return self._prepare_auto(size)

    def _prepare_auto(self, size: tuple[int, int]) -> Runner | None:
        """Measure, once per machine and key: eager torch and every candidate that builds and passes the gate
        each run the probe; the fastest wins. The decision is kept on disk, so later starts load only it."""
        decision_path = self.cache_dir / f"auto-{self.precision}-{size[1]}x{size[0]}-{self._auto_key(size)}.json"
        decision = _read_json(decision_path)
        if decision is not None and decision.get("chosen") in ("torch", *self.candidates):
            chosen = decision["chosen"]
            LOG.info("engine auto: %s at %sx%s (measured %s)", chosen, size[1], size[0], decision.get("seconds"))
            if chosen == "torch":
                self._runners[size] = None
                return None
            try:
                runner, report = self._prepare_one(chosen, size)
            except Exception as error:
                LOG.warning("engine auto: %s no longer builds (%s): measuring again", chosen, error)
            else:
                if report.passed:
                    self.reports[size], self._runners[size] = report, runner
                    return runner
        images, ids = probe_inputs(self.model, size)
        graph = NetworkGraph(self.model).eval()
        seconds: dict[str, float] = {"torch": _probe_seconds(graph, images, ids, self.precision == "bf16")}
        best: tuple[float, str, Runner | None, EngineReport | None] = (seconds["torch"], "torch", None, None)
        for candidate in self.candidates:
            try:
                check_engine(candidate, self.precision)
                runner, report = self._prepare_one(candidate, size)
            except Exception as error:  # a candidate that cannot build is skipped, with the reason logged
                LOG.warning("engine auto: %s skipped: %s", candidate, error)
                continue
            if not report.passed:
                LOG.warning("engine auto: %s rejected: %s", candidate, report.summary())
                continue
            seconds[candidate] = _probe_seconds(runner, images, ids, False)
            if seconds[candidate] < best[0]:
                best = (seconds[candidate], candidate, runner, report)
            del runner  # losers release their memory as soon as they lose
        _, chosen, runner, report = best
        _write_json(decision_path, {"chosen": chosen, "seconds": seconds, "key": self._auto_key(size)})
        LOG.info("engine auto chose %s at %sx%s; probe seconds %s", chosen, size[1], size[0], seconds)
        if report is not None:
            self.reports[size] = report
        self._runners[size] = runner
        return runner

    def _auto_key(self, size: tuple[int, int]) -> str:
        """The weights, size and precision, every candidate's version and this CPU: a new machine measures anew."""
        versions = {}
        for name in self.candidates:
            try:
                versions[name] = engine_version(name)
            except EngineError:
                versions[name] = None
        key = {"base": self.cache_key("compile", size), "versions": versions, "cpu": _cpu_signature()}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def cache_key(self, engine: str, image_size: tuple[int, int]) -> dict[str, Any]:
        if self._digest is None:
            self._digest = weights_digest(self.model)
        return {
            "format": CACHE_FORMAT,
            "engine": engine,
            "engine_version": engine_version(engine),
            "torch_version": torch.__version__,
            "precision": self.precision,
            "image_size": list(image_size),
            "weights": self._digest,
            "config": self.model.config.to_dict(),
        }

    def _weights_bytes(self) -> int:
        return sum(p.numel() * 4 for p in self.model.parameters())

    def _prepare_one(self, engine: str, size: tuple[int, int]) -> tuple[Runner, EngineReport]:
        key = self.cache_key(engine, size)
        name = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
        directory = self.cache_dir / f"{engine}-{self.precision}-{size[1]}x{size[0]}-{name}"
        graph = NetworkGraph(self.model).eval()
        started = time.perf_counter()
        meta = _read_meta(directory)
        if meta is not None and meta.get("key") == key:
            try:
                runner = LOADERS[engine](graph, directory, self.precision)
            except Exception as error:  # a damaged artefact is rebuilt, not trusted
                LOG.warning("engine cache %s unusable (%s): rebuilding", directory, error)
            else:
                mark_used(directory)
                report = self._report(engine, size, directory, runner, False, started, float(meta["max_abs_diff"]))
                return runner, report
        elif meta is not None:
            LOG.warning("engine cache %s is stale (its key differs): rebuilding", directory)
        runner, difference = self._build(engine, graph, directory, key, size)
        return runner, self._report(engine, size, directory, runner, True, started, difference)

    def _build(
        self, engine: str, graph: NetworkGraph, directory: Path, key: dict[str, Any], size: tuple[int, int]
    ) -> tuple[Runner, float]:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if self.cache_max_bytes:  # make room first: the export and OpenVINO's blob each hold the weights
            room_for_others = self.cache_max_bytes - 2 * self._weights_bytes()
            trim_cache(self.cache_dir, max(room_for_others, 1))
        try:
            return self._build_once(engine, graph, directory, key, size)
        except Exception as error:
            # OpenVINO says "basic_ios::clear: iostream error" for a full disk: free space is asked too.
            needed = 2 * self._weights_bytes()
            certain = _disk_full(error)
            if not (certain or shutil.disk_usage(self.cache_dir).free < needed):
                raise
            # A full disk: the cache's unused entries are what this process can give back. Then once more.
            freed = trim_cache(self.cache_dir, 1)
            free_gb = shutil.disk_usage(self.cache_dir).free / 1e9
            if not freed:
                what = "no space left for the engine cache" if certain else "build failed, probably on a full disk,"
                raise EngineError(
                    f"{what} in {self.cache_dir} ({free_gb:.2f} GB free; an entry of this model needs about "
                    f"{needed / 1e9:.2f} GB): {error}"
                ) from error
            LOG.warning("disk full while building: removed %d unused cache entries, building again", len(freed))
            return self._build_once(engine, graph, directory, key, size)

    def _build_once(
        self, engine: str, graph: NetworkGraph, directory: Path, key: dict[str, Any], size: tuple[int, int]
    ) -> tuple[Runner, float]:
        staging = self.cache_dir / f".{directory.name}.building-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            images, ids = probe_inputs(self.model, size)
            with torch.no_grad():
                BUILDERS[engine](graph, staging, self.precision, (images, ids))
                runner = LOADERS[engine](graph, staging, self.precision)
                candidate = runner(images, ids)
                reference = graph(images, ids)
            difference = pointmap_difference(self.model, reference, candidate)
            meta = {"key": key, "max_abs_diff": difference, "built": time.strftime("%Y-%m-%dT%H:%M:%S")}
            (staging / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
            shutil.rmtree(directory, ignore_errors=True)
            staging.rename(directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        mark_used(directory)
        trim_cache(self.cache_dir, self.cache_max_bytes)
        if engine == "openvino":  # its runner compiles per shape from files: point it at the final folder
            runner = LOADERS[engine](graph, directory, self.precision)
        return runner, difference  # an ONNX Runtime session or a compiled graph holds its data in memory

    def _report(
        self,
        engine: str,
        size: tuple[int, int],
        directory: Path,
        runner: Runner,
        built: bool,
        started: float,
        diff: float,
    ) -> EngineReport:
        executed = getattr(runner, "executed", self.precision)
        return EngineReport(
            engine=engine,
            precision=self.precision,
            executed=executed,
            image_size=size,
            directory=str(directory),
            built=built,
            seconds=time.perf_counter() - started,
            max_abs_diff=diff,
            tolerance=self.tolerance,
            passed=diff <= self.tolerance,
        )


def _probe_seconds(runner: Callable[..., Any], images: torch.Tensor, ids: torch.Tensor, bf16: bool) -> float:
    """Best of two timed probe forwards after a warm-up (the first call of an engine allocates)."""
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    times = []
    with torch.no_grad(), amp:
        runner(images, ids)
        for _ in range(2):
            started = time.perf_counter()
            runner(images, ids)
            times.append(time.perf_counter() - started)
    return min(times)


def _cpu_signature() -> str:
    """Model name, flags and thread count: what decides which engine is fastest."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        text = ""
    lines = {line.split(":")[0].strip(): line for line in text.splitlines() if ":" in line}
    return f"{lines.get('model name', '')}|{lines.get('flags', '')}|{inference_threads()}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Atomically: a reader never sees half a decision."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(json.dumps(value, indent=1, default=str))
    staging.replace(path)


def _disk_full(error: BaseException) -> bool:
    """ENOSPC however the engine's writer reports it (OSError, or a library's own error with the text)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        if "no space left on device" in str(current).lower():
            return True
        current = current.__cause__ or current.__context__
    return False


def _read_meta(directory: Path) -> dict[str, Any] | None:
    meta = _read_json(directory / "meta.json")
    return meta if meta is not None and "max_abs_diff" in meta else None

