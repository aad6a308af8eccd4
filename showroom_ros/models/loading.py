"""Checkpoint formats for Fast3R: where the files are, how to read them, how their keys map to ours.

Accepted sources (see :func:`resolve_checkpoint`):

* a Hugging Face repo id such as ``jedyang97/Fast3R_ViT_Large_512`` (``config.json`` + ``model.safetensors``
  through huggingface_hub's cache, so ``HF_HUB_OFFLINE=1`` and ``local_files_only`` are honoured);
* a local directory with ``config.json`` + ``model.safetensors`` (what ``save_pretrained`` writes);
* a single ``.safetensors`` file;
* a ``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin`` file read with ``torch.load(weights_only=True)``: a bare
  state_dict, ShowRoom's ``{'model_state_dict': ...}``, ``{'state_dict': ...}`` (Lightning, keys prefixed
  by the LightningModule's attribute such as ``net.``), ``{'model': ...}``.

The release's safetensors file holds 712 tensors: the DPT reassemble convs are stored only as
``scratch.layer{1..4}_rn`` while the module also exposes them as ``scratch.layer_rn.{0..3}``. Either name
is accepted and the other is filled in. ``decoder.image_idx_emb`` is never stored; it is recomputed.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

LOG = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
HEAD_PREFIXES = ("downstream_head", "downstream_head_local")
#: Key present in every Fast3R state_dict; used to find a wrapper's prefix (``net.``, ``module.``, ...).
ANCHOR_KEY = "encoder.patch_embed.proj.weight"
NON_PERSISTENT_KEYS = ("decoder.image_idx_emb",)
#: safetensors metadata key under which ``save_pretrained`` embeds the config (for single-file use).
CONFIG_METADATA_KEY = "fast3r_config"
WRAPPER_KEYS = ("model_state_dict", "state_dict", "model", "module", "net")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Seconds one reachability probe of the hub may take (DNS + TCP connect), once per process.
HUB_PROBE_TIMEOUT_S = 3.0
_TRUE = ("1", "on", "yes", "true")
_hub_probe: dict[str, str | None] = {}
_hub_probe_lock = threading.Lock()


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: wrong format, or keys/shapes that do not fit the model."""


@dataclass
class CheckpointSource:
    """Resolved files: the weights and, when one was found, a config.json."""

    weights: Path
    config: Path | None


def alias_pairs() -> list[tuple[str, str]]:
    """(stored name, alias name) of the duplicated DPT reassemble conv weights."""
    return [
        (f"{head}.dpt.scratch.layer{i + 1}_rn.weight", f"{head}.dpt.scratch.layer_rn.{i}.weight")
        for head in HEAD_PREFIXES
        for i in range(4)
    ]


def resolve_checkpoint(
    repo_id_or_path: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
) -> CheckpointSource:
    """Find the weights (and config) for a local path or a Hugging Face repo id."""
    path = Path(repo_id_or_path).expanduser()
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            candidates = sorted(p.name for p in path.glob("*.safetensors")) + sorted(
                p.name for p in path.iterdir() if p.suffix in TORCH_SUFFIXES
            )
            if len(candidates) != 1:
                raise FileNotFoundError(
                    f"{path} has no {WEIGHTS_NAME}"
                    + (
                        f" and several candidate weight files {candidates}: pass one file"
                        if candidates
                        else ""
                    )
                )
            weights = path / candidates[0]
        config = path / CONFIG_NAME
        return CheckpointSource(weights, config if config.is_file() else None)
    if path.is_file():
        if path.suffix != ".safetensors" and path.suffix not in TORCH_SUFFIXES:
            raise ValueError(
                f"{path}: unsupported checkpoint type {path.suffix!r}; expected .safetensors, "
                f"{', '.join(TORCH_SUFFIXES)}, or a directory with {CONFIG_NAME} + {WEIGHTS_NAME}"
            )
        config = path.with_name(CONFIG_NAME)
        return CheckpointSource(path, config if config.is_file() else None)
    text = str(repo_id_or_path)
    if not _REPO_ID.match(text) or text.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"Fast3R checkpoint not found: {text} is neither a file, a directory, nor a repo id"
        )
    return _download_from_hub(text, revision, cache_dir, local_files_only)


def _download_from_hub(
    repo_id: str, revision: str | None, cache_dir: str | Path | None, local_files_only: bool | None
) -> CheckpointSource:
    """Fetch through huggingface_hub's cache; offline mode (HF_HUB_OFFLINE=1) only reads the cache."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    offline = ""
    if not local_files_only and not hub_offline_requested():
        offline = hub_unreachable_reason() or ""
        if offline:  # no retries against a hub that is not there: read the cache only
            local_files_only = True
    kwargs: dict[str, Any] = {"revision": revision, "cache_dir": str(cache_dir) if cache_dir else None}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        config = hf_hub_download(repo_id, CONFIG_NAME, **kwargs)
        weights = hf_hub_download(repo_id, WEIGHTS_NAME, **kwargs)
    except LocalEntryNotFoundError as exc:
        if offline:
            raise FileNotFoundError(
                f"offline: {offline}; {repo_id!r} is not in the Hugging Face cache. Download it once with "
                f"`huggingface-cli download {repo_id}` on a connected machine, or pass a local path"
            ) from exc
        raise FileNotFoundError(
            f"Fast3R weights for {repo_id!r} are not in the Hugging Face cache and could not be downloaded "
            "(offline mode, local_files_only, or no network). Download them once with "
            f"`huggingface-cli download {repo_id}` on a connected machine, or pass a local path."
        ) from exc
    except (RepositoryNotFoundError, EntryNotFoundError) as exc:
        raise FileNotFoundError(
            f"{repo_id!r} is not a Fast3R repo on the Hugging Face hub (needs {CONFIG_NAME} + {WEIGHTS_NAME})"
        ) from exc
    except HfHubHTTPError as exc:
        raise FileNotFoundError(f"could not download {repo_id!r} from the Hugging Face hub: {exc}") from exc
    return CheckpointSource(Path(weights), Path(config))


def hub_offline_requested() -> bool:
    """``HF_HUB_OFFLINE`` set (read now, not at huggingface_hub's import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _probe_address(endpoint: str) -> tuple[str, int]:
    """Host and port a request to ``endpoint`` connects to first (its proxy when one is set)."""
    url = urllib.parse.urlsplit(endpoint)
    scheme = url.scheme or "https"
    proxy = urllib.request.getproxies().get(scheme) if not urllib.request.proxy_bypass(url.hostname or "") else None
    target = urllib.parse.urlsplit(proxy) if proxy else url
    port = target.port or (443 if (target.scheme or scheme) == "https" else 80)
    return target.hostname or "", port


def hub_unreachable_reason(endpoint: str | None = None, timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the Hugging Face hub cannot be reached (DNS or TCP connect failed), or None when it can.

    One probe per endpoint and process, without retries: huggingface_hub itself retries a refused
    connection five times with back-off (25 s and five log lines per file) before giving up.
    """
    endpoint = endpoint or os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co"
    with _hub_probe_lock:
        if endpoint in _hub_probe:
            return _hub_probe[endpoint]
        host, port = _probe_address(endpoint)
        reason: str | None = None
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as error:
            detail = " ".join(str(error).split()) or type(error).__name__
            reason = f"the Hugging Face hub {endpoint} is unreachable ({host}:{port}: {detail})"
        _hub_probe[endpoint] = reason
        return reason


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Tensors of a checkpoint file and, when it carries one, its embedded config dict."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except SafetensorError as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
        embedded = metadata.get(CONFIG_METADATA_KEY)
        return state, json.loads(embedded) if embedded else None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError) as exc:
        raise CheckpointError(
            f"{path} is not a plain state_dict: torch.load(weights_only=True) refused it "
            f"({_first_line(exc)}). "
            "Only tensors and plain containers are loaded, never pickled Python objects; re-save it with "
            "torch.save(model.state_dict(), path)."
        ) from exc
    return unwrap_state_dict(loaded, str(path)), None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _is_tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def unwrap_state_dict(loaded: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """A bare state_dict, or the one inside ShowRoom's / Lightning's / DUSt3R's wrapper dict."""
    if _is_tensor_dict(loaded):
        return dict(loaded)
    if isinstance(loaded, Mapping):
        for key in WRAPPER_KEYS:
            if key in loaded and _is_tensor_dict(loaded[key]):
                return dict(loaded[key])
        keys = sorted(str(k) for k in loaded)[:12]
        raise CheckpointError(
            f"{where} is a dict without a state_dict: its keys are {keys}; expected tensors, or one of "
            f"{list(WRAPPER_KEYS)} holding them"
        )
    raise CheckpointError(f"{where} holds a {type(loaded).__name__}, not a state_dict (a dict of tensors)")


def normalize_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip a wrapper prefix (``net.``, ``module.``, ``_orig_mod.``...), drop recomputed buffers, and make
    both alias names of the DPT reassemble convs present."""
    anchors = [key[: -len(ANCHOR_KEY)] for key in state if key.endswith(ANCHOR_KEY)]
    anchors = [p for p in anchors if p == "" or p.endswith(".")]
    if len(set(anchors)) > 1:
        raise CheckpointError(
            f"checkpoint holds several Fast3R models (prefixes {sorted(set(anchors))}); "
            "extract one state_dict"
        )
    prefix = anchors[0] if anchors else ""
    out: dict[str, torch.Tensor] = {}
    ignored = []
    for key, tensor in state.items():
        if not key.startswith(prefix):
            ignored.append(key)
            continue
        name = key[len(prefix) :]
        if name in NON_PERSISTENT_KEYS:
            continue
        out[name] = tensor
    if ignored:
        LOG.warning(
            "ignoring %d checkpoint entries outside the model prefix %r: %s",
            len(ignored),
            prefix,
            ignored[:5],
        )
    for stored, alias in alias_pairs():
        if stored in out and alias in out:
            if out[stored].shape == out[alias].shape and not torch.equal(out[stored], out[alias]):
                raise CheckpointError(
                    f"checkpoint has different tensors for the aliases {stored} and {alias}"
                )
        elif stored in out:
            out[alias] = out[stored]
        elif alias in out:
            out[stored] = out[alias]
    return out


def check_state_dict(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], where: str = "checkpoint"
) -> None:
    """Raise a :class:`CheckpointError` listing missing, unexpected and mis-shaped keys."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {list(state[k].shape)} vs model {list(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = [f"{where} does not fit this Fast3R configuration:"]
    for title, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
    ):
        if items:
            shown = "\n    ".join(items[:20])
            more = f"\n    ... and {len(items) - 20} more" if len(items) > 20 else ""
            parts.append(f"  {len(items)} {title}:\n    {shown}{more}")
    if mismatched:
        parts.append("  (a different model size? pass the matching config.json)")
    raise CheckpointError("\n".join(parts))


def stored_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state_dict as the release's safetensors file stores it: alias names removed, contiguous."""
    aliases = {alias for _, alias in alias_pairs()}
    return {k: v.detach().contiguous() for k, v in state.items() if k not in aliases}


def safetensors_metadata(config_json: str) -> dict[str, str]:
    """Metadata like safetensors' ``save_model`` writes (alias -> stored name) plus our embedded config."""
    metadata = {alias: stored for stored, alias in alias_pairs()}
    metadata["format"] = "pt"
    metadata[CONFIG_METADATA_KEY] = config_json
    return metadata
