"""Inference engines for Fast3R's network (``showroom_ros.models.engines``), on the tiny golden config.

Real engines, real artefacts: ONNX Runtime and OpenVINO export and run the tiny random-weight model, and
torch.compile compiles it once. Each test attacks one promise: outputs equal to eager torch for any view
count, the on-disk cache reused only when its key matches (weights, engine version, damaged files), the
accuracy gate refusing an engine that is off, ``auto`` skipping what is missing or wrong, and the node's
learned backend still reconstructing when a named engine is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_distill_support import tiny_config, tiny_rooms, tiny_teacher  # noqa: E402, F401 (fixtures)

from showroom_ros.backends import LearnedBackend, LearnedConfig, ModelHolder  # noqa: E402
from showroom_ros.distillation.config import ConfigError, DistillConfig  # noqa: E402
from showroom_ros.distillation.data import collate_views  # noqa: E402
from showroom_ros.distillation.trainer import Distiller  # noqa: E402
from showroom_ros.io.datasets import load_frame_folder  # noqa: E402
from showroom_ros.models import Fast3R, Fast3RConfig  # noqa: E402
from showroom_ros.models.engines import (  # noqa: E402
    EngineError,
    NetworkEngine,
    check_engine,
    weights_digest,
)

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
HEIGHT, WIDTH = 48, 64


@pytest.fixture(scope="module")
def config(shared_root: Path) -> Fast3RConfig:
    return Fast3RConfig.from_json_file(shared_root / "fixtures/fast3r/tiny_golden_config.json")


def tiny_model(config: Fast3RConfig, seed: int = 0) -> Fast3R:
    torch.manual_seed(seed)
    return Fast3R(config).eval()


def views(count: int, seed: int = 1) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [{"img": torch.rand(1, 3, HEIGHT, WIDTH, generator=generator) * 2 - 1} for _ in range(count)]


def run(model: Fast3R, inputs: list[dict], **kwargs) -> list[dict]:
    with torch.inference_mode():
        return model(inputs, sequential_image_ids=True, **kwargs)


def largest_difference(a: list[dict], b: list[dict]) -> float:
    return max(float((x[key] - y[key]).abs().max()) for x, y in zip(a, b, strict=True) for key in x)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_engine_matches_eager_torch_for_every_view_count_from_one_artefact(config, engine, tmp_path):
    pytest.importorskip(engine)
    model = tiny_model(config)
    eager = {count: run(model, views(count, seed=count)) for count in (2, 3, 5)}
    network_engine = model.use_engine(engine, "fp32", cache_dir=tmp_path)
    for count in (3, 5, 2):  # not the probe's count first: the artefact must take any number of views
        outputs = run(model, views(count, seed=count))
        assert set(outputs[0]) == set(eager[count][0])
        assert largest_difference(outputs, eager[count]) < 1e-4
    assert len(list(tmp_path.glob(f"{engine}-fp32-*"))) == 1  # one artefact serves 2, 3 and 5 views
    report = network_engine.reports[(HEIGHT, WIDTH)]
    assert report.built and report.passed and report.max_abs_diff < 1e-4 and report.executed == "fp32"
    # Batches of scenes (the distillation teacher's case) run on the same artefact.
    batch = [{"img": torch.cat([a["img"], b["img"]])} for a, b in zip(views(3, seed=3), views(3, seed=4), strict=True)]
    eager_batch = run(tiny_model(config), batch)
    assert largest_difference(run(model, batch), eager_batch) < 1e-4
    # Forwards the engine does not serve stay eager and exact: intermediates, another dtype.
    intermediates: dict = {}
    assert largest_difference(run(model, views(3, seed=3), intermediates=intermediates), eager[3]) == 0.0
    assert "encoder_out" in intermediates
    assert (
        largest_difference(
            run(model, views(3, seed=3), autocast_dtype=torch.bfloat16),
            run(tiny_model(config), views(3, seed=3), autocast_dtype=torch.bfloat16),
        )
        == 0.0
    )


def test_cache_is_reused_only_while_its_key_and_files_are_intact(config, tmp_path):
    model = tiny_model(config)
    first = model.use_engine("onnxruntime", "fp32", cache_dir=tmp_path)
    first.prepare((HEIGHT, WIDTH))
    assert first.reports[(HEIGHT, WIDTH)].built
    (directory,) = tmp_path.glob("onnxruntime-fp32-*")

    again = tiny_model(config).use_engine("onnxruntime", "fp32", cache_dir=tmp_path)
    again.prepare((HEIGHT, WIDTH))
    assert not again.reports[(HEIGHT, WIDTH)].built  # same weights, same engine: loaded, not rebuilt

    # Other weights: another key, another artefact; the first one is never used for them.
    other = tiny_model(config, seed=7)
    assert weights_digest(other) != weights_digest(model)
    other_engine = other.use_engine("onnxruntime", "fp32", cache_dir=tmp_path)
    other_engine.prepare((HEIGHT, WIDTH))
    assert other_engine.reports[(HEIGHT, WIDTH)].built and len(list(tmp_path.glob("onnxruntime-fp32-*"))) == 2
    eager_other = run(tiny_model(config, seed=7), views(3))
    assert largest_difference(run(other, views(3)), eager_other) < 1e-4

    # A stale key inside the right folder (e.g. written by another onnxruntime version): rebuilt.
    meta = json.loads((directory / "meta.json").read_text())
    meta["key"]["engine_version"] = "0.0.1"
    (directory / "meta.json").write_text(json.dumps(meta))
    stale = tiny_model(config).use_engine("onnxruntime", "fp32", cache_dir=tmp_path)
    stale.prepare((HEIGHT, WIDTH))
    assert stale.reports[(HEIGHT, WIDTH)].built
    assert json.loads((directory / "meta.json").read_text())["key"]["engine_version"] != "0.0.1"

    # A damaged artefact with an intact key (a full disk, a killed build): rebuilt, not trusted.
    (directory / "network.onnx").write_bytes(b"not an onnx file")
    damaged_model = tiny_model(config)
    damaged = damaged_model.use_engine("onnxruntime", "fp32", cache_dir=tmp_path)
    damaged.prepare((HEIGHT, WIDTH))
    assert damaged.reports[(HEIGHT, WIDTH)].built
    assert largest_difference(run(damaged_model, views(3)), run(tiny_model(config), views(3))) < 1e-4
    assert not list(tmp_path.glob(".*building*"))  # no staging folder left behind


def test_cache_keeps_to_its_size_limit_but_never_removes_what_is_in_use(config, tmp_path):
    """A 2 GB entry nobody loaded for a day and a build abandoned by a dead process are removed before
    the build; entries this process uses stay, even above the limit (models/engine_cache.py)."""
    old = tmp_path / "openvino-fp32-512x384-0123456789abcdef0123"
    old.mkdir()
    (old / "meta.json").write_text("{}")
    with open(old / "network.bin", "wb") as weights:
        weights.truncate(2 * 10**9)  # sparse: counted by size, holds no disk
    day_ago = time.time() - 86400
    os.utime(old / "meta.json", (day_ago, day_ago))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    abandoned = tmp_path / f".onnxruntime-fp32-64x48-x.building-{dead.pid}"
    abandoned.mkdir()

    first = tiny_model(config).use_engine("onnxruntime", "fp32", cache_dir=tmp_path, cache_max_bytes=10**9)
    first.prepare((HEIGHT, WIDTH))
    assert not old.exists() and not abandoned.exists()
    (kept,) = tmp_path.glob("onnxruntime-fp32-*")
    entry_bytes = sum(p.stat().st_size for p in kept.rglob("*") if p.is_file())

    # Room for one entry only: the second model's build would push the first one out, but it is in use.
    second_model = tiny_model(config, seed=7)
    second = second_model.use_engine("onnxruntime", "fp32", cache_dir=tmp_path, cache_max_bytes=entry_bytes + 1)
    second.prepare((HEIGHT, WIDTH))
    assert kept.is_dir() and len(list(tmp_path.glob("onnxruntime-fp32-*"))) == 2
    assert largest_difference(run(second_model, views(3)), run(tiny_model(config, seed=7), views(3))) < 1e-4
    with pytest.raises(EngineError, match="cache_max_bytes"):
        tiny_model(config).use_engine("onnxruntime", "fp32", cache_dir=tmp_path, cache_max_bytes=-1)


def _mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_a_full_disk_gives_back_unused_cache_entries_else_runs_eager_and_says_why(config, engine, tmp_path):
    """On a 32 MB file system: an old entry (real bytes) leaves too little room for the tiny model's
    ~9 MB export, so the first build fails with ENOSPC, the old entry is removed and the build succeeds.
    Then the disk is filled by something else: nothing of the cache's to give back, so the model runs
    eagerly, the reason names the full disk, and no half-built folder is left."""
    pytest.importorskip(engine)
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "32m")
    try:
        cache = disk / "engines"
        old = cache / "openvino-fp32-512x384-0123456789abcdef0123"
        old.mkdir(parents=True)
        (old / "meta.json").write_text("{}")
        (old / "network.bin").write_bytes(os.urandom(27 * 2**20))
        model = tiny_model(config)
        network_engine = model.use_engine(engine, "fp32", cache_dir=cache, cache_max_bytes=0)  # no limit
        network_engine.prepare((HEIGHT, WIDTH))
        assert (HEIGHT, WIDTH) not in network_engine.failures, network_engine.failures
        assert network_engine.reports[(HEIGHT, WIDTH)].built and not old.exists()
        assert largest_difference(run(model, views(3)), run(tiny_model(config), views(3))) < 1e-4

        for entry in cache.glob(f"{engine}-*"):
            shutil.rmtree(entry)
        with contextlib.suppress(OSError), open(disk / "filler", "wb", buffering=0) as filler:
            while True:  # until ENOSPC
                filler.write(b"\0" * 2**20)
        second = tiny_model(config)
        refused = second.use_engine(engine, "fp32", cache_dir=cache, cache_max_bytes=0)
        refused.prepare((HEIGHT, WIDTH))
        reason = refused.failures[(HEIGHT, WIDTH)]
        # ONNX Runtime's writer says ENOSPC; OpenVINO's says "basic_ios::clear: iostream error".
        expected = "no space left for the engine cache" if engine == "onnxruntime" else "probably on a full disk"
        assert expected in reason and f"{cache} (" in reason and "GB free" in reason, reason
        assert largest_difference(run(second, views(3)), run(tiny_model(config), views(3))) == 0.0
        assert not list(cache.glob(".*building*")), list(cache.iterdir())
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_gate_refuses_an_engine_outside_the_tolerance_and_the_model_stays_exact(config, tmp_path):
    model = tiny_model(config)
    eager = run(model, views(3))
    # Tolerance 0: the engine's float reassociation (~1e-7) is enough to refuse it.
    network_engine = model.use_engine("onnxruntime", "fp32", cache_dir=tmp_path, tolerance=0.0)
    outputs = run(model, views(3))
    assert largest_difference(outputs, eager) == 0.0  # eager torch ran, bit for bit
    failure = network_engine.failures[(HEIGHT, WIDTH)]
    assert "OUTSIDE tolerance" in failure and not network_engine.reports[(HEIGHT, WIDTH)].passed


def test_auto_measures_eager_torch_and_each_engine_and_keeps_its_decision(config, tmp_path):
    pytest.importorskip("openvino")
    model = tiny_model(config)
    eager = run(model, views(4))
    chosen = NetworkEngine(model, "auto", "fp32", tmp_path, candidates=("openvino", "onnxruntime"))
    model.engine = chosen
    assert largest_difference(run(model, views(4)), eager) < 1e-4
    (decision_file,) = tmp_path.glob("auto-fp32-64x48-*.json")
    decision = json.loads(decision_file.read_text())
    seconds = decision["seconds"]
    assert set(seconds) == {"torch", "openvino", "onnxruntime"} and all(t > 0 for t in seconds.values())
    assert decision["chosen"] == min(seconds, key=seconds.get)  # the fastest on this machine, whatever it is
    assert (decision["chosen"] == "torch") == ((HEIGHT, WIDTH) not in chosen.reports)

    # A later start reads the decision: it builds or loads the winner only, and measures nothing.
    later_model = tiny_model(config)
    later = NetworkEngine(later_model, "auto", "fp32", tmp_path, candidates=("openvino", "onnxruntime"))
    decision_file.write_text(json.dumps({**decision, "chosen": "onnxruntime"}))  # pretend ORT had won
    later.prepare((HEIGHT, WIDTH))
    assert later.reports[(HEIGHT, WIDTH)].engine == "onnxruntime" and not later.reports[(HEIGHT, WIDTH)].built
    assert json.loads(decision_file.read_text())["chosen"] == "onnxruntime"  # not measured again

    # Nothing within tolerance 0: auto runs eager torch, exactly, and says so in its decision.
    strict_dir = tmp_path / "strict"
    strict = NetworkEngine(model, "auto", "fp32", strict_dir, tolerance=0.0, candidates=("onnxruntime", "openvino"))
    model.engine = strict
    assert largest_difference(run(model, views(4)), eager) == 0.0
    (strict_file,) = strict_dir.glob("auto-*.json")
    assert json.loads(strict_file.read_text())["seconds"].keys() == {"torch"}


def test_auto_skips_an_engine_that_is_not_installed(config, tmp_path, repo_root):
    """In a fresh interpreter where importing openvino fails, as on a machine without it."""
    config_path = repo_root.parent / "shared/fixtures/fast3r/tiny_golden_config.json"
    script = f"""
import sys
sys.modules["openvino"] = None  # import openvino -> ImportError
import torch
from showroom_ros.models import Fast3R, Fast3RConfig
from showroom_ros.models.engines import EngineError, NetworkEngine, engine_version
try:
    engine_version("openvino")
except EngineError as error:
    print("ERROR", error)
torch.manual_seed(0)
model = Fast3R(Fast3RConfig.from_json_file({str(config_path)!r}))
engine = NetworkEngine(model.eval(), "auto", "fp32", {str(tmp_path)!r}, candidates=("openvino", "onnxruntime"))
engine.prepare(({HEIGHT}, {WIDTH}))
import json, pathlib
print("CHOSE", json.loads(next(pathlib.Path({str(tmp_path)!r}).glob("auto-*.json")).read_text())["seconds"])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ERROR engine 'openvino' is not installed" in done.stdout and "pip install openvino" in done.stdout
    (measured,) = [line for line in done.stdout.splitlines() if line.startswith("CHOSE")]
    assert "'torch': " in measured and "'onnxruntime': " in measured and "openvino" not in measured
    assert "openvino skipped" in done.stderr


def test_int8_is_explicit_reported_and_never_automatic(config, tmp_path):
    model = tiny_model(config)
    eager = run(model, views(3))
    network_engine = model.use_engine("onnxruntime", "int8", cache_dir=tmp_path)
    quantised = run(model, views(3))
    report = network_engine.reports[(HEIGHT, WIDTH)]
    assert report.precision == "int8" and (HEIGHT, WIDTH) not in network_engine.failures  # reported, not gated
    difference = largest_difference(quantised, eager)
    assert difference > 0.0 and np.isfinite(difference)  # it really ran quantised
    assert (tmp_path / Path(report.directory).name / "network.int8.onnx").is_file()
    with pytest.raises(EngineError, match="never chosen automatically"):
        model.use_engine("auto", "int8", cache_dir=tmp_path)
    for engine, precision, message in (
        ("openvino", "int8", "only with engine 'onnxruntime'"),
        ("onnxruntime", "bf16", "no bf16"),
        ("tensorrt", "fp32", "unknown engine"),
        ("onnxruntime", "fp8", "unknown engine precision"),
    ):
        with pytest.raises(EngineError, match=message):
            check_engine(engine, precision)
    with pytest.raises(EngineError, match="fp32 weights"):
        tiny_model(config).set_compute_dtype(torch.bfloat16).use_engine("onnxruntime", "fp32", cache_dir=tmp_path)


def test_compile_engine_matches_eager_torch(config, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    model = tiny_model(config)
    inputs = views(2)  # the probe's view count: one compilation for gate and forward
    eager = run(model, inputs)
    network_engine = model.use_engine("compile", "fp32", cache_dir=tmp_path)
    assert largest_difference(run(model, inputs), eager) < 1e-4
    assert network_engine.reports[(HEIGHT, WIDTH)].passed


def test_learned_backend_reconstructs_on_an_engine_and_notes_a_refused_one(config, tmp_path, repo_root):
    directory = tmp_path / "teacher"
    tiny_model(config).save_pretrained(directory)
    keyframes = load_frame_folder(repo_root / "data" / "redkitchen")

    def backend(**engine) -> LearnedBackend:
        settings = LearnedConfig(model=str(directory), device="cpu", dtype="fp32", input_size=64, **engine)
        holder = ModelHolder(
            settings.model,
            "cpu",
            "fp32",
            engine=settings.engine,
            engine_precision=settings.engine_precision,
            engine_cache_dir=settings.engine_cache_dir,
        )
        holder.start_loading()
        assert holder.wait(60) == "ready", holder.reason
        return LearnedBackend("fast3r", holder, settings)

    eager = backend().reconstruct(keyframes, lambda fraction, stage: None)
    stages: list[str] = []
    on_engine = backend(engine="onnxruntime", engine_cache_dir=str(tmp_path / "cache"))
    assert "engine onnxruntime fp32" in on_engine.holder.reason
    result = on_engine.reconstruct(keyframes, lambda fraction, stage: stages.append(stage))
    assert any("preparing the onnxruntime engine" in stage for stage in stages)
    assert not result.notes or not any("engine" in note for note in result.notes)
    # The network's outputs equal eager torch's to ~1e-7 (tested above); downstream, the random tiny model's
    # degenerate geometry makes PnP and registration chaotic, so here only: a real cloud came out of it.
    assert len(result.points) > 0 and np.isfinite(result.points).all()

    refused = backend(engine="onnxruntime", engine_cache_dir=str(tmp_path / "cache"))
    refused.holder.model.engine.tolerance = 0.0  # a gate no engine can pass
    result = refused.reconstruct(keyframes, lambda fraction, stage: None)
    assert any("OUTSIDE tolerance" in note and "ran eager torch instead" in note for note in result.notes)
    np.testing.assert_array_equal(result.points, eager.points)

    with pytest.raises(ValueError, match="int8 needs model_engine 'onnxruntime'"):
        LearnedConfig(engine="openvino", engine_precision="int8")
    with pytest.raises(ValueError, match="unknown model engine"):
        LearnedConfig(engine="tensorrt")
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="engine_cache_max_gb"):
            LearnedConfig(engine_cache_max_gb=bad)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_engine_reproduces_upstreams_golden_within_the_gate(shared_root, engine, tmp_path):
    """The gate's 1e-3 on the golden's own scale (points up to ~16): upstream's outputs, through the engine."""
    pytest.importorskip(engine)
    golden = torch.load(shared_root / "fixtures/fast3r/tiny_golden.pt", weights_only=True)
    model = Fast3R(Fast3RConfig.from_dict(golden["config"])).eval()
    model.load_state_dict(golden["state_dict"], strict=True)
    model.use_engine(engine, "fp32", cache_dir=tmp_path)
    with torch.inference_mode():
        outputs = model(golden["views_input"], image_ids=golden["image_idx_used"])
    assert model.engine.reports and not model.engine.failures  # the engine ran it, not eager torch
    for got, want in zip(outputs, golden["outputs"], strict=True):
        for key in ("pts3d_in_other_view", "pts3d_local"):
            assert float((got[key] - want[key]).abs().max()) <= 1e-3, key


def test_student_with_half_width_heads_runs_on_an_engine(config, tmp_path):
    """ShowRoom's student is a Fast3R with narrower DPT heads: the same export, the same gate."""
    from showroom_ros.models import student_config

    torch.manual_seed(3)
    student = Fast3R(student_config(config)).eval()
    eager = run(student, views(3))
    student.use_engine("onnxruntime", "fp32", cache_dir=tmp_path)
    assert largest_difference(run(student, views(3)), eager) < 1e-4
    report = student.engine.reports[(HEIGHT, WIDTH)]
    assert report.passed and report.built and not student.engine.failures


def _distiller(rooms: Path, teacher: Path, output: Path, **sections) -> Distiller:
    return Distiller(DistillConfig.from_dict(tiny_config(rooms, teacher, output, **sections)))


def test_teacher_on_an_inference_engine_gives_the_same_targets(
    tmp_path: Path,
    tiny_rooms: Path,  # noqa: F811
    tiny_teacher: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The frozen teacher may run on ONNX Runtime: batched targets equal the eager ones (float error only)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setenv("SHOWROOM_ENGINE_CACHE", str(tmp_path / "engines"))
    eager = _distiller(tiny_rooms, tiny_teacher, tmp_path / "eager")
    on_engine = _distiller(tiny_rooms, tiny_teacher, tmp_path / "engine", model={"teacher_engine": "onnxruntime"})
    assert on_engine.teacher.engine is not None and eager.teacher.engine is None
    batch = collate_views([eager.train_set[(0, i)] for i in (0, 4, 8)])  # 3 rooms: a batch the probe never saw
    expected, got = eager.teacher_outputs(batch), on_engine.teacher_outputs(batch)
    assert on_engine.teacher.engine.reports  # the engine really ran (built on first use)
    for e, g in zip(expected, got, strict=True):
        for key in e:
            assert float((e[key] - g[key]).abs().max()) < 1e-4, key
    with pytest.raises(ConfigError, match=r"model\.teacher_engine"):
        _distiller(tiny_rooms, tiny_teacher, tmp_path / "bad", model={"teacher_engine": "tensorrt"})
