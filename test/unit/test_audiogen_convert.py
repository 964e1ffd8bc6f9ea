"""AudioGen's audiocraft export -> the transformers MusicGen classes: the converter on the tiny export
`make-tiny` writes, its cache, and its strictness (missing, extra and misshapen keys fail, naming the key)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from lib.catalogue import get_spec
from server.hub import store
from server.models.convert import cache, keys
from server.models.convert.audiocraft_export import COMPRESSION_FILE, LM_FILE, convert_export
from server.models.convert.xpcfg import ConversionError
from server.tiny.write import write_tiny_models

SPEC = get_spec("audiogen-medium")


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    hub = tmp_path_factory.mktemp("audiogen-hub")
    write_tiny_models(hub, ["audiogen-medium"])
    return hub


@pytest.fixture(scope="module")
def snapshots(hub) -> tuple[Path, Path]:
    return store.snapshot_dir(SPEC, hub), store.transformers_snapshot("google-t5/t5-large", hub)


def edited_export(snapshots, tmp_path, file: str, edit) -> Path:
    """A copy of the tiny export with `edit(best_state, cfg)` applied to one of its files."""
    export = tmp_path / "export"
    export.mkdir()
    for name in (LM_FILE, COMPRESSION_FILE):
        shutil.copyfile(snapshots[0] / name, export / name)
    pkg = torch.load(export / file, weights_only=True)
    cfg = yaml.safe_load(pkg["xp.cfg"])
    edit(pkg["best_state"], cfg)
    pkg["xp.cfg"] = yaml.safe_dump(cfg)
    torch.save(pkg, export / file)
    return export


def test_make_tiny_writes_audiocraft_format(snapshots):
    export, t5 = snapshots
    assert sorted(p.name for p in export.iterdir()) == ["README.md", COMPRESSION_FILE, LM_FILE]
    pkg = torch.load(export / LM_FILE, weights_only=True)
    assert set(pkg) == {"best_state", "xp.cfg"}
    state = pkg["best_state"]
    # audiocraft's names: fused q/k/v, emb/linears per codebook, the T5 projection inside the LM.
    assert state["transformer.layers.0.self_attn.in_proj_weight"].shape == (3 * 64, 64)
    assert {f"emb.{k}.weight" for k in range(4)} <= set(state)
    assert "condition_provider.conditioners.description.output_proj.weight" in state
    codec = torch.load(export / COMPRESSION_FILE, weights_only=True)["best_state"]
    assert "encoder.model.0.conv.conv.weight_g" in codec and "quantizer.vq.layers.3._codebook.embed" in codec
    assert "decoder.model.3.convtr.convtr.weight_v" in codec  # the upsampling convolutions
    assert (t5 / "config.json").is_file() and store.is_installed(SPEC, export.parent.parent.parent)


def test_conversion_maps_every_tensor(snapshots, tmp_path):
    from transformers import MusicgenForConditionalGeneration

    export, t5 = snapshots
    convert_export(export, t5, tmp_path / "out")
    model, info = MusicgenForConditionalGeneration.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.audio_encoder.sampling_rate == 16000 and model.config.audio_encoder.frame_rate == 50
    assert model.config.decoder.num_codebooks == 4
    state = torch.load(export / LM_FILE, weights_only=True)["best_state"]
    layer = model.decoder.model.decoder.layers[1]
    fused = torch.cat(
        [layer.encoder_attn.q_proj.weight, layer.encoder_attn.k_proj.weight, layer.encoder_attn.v_proj.weight]
    )
    assert torch.equal(fused, state["transformer.layers.1.cross_attention.in_proj_weight"])
    assert torch.equal(model.decoder.lm_heads[3].weight, state["linears.3.weight"])
    assert torch.equal(
        model.enc_to_dec_proj.bias, state["condition_provider.conditioners.description.output_proj.bias"]
    )
    codec = torch.load(export / COMPRESSION_FILE, weights_only=True)["best_state"]
    assert torch.equal(
        model.audio_encoder.quantizer.layers[2].codebook.embed, codec["quantizer.vq.layers.2._codebook.embed"]
    )


def test_converted_copy_is_cached_beside_the_original(hub, snapshots):
    export, t5 = snapshots
    first = cache.ensure_converted(export, t5)
    assert first.parent == export.parent.parent / "converted" and export.name in first.name
    stamp = os.stat(first / "config.json").st_mtime_ns
    assert cache.ensure_converted(export, t5) == first
    assert os.stat(first / "config.json").st_mtime_ns == stamp  # not converted again
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".converting-")]


def _drop(key):
    return lambda state, cfg: state.pop(key)


def _add(key):
    return lambda state, cfg: state.__setitem__(key, torch.zeros(3))


def _reshape(key):
    return lambda state, cfg: state.__setitem__(key, torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1))


@pytest.mark.parametrize(
    "file,edit,named",
    [
        (LM_FILE, _drop("transformer.layers.1.linear2.weight"), "transformer.layers.1.linear2.weight"),
        (LM_FILE, _drop("transformer.layers.0.cross_attention.in_proj_weight"), "cross_attention.in_proj_weight"),
        (LM_FILE, _add("transformer.layers.0.layer_scale_1.scale"), "transformer.layers.0.layer_scale_1.scale"),
        (LM_FILE, _add("emb.4.weight"), "emb.4.weight"),
        (LM_FILE, _reshape("out_norm.weight"), "out_norm.weight"),
        (LM_FILE, _reshape("condition_provider.conditioners.description.output_proj.weight"), "output_proj.weight"),
        (COMPRESSION_FILE, _drop("decoder.model.1.lstm.weight_hh_l0"), "decoder.model.1.lstm.weight_hh_l0"),
        (COMPRESSION_FILE, _add("quantizer.vq.layers.4._codebook.embed"), "quantizer.vq.layers.4._codebook.embed"),
        (COMPRESSION_FILE, _reshape("encoder.model.0.conv.conv.weight_v"), "encoder.model.0.conv.conv.weight_v"),
    ],
)
def test_strict_conversion_names_the_key(snapshots, tmp_path, file, edit, named):
    export = edited_export(snapshots, tmp_path, file, edit)
    with pytest.raises(ConversionError) as err:
        convert_export(export, snapshots[1], tmp_path / "out")
    assert named in str(err.value)
    assert not (tmp_path / "out" / "config.json").exists()


@pytest.mark.parametrize(
    "setting,value",
    [
        ("positional_embedding", "rope"),
        ("norm_first", False),
        ("bias_attn", True),
        ("layer_scale", 0.1),
        ("qk_layer_norm", True),
    ],
)
def test_settings_the_decoder_cannot_express_are_refused(snapshots, tmp_path, setting, value):
    export = edited_export(
        snapshots, tmp_path, LM_FILE, lambda s, cfg: cfg["transformer_lm"].__setitem__(setting, value)
    )
    with pytest.raises(ConversionError, match=f"transformer_lm.{setting}"):
        convert_export(export, snapshots[1], tmp_path / "out")


def test_key_rules_run_both_ways():
    state = {
        "transformer.layers.3.self_attn.in_proj_weight": torch.arange(12.0).view(6, 2),
        "transformer.layers.3.norm_cross.bias": torch.ones(2),
        "linears.1.weight": torch.ones(5, 2),
    }
    mapped = keys.map_state(state, keys.LM_RULES, keys.IN_PROJ_RULES)
    assert torch.equal(
        mapped["decoder.model.decoder.layers.3.self_attn.k_proj.weight"], torch.arange(4.0, 8.0).view(2, 2)
    )
    back = keys.unmap_state(mapped, keys.LM_RULES, keys.IN_PROJ_RULES)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    assert keys.audiocraft_name("decoder.model.decoder.layers.3.self_attn.v_proj.weight") == (
        "transformer.layers.3.self_attn.in_proj_weight"
    )
    with pytest.raises(ConversionError, match="transformer.layers.0.gate.weight"):
        keys.map_state({"transformer.layers.0.gate.weight": torch.ones(1)}, keys.LM_RULES, keys.IN_PROJ_RULES)


def test_missing_text_encoder_repo_is_not_installed_not_broken(tmp_path):
    """AudioGen without its T5 repo is a model to pull (409 with the command), not damaged files (503)."""
    from lib.settings import Settings
    from server.models.registry import ModelRegistry

    hub = tmp_path / "hub"
    write_tiny_models(hub, ["audiogen-medium"])
    shutil.rmtree(store.repo_folder("google-t5/t5-large", hub))
    assert not store.is_installed(SPEC, hub)
    registry = ModelRegistry(Settings(models_dir=hub, data_dir=tmp_path / "data", device="cpu"))
    with pytest.raises(store.ModelNotInstalled, match="models pull audiogen-medium"):
        registry.get("audiogen-medium")
