"""Every reconstruction backend behind the pipeline's one interface, built from one configuration.

``build_backends`` is what the node and the CLI call instead of ``pipeline.default_backends``:

* ``fast3r``: the Fast3R teacher (weights: :data:`~showroom_ros.models.names.FAST3R_RELEASE_REPO` by default),
* ``showroom``: ShowRoom's distilled student (weights only when configured),
* ``rgbd``: depth fusion (needs depth, intrinsics and poses or registrable depth),
* ``sfm``: COLMAP on the RGB keyframes (needs pycolmap only).

The learned backends load their weights in the background (:class:`ModelHolder`); the pipeline's
``auto`` mode skips them, with the holder's reason, until they are ready.

May import ``geometry``, ``capture``, ``reconstruction``, ``models`` (not ``io``, ``apps`` or ``ros``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from showroom_ros.backends.learned import LearnedBackend, LearnedConfig, ModelHolder, view_geometry
from showroom_ros.backends.sfm import SfMBackend, SfMConfig
from showroom_ros.models.names import FAST3R_RELEASE_REPO
from showroom_ros.reconstruction.pipeline import ReconstructionBackend, RGBDBackend
from showroom_ros.reconstruction.rgbd import RGBDFusionConfig


def _fast3r_defaults() -> LearnedConfig:
    return LearnedConfig(model=FAST3R_RELEASE_REPO)


@dataclass
class BackendsConfig:
    """Configuration of every backend; ``start_loading`` starts loading the configured weights at once."""

    fusion: RGBDFusionConfig = field(default_factory=RGBDFusionConfig)
    sfm: SfMConfig = field(default_factory=SfMConfig)
    fast3r: LearnedConfig = field(default_factory=_fast3r_defaults)
    showroom: LearnedConfig = field(default_factory=LearnedConfig)
    start_loading: bool = True


#: Which selected backend may use which model: a model is loaded only when the selection can run it.
MODEL_USERS = {"fast3r": ("auto", "fast3r"), "showroom": ("auto", "showroom")}


def build_backends(
    config: BackendsConfig | None = None, backend: str = "auto"
) -> dict[str, ReconstructionBackend]:
    """The four backends by name (``fast3r``, ``showroom``, ``rgbd``, ``sfm``), model loads under way.

    ``backend`` is the pipeline's selection: a learned model is loaded only for ``auto`` or its own
    backend, so ``backend: rgbd`` never downloads 2.6 GB of Fast3R weights nobody asked for.
    """
    config = config or BackendsConfig()
    backends: dict[str, ReconstructionBackend] = {}
    for name, learned in (("fast3r", config.fast3r), ("showroom", config.showroom)):
        holder = ModelHolder(
            learned.model,
            learned.device,
            learned.dtype,
            student=name == "showroom",
            label=f"{name} model",
            engine=learned.engine,
            engine_precision=learned.engine_precision,
            engine_cache_dir=learned.engine_cache_dir,
            engine_cache_max_gb=learned.engine_cache_max_gb,
        )
        if backend not in MODEL_USERS[name]:
            holder.skip(f"not loaded: backend '{backend}' does not use it")
        elif config.start_loading:
            holder.start_loading()
        backends[name] = LearnedBackend(name, holder, learned)
    backends["rgbd"] = RGBDBackend(config.fusion)
    backends["sfm"] = SfMBackend(config.sfm)
    return backends


def model_holders(backends: dict[str, ReconstructionBackend]) -> dict[str, ModelHolder]:
    """The model holders among ``backends`` (for status: ``holder.state`` and ``holder.reason``)."""
    return {name: b.holder for name, b in backends.items() if isinstance(b, LearnedBackend)}


__all__ = [
    "MODEL_USERS",
    "BackendsConfig",
    "LearnedBackend",
    "LearnedConfig",
    "ModelHolder",
    "SfMBackend",
    "SfMConfig",
    "build_backends",
    "model_holders",
    "view_geometry",
]
