"""The names of the learned models (``models/names.py``): cheap to import, and the only list anywhere.

The parameter table, the CLI, the learned backend's config and the engines must use these very tuples
(not equal copies, which drift); the tables keyed by them (torch dtypes, engine builders) must cover
exactly them; and reading them at start-up must not import torch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from showroom_ros.backends import BackendsConfig, LearnedConfig
from showroom_ros.distillation.config import DistillConfig
from showroom_ros.models.names import (
    COMPUTE_DTYPES,
    DEFAULT_ENGINE,
    DEVICES,
    DTYPE_ALIASES,
    DTYPES,
    ENGINE_CACHE_MAX_GB,
    ENGINE_PRECISION_CHOICES,
    ENGINE_PRECISIONS,
    ENGINES,
    FAST3R_RELEASE_REPO,
    normalise_dtype,
)

ALL_NAMES = sorted({*DEVICES, *DTYPES, *DTYPE_ALIASES, *ENGINES, *ENGINE_PRECISION_CHOICES})
CANDIDATES = st.one_of(st.sampled_from(ALL_NAMES), st.text(max_size=12))


def _modules_loaded_by(statement: str) -> set[str]:
    """Top-level packages in ``sys.modules`` after ``statement`` ran in a fresh interpreter."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "statement",
    [
        "import showroom_ros.models.names",
        "import showroom_ros.models",
        "from showroom_ros.models import FAST3R_RELEASE_REPO",
        "import showroom_ros.apps.cli; showroom_ros.apps.cli.build_parser()",
    ],
)
def test_reading_the_names_imports_no_torch(statement: str) -> None:
    loaded = _modules_loaded_by(statement)
    assert "showroom_ros" in loaded  # the statement ran
    assert not loaded & {"torch", "cv2", "safetensors", "huggingface_hub"}, loaded


def test_the_node_parameter_table_imports_no_torch() -> None:
    pytest.importorskip("rclpy")
    assert "torch" not in _modules_loaded_by("import showroom_ros.ros.parameters")


def test_a_lazy_model_name_loads_its_module_on_first_use() -> None:
    loaded = _modules_loaded_by("from showroom_ros.models import resolve_dtype")
    assert "torch" in loaded  # the control: the same probe does see torch when a torch name is asked for
    import showroom_ros.models as models

    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        _ = models.not_a_name
    assert set(dir(models)) == set(models.__all__) and "Fast3R" in models.__all__


def test_the_parameter_table_and_the_cli_use_these_very_tuples() -> None:
    pytest.importorskip("rclpy")
    from showroom_ros.apps.cli import build_parser
    from showroom_ros.ros.parameters import SHOWROOM_PARAMETERS

    declared = {p.name: p for p in SHOWROOM_PARAMETERS}
    assert declared["model"].default is FAST3R_RELEASE_REPO
    assert declared["model_device"].choices is DEVICES
    assert declared["model_dtype"].choices is DTYPES
    assert declared["model_engine"].choices is ENGINES
    assert declared["model_engine_precision"].choices is ENGINE_PRECISION_CHOICES
    for name in ("model_device", "model_dtype", "model_engine", "model_engine_precision"):
        assert declared[name].default in declared[name].choices
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = {a.dest: a for a in commands.choices["reconstruct"]._actions}
    assert options["engine"].choices is ENGINES
    assert options["engine_precision"].choices is ENGINE_PRECISION_CHOICES
    assert BackendsConfig().fast3r.model is FAST3R_RELEASE_REPO
    assert declared["model_engine_cache_max_gb"].default is ENGINE_CACHE_MAX_GB
    assert declared["model_engine"].default is DEFAULT_ENGINE and options["engine"].default is DEFAULT_ENGINE
    assert LearnedConfig().engine is DEFAULT_ENGINE and DistillConfig().model.teacher_engine is DEFAULT_ENGINE
    assert LearnedConfig().engine_cache_max_gb is ENGINE_CACHE_MAX_GB


def test_tables_keyed_by_the_names_cover_exactly_them() -> None:
    torch = pytest.importorskip("torch")
    from showroom_ros.models import engine_backends, engine_cache, engines
    from showroom_ros.models.dtypes import TORCH_DTYPES, dtype_name, resolve_dtype

    assert tuple(TORCH_DTYPES) == COMPUTE_DTYPES and ("auto", *COMPUTE_DTYPES) == DTYPES
    for name, dtype in TORCH_DTYPES.items():
        assert dtype_name(dtype) == name and resolve_dtype(name) is dtype
    assert dtype_name(torch.int8) is None
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        resolve_dtype("auto")
    built = set(ENGINES) - {"auto", "torch"}  # auto measures, torch is the eager model itself
    assert set(engine_backends.BUILDERS) == set(engine_backends.LOADERS) == built
    assert set(engines.AUTO_CANDIDATES) == built
    assert ("auto", *ENGINE_PRECISIONS) == ENGINE_PRECISION_CHOICES
    assert engine_cache.DEFAULT_MAX_BYTES == ENGINE_CACHE_MAX_GB * 10**9


@given(value=CANDIDATES, spelling=st.sampled_from([str, str.upper, lambda s: f"  {s}\t"]))
def test_a_dtype_is_accepted_exactly_when_listed(value: str, spelling) -> None:
    canonical = DTYPE_ALIASES.get(value.strip().lower(), value.strip().lower())
    if canonical in DTYPES:
        assert normalise_dtype(spelling(value)) == canonical
    else:
        with pytest.raises(ValueError, match="use one of auto, fp32, bf16, fp16"):
            normalise_dtype(spelling(value))


@given(engine=CANDIDATES, precision=CANDIDATES, device=CANDIDATES)
def test_the_learned_config_accepts_exactly_the_listed_names(engine: str, precision: str, device: str) -> None:
    """Each name alone (the others valid): accepted exactly when listed."""
    for field, value, names in (
        ("engine", engine, ENGINES),
        ("engine_precision", precision, ENGINE_PRECISION_CHOICES),
        ("device", device, DEVICES),
    ):
        settings = {"engine": "onnxruntime", field: value}  # onnxruntime: the engine that takes int8 too
        if field == "device":  # spelt freely, and cuda:N picks one GPU
            listed = value.strip().lower() in names or value.strip().lower().startswith("cuda")
        else:
            listed = value in names
        if listed:
            assert getattr(LearnedConfig(**settings), field) == value
        else:
            with pytest.raises(ValueError, match="unknown"):
                LearnedConfig(**settings)
