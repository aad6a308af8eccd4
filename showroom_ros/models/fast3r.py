"""The Fast3R model (CVPR 2025): many views in, one pointmap per view in view 0's camera frame out.

Numerically this reproduces upstream's own model code (facebookresearch/fast3r @ 33104d4) in fp32 on CPU;
the goldens in ``../shared/fixtures/fast3r`` are the proof. The module tree and state_dict keys are
upstream's, so the released checkpoint ``jedyang97/Fast3R_ViT_Large_512`` loads without conversion.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from showroom_ros.models.config import Fast3RConfig
from showroom_ros.models.decoder import FusionDecoder, draw_random_image_ids
from showroom_ros.models.decoder import sequential_image_ids as make_sequential_image_ids
from showroom_ros.models.dpt_head import PointmapHead, pointmap_activation
from showroom_ros.models.encoder import CroCoEncoder
from showroom_ros.models.engines import DEFAULT_TOLERANCE, NetworkEngine, check_engine
from showroom_ros.models.loading import (
    WEIGHTS_NAME,
    CheckpointError,
    check_state_dict,
    normalize_state_dict,
    read_checkpoint,
    resolve_checkpoint,
    safetensors_metadata,
    stored_state_dict,
)

LOG = logging.getLogger(__name__)

View = Mapping[str, Any]
#: Views per DPT-head call. Upstream uses 25; smaller bounds the head's activation memory (the largest part
#: of peak memory at 512x384) at no measurable speed cost on CPU.
DEFAULT_HEAD_CHUNK_SIZE = 4


class Fast3R(nn.Module):
    """CroCo encoder -> fusion decoder -> global DPT head (+ local DPT head).

    ``forward(views)`` takes upstream's view dicts (``img`` (B, 3, H, W) in [-1, 1], optional ``true_shape``
    (B, 2) = (H, W)) and returns one dict per view with ``pts3d_in_other_view`` (B, H, W, 3) in view 0's
    camera frame, ``conf`` (B, H, W), and with the local head ``pts3d_local`` (B, H, W, 3) in the view's own
    camera frame and ``conf_local`` (B, H, W). Everything returned is float32.
    """

    def __init__(self, config: Fast3RConfig | Mapping[str, Any]) -> None:
        super().__init__()
        if not isinstance(config, Fast3RConfig):
            config = Fast3RConfig.from_dict(dict(config))
        self.config = config
        self.encoder = CroCoEncoder(config.encoder)
        self.decoder = FusionDecoder(config.decoder)
        head_args = (config.head, config.encoder.embed_dim, config.decoder.embed_dim, config.decoder.depth)
        self.downstream_head = PointmapHead(*head_args)
        self.downstream_head_local = PointmapHead(*head_args) if config.head.with_local_head else None
        self.head_chunk_size = DEFAULT_HEAD_CHUNK_SIZE
        self.engine: NetworkEngine | None = None  # set by use_engine(); None runs eager torch

    # ------------------------------------------------------------------ inputs
    @property
    def device(self) -> torch.device:
        return self.encoder.patch_embed.proj.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the linear and convolution weights are stored in (the compute dtype)."""
        return self.encoder.patch_embed.proj.weight.dtype

    def set_compute_dtype(self, dtype: torch.dtype) -> Fast3R:
        """Store linear/conv weights in ``dtype`` (bf16/fp16) and always run under autocast to it.

        LayerNorms and the image-index table stay float32, as autocast would use them, so the outputs are
        identical to autocast with float32 weights, while the weights take half the memory and are not
        re-cast on every forward (on CPU that cast costs several seconds per ViT-L forward).
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                module.to(dtype)
        return self

    def use_engine(
        self,
        engine: str = "auto",
        precision: str = "fp32",
        cache_dir: str | Path | None = None,
        tolerance: float | None = None,
        cache_max_bytes: int | None = None,
    ) -> NetworkEngine | None:
        """Run the network on an inference engine from now on (``torch`` detaches any engine).

        Artefacts are built lazily, per image size, at the first forward of that size (or by
        ``self.engine.prepare((H, W))``), cached under ``cache_dir`` and checked against eager fp32 torch
        (see :mod:`showroom_ros.models.engines`), which keeps to ``cache_max_bytes`` by removing the least
        recently used artefacts (None: :func:`~showroom_ros.models.engine_cache.default_max_bytes`; 0: no
        limit). Forwards asking for intermediates, or in a dtype the engine was not built for, stay eager.
        """
        check_engine(engine, precision)
        if engine == "torch":
            self.engine = None
            return None
        self.engine = NetworkEngine(
            self,
            engine,
            precision,
            cache_dir,
            DEFAULT_TOLERANCE if tolerance is None else tolerance,
            cache_max_bytes=cache_max_bytes,
        )
        return self.engine

    def num_parameters(self) -> int:
        """Unique parameters (the aliased DPT convs count once)."""
        return sum(p.numel() for p in self.parameters())

    def _check_views(self, views: Sequence[View]) -> tuple[list[torch.Tensor], int, tuple[int, int]]:
        """Validate the view dicts; returns the images (on the model's device), batch size and (H, W)."""
        if isinstance(views, Mapping) or not isinstance(views, Sequence):
            raise ValueError(
                "views must be a list of view dicts (one per image), e.g. from preprocess_images()"
            )
        if len(views) == 0:
            raise ValueError("Fast3R got no views; it needs at least 2 images of the scene")
        if len(views) == 1:
            raise ValueError("Fast3R got 1 view; it reconstructs from at least 2 views of the same scene")
        images, shapes = [], []
        patch = self.config.encoder.patch_size
        for index, view in enumerate(views):
            if not isinstance(view, Mapping) or "img" not in view:
                raise ValueError(f"view {index} must be a dict with an 'img' tensor (B, 3, H, W)")
            image = view["img"]
            if not isinstance(image, torch.Tensor):
                raise ValueError(f"view {index}: 'img' must be a torch tensor, got {type(image).__name__}")
            if image.ndim != 4 or image.shape[1] != 3:
                raise ValueError(
                    f"view {index}: 'img' must have shape (B, 3, H, W), got {tuple(image.shape)}"
                )
            height, width = int(image.shape[2]), int(image.shape[3])
            if height % patch or width % patch:
                raise ValueError(
                    f"view {index}: image size {height}x{width} (HxW) is not a multiple of {patch}; "
                    "use preprocess_images() to resize and crop"
                )
            if "true_shape" in view and view["true_shape"] is not None:
                true_shape = torch.as_tensor(view["true_shape"]).reshape(-1, 2).cpu()
                if not bool((true_shape[:, 0] == height).all() and (true_shape[:, 1] == width).all()):
                    raise ValueError(
                        f"view {index}: true_shape {true_shape.tolist()} does not match the image tensor "
                        f"{height}x{width} (HxW)"
                    )
            images.append(image)
            shapes.append(tuple(image.shape))
        if len(set(shapes)) > 1:
            raise ValueError(
                "all views must have the same batch size and image size; got "
                + ", ".join(f"view {i}: {s}" for i, s in enumerate(shapes))
                + " (preprocess_images() resizes photos of one camera to one size)"
            )
        images = [img.to(device=self.device, dtype=torch.float32, non_blocking=True) for img in images]
        return images, int(shapes[0][0]), (int(shapes[0][2]), int(shapes[0][3]))

    def resolve_image_ids(
        self,
        batch_size: int,
        num_views: int,
        image_idx_seed: int | None = None,
        sequential_image_ids: bool = False,
        image_ids: torch.Tensor | Sequence[int] | None = None,
    ) -> torch.Tensor:
        """The (B, N) image-index rows for a forward.

        Priority: explicit ``image_ids``; sequential 0..N-1 when asked or when the config disables random
        ids; otherwise upstream's random draw, from ``torch.Generator().manual_seed(image_idx_seed)`` when a
        seed is given (equal to upstream after ``torch.manual_seed(seed)``), else from the global RNG.
        """
        if image_ids is not None:
            ids = torch.as_tensor(image_ids, dtype=torch.int64).cpu()
            if ids.ndim == 1:
                ids = ids.expand(batch_size, -1)
            if tuple(ids.shape) != (batch_size, num_views):
                raise ValueError(
                    f"image_ids must be (B, N) = ({batch_size}, {num_views}), got {tuple(ids.shape)}"
                )
            table = self.decoder.image_idx_emb.shape[0]
            if int(ids.min()) < 0 or int(ids.max()) >= table:
                raise ValueError(f"image_ids must lie in 0..{table - 1}")
            return ids
        if sequential_image_ids or not self.decoder.random_image_idx_embedding:
            return make_sequential_image_ids(batch_size, num_views)
        generator = None if image_idx_seed is None else torch.Generator().manual_seed(int(image_idx_seed))
        return draw_random_image_ids(batch_size, num_views, generator)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        views: Sequence[View],
        image_idx_seed: int | None = None,
        sequential_image_ids: bool = False,
        image_ids: torch.Tensor | Sequence[int] | None = None,
        autocast_dtype: torch.dtype | None = None,
        head_chunk_size: int | None = None,
        intermediates: dict[str, Any] | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """Run the model on N views (see the class docstring for inputs and outputs).

        ``autocast_dtype`` (e.g. torch.bfloat16) runs the network under autocast on the model's device; the
        output activations are always computed in float32. ``intermediates``, when a dict is passed, is
        filled with the tensors upstream's goldens record (encoder output, decoder layers, raw head maps).
        """
        images, batch, _ = self._check_views(views)
        num_views = len(images)
        ids = self.resolve_image_ids(batch, num_views, image_idx_seed, sequential_image_ids, image_ids)
        if self.dtype != torch.float32:
            if autocast_dtype not in (None, self.dtype):
                raise ValueError(f"this model's weights are {self.dtype}; it cannot run in {autocast_dtype}")
            autocast_dtype = self.dtype
        if autocast_dtype is not None and autocast_dtype != torch.float32:
            amp: contextlib.AbstractContextManager[Any] = torch.autocast(
                self.device.type, dtype=autocast_dtype
            )
        else:
            amp = contextlib.nullcontext()
        stacked = images[0] if num_views == 1 else torch.cat(images, dim=0)  # view-major: v * B + b
        del images
        engine = self.engine
        if engine is not None and intermediates is None and engine.serves(autocast_dtype):
            raw_global, raw_local = engine.run(stacked, ids)
        else:
            with amp:
                raw_global, raw_local = self.network(stacked, ids, head_chunk_size, intermediates)
        return self._activations(raw_global, raw_local, num_views, batch)

    def network(
        self,
        stacked: torch.Tensor,
        ids: torch.Tensor,
        head_chunk_size: int | None = None,
        intermediates: dict[str, Any] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The learned part: stacked views (N*B, 3, H, W), view-major, and image ids (B, N) -> raw head maps.

        Tensors in, tensors out, and the view count read from the shapes, so the inference engines
        (:mod:`showroom_ros.models.engines`) can trace it with a dynamic number of views.
        """
        batch, num_views = ids.shape[0], ids.shape[1]
        image_size = (stacked.shape[-2], stacked.shape[-1])
        # Encoder: every view independently, all in one batch.
        tokens, positions = self.encoder(stacked)
        patches, width = tokens.shape[1], tokens.shape[2]
        encoder_out = tokens if intermediates is not None else None
        # Decoder input: (B, N*P, E), views concatenated in order.
        fused_in = tokens.view(num_views, batch, patches, width).transpose(0, 1).reshape(batch, -1, width)
        del tokens
        hooks = self.downstream_head.hooks
        record: dict[str, torch.Tensor] | None = {} if intermediates is not None else None
        layers = self.decoder(fused_in, ids, keep_layers=None if record is not None else hooks, record=record)
        del fused_in
        if intermediates is not None and record is not None:
            intermediates.update(
                image_ids=ids,
                patch_pos=positions.expand(num_views, -1, -1),
                encoder_out=encoder_out,  # (N*B, P, E), view-major
                decoder_layer_outputs=list(layers),
                dpt_hooks_idx=list(hooks),
                **record,
            )
        # Heads: views stacked view-major, (N*B, P, C) per hook.
        hooked = []
        for hook in hooks:
            layer = layers[hook]
            assert layer is not None
            per_view = layer.view(batch, num_views, patches, -1).transpose(0, 1)
            hooked.append(per_view.reshape(num_views * batch, patches, -1))
        del layers
        chunk_views = max(1, head_chunk_size or self.head_chunk_size)
        raw_global = self._run_head(self.downstream_head, hooked, image_size, chunk_views * batch)
        raw_local = None
        if self.downstream_head_local is not None:
            raw_local = self._run_head(self.downstream_head_local, hooked, image_size, chunk_views * batch)
        if intermediates is not None:
            intermediates["head_raw_global"] = raw_global
            if raw_local is not None:
                intermediates["head_raw_local"] = raw_local
        return raw_global, raw_local

    @staticmethod
    def _run_head(
        head: PointmapHead, hooked: list[torch.Tensor], image_size: tuple[int, int], chunk: int
    ) -> torch.Tensor:
        total = hooked[0].shape[0]
        if total <= chunk:
            return head(hooked, image_size)
        pieces = [
            head([h[start : start + chunk] for h in hooked], image_size) for start in range(0, total, chunk)
        ]
        return torch.cat(pieces, dim=0)

    def _activations(
        self, raw_global: torch.Tensor, raw_local: torch.Tensor | None, num_views: int, batch: int
    ) -> list[dict[str, torch.Tensor]]:
        head = self.config.head
        pts, conf = pointmap_activation(raw_global, head.depth_mode, head.conf_mode)
        pts = pts.unflatten(0, (num_views, batch))
        conf = conf.unflatten(0, (num_views, batch))
        if raw_local is not None:
            pts_local, conf_local = pointmap_activation(raw_local, head.depth_mode, head.conf_mode)
            pts_local = pts_local.unflatten(0, (num_views, batch))
            conf_local = conf_local.unflatten(0, (num_views, batch))
        outputs = []
        for v in range(num_views):
            # Key order as upstream's batched path inserts them.
            out = {"pts3d_in_other_view": pts[v]}
            if raw_local is not None:
                out["pts3d_local"] = pts_local[v]
                out["conf_local"] = conf_local[v]
            out["conf"] = conf[v]
            outputs.append(out)
        return outputs

    # ------------------------------------------------------------------ weights
    def load_checkpoint_state_dict(self, state: Mapping[str, torch.Tensor], assign: bool = False) -> None:
        """Load any accepted key layout (aliases, wrapper prefixes); errors list missing/unexpected keys."""
        normalized = normalize_state_dict(state)
        check_state_dict(normalized, self.state_dict())
        if assign:
            reference = self.state_dict()
            converted = {k: v.to(reference[k].dtype) for k, v in normalized.items()}
            self.load_state_dict(converted, strict=True, assign=True)
            self.decoder.reset_image_idx_embedding()
        else:
            self.load_state_dict(normalized, strict=True)

    def load_backbone_from(self, teacher: Fast3R) -> None:
        """Copy the teacher's encoder and decoder weights (ShowRoom's student keeps them; heads differ)."""
        for name in ("encoder", "decoder"):
            mine, theirs = getattr(self, name), getattr(teacher, name)
            source = theirs.state_dict()
            check_state_dict(source, mine.state_dict(), where=f"teacher {name}")
            mine.load_state_dict(source, strict=True)

    @classmethod
    def from_pretrained(
        cls,
        repo_id_or_path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,  # bf16/fp16: see set_compute_dtype
        config: Fast3RConfig | Mapping[str, Any] | str | Path | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool | None = None,
        engine: str = "torch",
        engine_precision: str = "fp32",
        engine_cache_dir: str | Path | None = None,
    ) -> Fast3R:
        """Load a checkpoint (HF repo id, directory, .safetensors, .pth/.ckpt), in eval mode.

        The config comes from ``config`` when given, else the checkpoint's ``config.json`` (or the one next
        to a single file, or the one ``save_pretrained`` embeds in the safetensors metadata), else the
        ViT-L/512 release configuration. ``engine`` (one of :data:`~showroom_ros.models.names.ENGINES`) and
        ``engine_precision`` (one of :data:`~showroom_ros.models.names.ENGINE_PRECISIONS`) attach an inference
        engine (:meth:`use_engine`). Raises
        FileNotFoundError when nothing is found and ValueError
        (CheckpointError) when the file's keys or shapes do not fit, listing them.
        """
        source = resolve_checkpoint(repo_id_or_path, revision, cache_dir, local_files_only)
        state, embedded_config = read_checkpoint(source.weights)
        resolved = _resolve_config(config, embedded_config, source.config)
        with torch.device("meta"):
            model = cls(resolved)
        try:
            model.load_checkpoint_state_dict(state, assign=True)
        except CheckpointError as exc:
            raise CheckpointError(f"{source.weights}: {exc}") from None
        del state
        if dtype != torch.float32:
            model.set_compute_dtype(dtype)
        model = model.to(device=torch.device(device)).eval()
        if engine != "torch":
            model.use_engine(engine, engine_precision, engine_cache_dir)
        return model

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` in the release's layout (712 tensors at ViT-L)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.to_json_file(directory / "config.json")
        tensors = {k: v.cpu() for k, v in stored_state_dict(self.state_dict()).items()}
        metadata = {
            k: v
            for k, v in safetensors_metadata(self.config.to_json_string()).items()
            if v in tensors or not k.endswith(".weight")
        }
        save_file(tensors, str(directory / WEIGHTS_NAME), metadata=metadata)
        return directory


def _resolve_config(
    explicit: Fast3RConfig | Mapping[str, Any] | str | Path | None,
    embedded: Mapping[str, Any] | None,
    config_file: Path | None,
) -> Fast3RConfig:
    if isinstance(explicit, Fast3RConfig):
        return explicit
    if isinstance(explicit, (str, Path)):
        return Fast3RConfig.from_json_file(explicit)
    if explicit is not None:
        return Fast3RConfig.from_dict(dict(explicit))
    if config_file is not None:
        return Fast3RConfig.from_json_file(config_file)
    if embedded is not None:
        return Fast3RConfig.from_dict(dict(embedded))
    LOG.info("no config.json found next to the checkpoint: assuming the ViT-L/512 release configuration")
    return Fast3RConfig.vit_large_512()
