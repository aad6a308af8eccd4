"""Checkpoint layout: the ViT-L/512 release manifest, save_pretrained, and every accepted load format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from showroom_ros.models import CheckpointError, Fast3R, Fast3RConfig
from showroom_ros.models.loading import alias_pairs, stored_state_dict

FIXTURES = "fixtures/fast3r"


def read_manifest(path: Path) -> list[tuple[str, list[int], str]]:
    rows = []
    for line in path.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows.append((key, json.loads(shape), dtype))
    return rows


@pytest.fixture(scope="module")
def golden(shared_root: Path) -> dict[str, Any]:
    return torch.load(shared_root / FIXTURES / "tiny_golden.pt", weights_only=True)


@pytest.fixture(scope="module")
def vitl_config(shared_root: Path) -> Fast3RConfig:
    return Fast3RConfig.from_json_file(shared_root / FIXTURES / "vitl512_config.json")


@pytest.fixture(scope="module")
def vitl_meta(vitl_config: Fast3RConfig) -> Fast3R:
    with torch.device("meta"):
        return Fast3R(vitl_config)


@pytest.fixture(scope="module")
def tiny_dir(golden: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = Fast3R(golden["config"])
    model.load_state_dict(golden["state_dict"])
    return model.save_pretrained(tmp_path_factory.mktemp("tiny") / "fast3r-tiny")


def assert_same_weights(model: Fast3R, golden: dict[str, Any]) -> None:
    state = model.state_dict()
    assert list(state) == list(golden["state_dict"])
    for key, tensor in golden["state_dict"].items():
        assert torch.equal(state[key], tensor), key
    assert not model.training


def sequential_outputs(model: Fast3R, golden: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
    with torch.inference_mode():
        return model(golden["views_input"], sequential_image_ids=True)


# ---------------------------------------------------------------- release configuration
def test_release_config_round_trips_byte_for_byte(shared_root: Path, vitl_config: Fast3RConfig) -> None:
    text = (shared_root / FIXTURES / "vitl512_config.json").read_text()
    assert "Infinity" in text  # the bare tokens a strict JSON parser rejects
    assert vitl_config.head.depth_mode == ("exp", float("-inf"), float("inf"))
    assert vitl_config.head.conf_mode == ("exp", 1.0, float("inf"))
    assert vitl_config.head.dpt_layer_dims == (96, 192, 384, 768) and vitl_config.head.dpt_feature_dim == 256
    assert vitl_config.to_json_string() == text.strip()
    assert Fast3RConfig.from_dict(vitl_config.to_dict()) == vitl_config == Fast3RConfig.vit_large_512()


def test_vitl_builds_with_the_manifests_720_keys(shared_root: Path, vitl_meta: Fast3R) -> None:
    manifest = read_manifest(shared_root / FIXTURES / "vitl512_state_dict_manifest.tsv")
    state = vitl_meta.state_dict()
    assert len(manifest) == len(state) == 720
    assert [key for key, _, _ in manifest] == list(state)
    for key, shape, dtype in manifest:
        assert list(state[key].shape) == shape, key
        assert str(state[key].dtype) == f"torch.{dtype}", key
    assert "decoder.image_idx_emb" not in state
    assert tuple(vitl_meta.decoder.image_idx_emb.shape) == (1000, 1024)


def test_vitl_parameter_counts(shared_root: Path, vitl_meta: Fast3R) -> None:
    summary = json.loads((shared_root / FIXTURES / "vitl512_summary.json").read_text())
    assert vitl_meta.num_parameters() == summary["total_parameters"] == 647_551_368
    by_module = summary["parameters_by_module"]
    for name in ("encoder", "decoder", "downstream_head_local"):
        assert sum(p.numel() for p in getattr(vitl_meta, name).parameters()) == by_module[name]
    assert (
        sum(p.numel() for p in vitl_meta.downstream_head.parameters())
        == by_module["downstream_head (global)"]
    )
    assert (
        sum(t.numel() for t in vitl_meta.state_dict().values())
        == summary["state_dict_numel_counting_aliases_twice"]
    )


def test_vitl_stored_keys_are_the_safetensors_manifests_712(shared_root: Path, vitl_meta: Fast3R) -> None:
    """save_pretrained writes stored_state_dict(); at ViT-L that is exactly the release file's 712 tensors."""
    manifest = read_manifest(shared_root / FIXTURES / "vitl512_safetensors_manifest.tsv")
    stored = stored_state_dict(vitl_meta.state_dict())
    assert len(stored) == len(manifest) == 712
    assert [key for key, _, _ in manifest] == list(stored)
    assert all(list(stored[key].shape) == shape for key, shape, _ in manifest)


# ---------------------------------------------------------------- save_pretrained
def test_save_pretrained_writes_the_hf_layout(
    tiny_dir: Path, golden: dict[str, Any], shared_root: Path
) -> None:
    assert sorted(p.name for p in tiny_dir.iterdir()) == ["config.json", "model.safetensors"]
    written = json.loads((tiny_dir / "config.json").read_text())
    assert written == json.loads((shared_root / FIXTURES / "tiny_golden_config.json").read_text())
    aliases = {alias for _, alias in alias_pairs()}
    with safe_open(str(tiny_dir / "model.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
        metadata = handle.metadata()
        assert sorted(keys) == sorted(k for k in golden["state_dict"] if k not in aliases)
        assert len(keys) == 280
        for key in keys:
            assert torch.equal(handle.get_tensor(key), golden["state_dict"][key])
    for stored, alias in alias_pairs():
        assert metadata[alias] == stored
    assert json.loads(metadata["fast3r_config"]) == written


# ---------------------------------------------------------------- from_pretrained formats
def test_round_trip_directory(tiny_dir: Path, golden: dict[str, Any]) -> None:
    model = Fast3R.from_pretrained(tiny_dir)
    assert_same_weights(model, golden)
    outputs = sequential_outputs(model, golden)
    for got, want in zip(outputs, golden["outputs_sequential_image_ids"], strict=True):
        torch.testing.assert_close(
            got["pts3d_in_other_view"], want["pts3d_in_other_view"], rtol=1e-4, atol=2e-4
        )
        torch.testing.assert_close(got["conf_local"], want["conf_local"], rtol=1e-4, atol=1e-5)


def test_single_safetensors_with_embedded_config(
    tiny_dir: Path, golden: dict[str, Any], tmp_path: Path
) -> None:
    lone = tmp_path / "weights.safetensors"  # no config.json beside it
    shutil.copy(tiny_dir / "model.safetensors", lone)
    assert_same_weights(Fast3R.from_pretrained(lone), golden)


def test_plain_safetensors_with_only_alias_names(golden: dict[str, Any], tmp_path: Path) -> None:
    """A file keeping the layer_rn.N names instead of layer{N+1}_rn (the other alias) also loads."""
    stored_names = {stored for stored, _ in alias_pairs()}
    tensors = {k: v.contiguous() for k, v in golden["state_dict"].items() if k not in stored_names}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(golden["config"]))
    assert_same_weights(Fast3R.from_pretrained(tmp_path / "model.safetensors"), golden)


@pytest.mark.parametrize(
    "layout",
    ["bare", "model_state_dict", "lightning", "compiled"],
)
def test_torch_checkpoint_formats(layout: str, golden: dict[str, Any], tmp_path: Path) -> None:
    aliases = {alias for _, alias in alias_pairs()}
    state = {k: v.clone() for k, v in golden["state_dict"].items() if k not in aliases}
    if layout == "bare":
        payload: Any = state
        path = tmp_path / "fast3r.pth"
    elif layout == "model_state_dict":  # what ShowRoom's trainer saves
        payload = {"model_state_dict": state, "epoch": 3, "optimizer_lr": 1e-4}
        path = tmp_path / "student.pth"
    elif layout == "lightning":  # LightningModule with the network as `self.net`, plus a loss buffer
        wrapped = {f"net.{k}": v for k, v in state.items()}
        wrapped["criterion.weights"] = torch.ones(3)
        payload = {"state_dict": wrapped, "epoch": 7, "global_step": 1000, "pytorch-lightning_version": "2.4"}
        path = tmp_path / "last.ckpt"
    else:  # torch.compile'd module saved as is
        payload = {f"_orig_mod.{k}": v for k, v in golden["state_dict"].items()}
        path = tmp_path / "compiled.pt"
    torch.save(payload, path)
    model = Fast3R.from_pretrained(path, config=golden["config"])
    assert_same_weights(model, golden)


def test_torch_checkpoint_uses_config_json_beside_it(golden: dict[str, Any], tmp_path: Path) -> None:
    torch.save(golden["state_dict"], tmp_path / "weights.pth")
    (tmp_path / "config.json").write_text(json.dumps(golden["config"]))
    assert_same_weights(Fast3R.from_pretrained(tmp_path / "weights.pth"), golden)


def test_hugging_face_cache_offline(tiny_dir: Path, golden: dict[str, Any], tmp_path: Path) -> None:
    """A repo id resolves through huggingface_hub's cache without touching the network."""
    repo = tmp_path / "hub" / "models--showroom--fast3r-tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_dir / name, snapshot / name)
    model = Fast3R.from_pretrained("showroom/fast3r-tiny", cache_dir=tmp_path / "hub", local_files_only=True)
    assert_same_weights(model, golden)
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
        Fast3R.from_pretrained("showroom/not-downloaded", cache_dir=tmp_path / "hub", local_files_only=True)


def test_load_in_bfloat16(tiny_dir: Path, golden: dict[str, Any]) -> None:
    """dtype=bf16 stores linear/conv weights in bf16 (LayerNorms stay fp32) and always autocasts: the
    outputs equal those of the fp32 model under bf16 autocast, bit for bit."""
    model = Fast3R.from_pretrained(tiny_dir, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert model.decoder.dec_blocks[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert model.decoder.dec_blocks[0].norm1.weight.dtype == torch.float32
    assert model.decoder.image_idx_emb.dtype == torch.float32  # recomputed, not loaded
    reference = Fast3R.from_pretrained(tiny_dir)
    with torch.inference_mode():
        outputs = model(golden["views_input"], sequential_image_ids=True)
        expected = reference(golden["views_input"], sequential_image_ids=True, autocast_dtype=torch.bfloat16)
    for got, want in zip(outputs, expected, strict=True):
        for key in want:
            assert got[key].dtype == torch.float32
            assert torch.equal(got[key], want[key]), key
    with pytest.raises(ValueError, match=r"cannot run in torch\.float16"):
        model(golden["views_input"], autocast_dtype=torch.float16)


# ---------------------------------------------------------------- bad checkpoints
def test_wrong_keys_are_listed(golden: dict[str, Any], tmp_path: Path) -> None:
    state = dict(golden["state_dict"])
    del state["decoder.dec_blocks.3.mlp.fc2.bias"]
    state["decoder.dec_blocks.3.mlp.fc3.bias"] = torch.zeros(96)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as error:
        Fast3R.from_pretrained(tmp_path / "broken.pth", config=golden["config"])
    message = str(error.value)
    assert "1 missing keys" in message and "decoder.dec_blocks.3.mlp.fc2.bias" in message
    assert "1 unexpected keys" in message and "decoder.dec_blocks.3.mlp.fc3.bias" in message


def test_wrong_model_size_lists_shape_mismatches(tiny_dir: Path, golden: dict[str, Any]) -> None:
    config = dict(golden["config"])
    config["head_args"] = {**config["head_args"], "dpt_layer_dims": [8, 16, 32, 64]}
    with pytest.raises(ValueError, match=r"shape mismatches:[\s\S]*act_postprocess\.0\.0\.weight"):
        Fast3R.from_pretrained(tiny_dir, config=config)
    # Without any config the release ViT-L configuration is assumed: the tiny file does not fit it.
    torch.save(golden["state_dict"], tiny_dir.parent / "no_config.pth")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        Fast3R.from_pretrained(tiny_dir.parent / "no_config.pth")


class _NotAStateDict:
    def __init__(self) -> None:
        self.weights = torch.zeros(2)


def test_pickled_object_is_refused(tmp_path: Path) -> None:
    torch.save(_NotAStateDict(), tmp_path / "object.pth")
    with pytest.raises(CheckpointError, match="not a plain state_dict"):
        Fast3R.from_pretrained(tmp_path / "object.pth")


def test_dict_without_tensors_is_refused(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "notes": "no weights here"}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match=r"without a state_dict: its keys are \['epoch', 'notes'\]"):
        Fast3R.from_pretrained(tmp_path / "meta.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list, not a state_dict"):
        Fast3R.from_pretrained(tmp_path / "list.pth")


def test_conflicting_aliases_are_refused(golden: dict[str, Any], tmp_path: Path) -> None:
    state = {k: v.clone() for k, v in golden["state_dict"].items()}
    state["downstream_head.dpt.scratch.layer_rn.1.weight"] += 1.0
    torch.save(state, tmp_path / "conflict.pth")
    with pytest.raises(CheckpointError, match="different tensors for the aliases"):
        Fast3R.from_pretrained(tmp_path / "conflict.pth", config=golden["config"])


def test_missing_paths_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a file, a directory, nor a repo id"):
        Fast3R.from_pretrained(tmp_path / "does-not-exist.safetensors")
    with pytest.raises(FileNotFoundError, match=r"has no model\.safetensors"):
        Fast3R.from_pretrained(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"unsupported checkpoint type '\.txt'"):
        Fast3R.from_pretrained(tmp_path / "notes.txt")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        Fast3R.from_pretrained(tmp_path / "garbage.safetensors")


def test_bad_configs_are_explained(vitl_config: Fast3RConfig) -> None:
    data = vitl_config.to_dict()
    with pytest.raises(ValueError, match="landscape_only=true is not supported"):
        Fast3RConfig.from_dict({**data, "head_args": {**data["head_args"], "landscape_only": True}})
    with pytest.raises(ValueError, match="decoder depth must be > 9"):
        Fast3RConfig.from_dict({**data, "decoder_args": {**data["decoder_args"], "depth": 8}})
    with pytest.raises(ValueError, match="enc_embed_dim"):
        Fast3RConfig.from_dict({**data, "decoder_args": {**data["decoder_args"], "enc_embed_dim": 768}})
    with pytest.raises(ValueError, match="unknown top-level keys"):
        Fast3RConfig.from_dict({**data, "model_args": {}})


def _closed_port() -> int:
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_unreachable_hub_is_detected_once_and_read_from_the_cache_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14 defect 7: a refused hub cost 5 retries per file; now one probe, then the cache only."""
    from showroom_ros.models import loading

    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    reason = loading.hub_unreachable_reason()
    assert reason is not None and endpoint in reason and "unreachable" in reason
    assert loading.hub_unreachable_reason() is reason  # probed once per process
    with pytest.raises(FileNotFoundError, match="offline: the Hugging Face hub") as raised:
        loading.resolve_checkpoint("showroom/not-downloaded", cache_dir=tmp_path / "hub")
    assert "\n" not in str(raised.value)


def test_reachable_hub_is_not_reported() -> None:
    import socket

    from showroom_ros.models import loading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        assert loading.hub_unreachable_reason(f"http://127.0.0.1:{server.getsockname()[1]}") is None
    finally:
        server.close()
