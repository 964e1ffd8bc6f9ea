"""MusicGen-Style's model management and strict conversion on its tiny checkpoint: the files a
download takes, export and import, delete (the shared T5 kept), and conversion errors that name the
key or config field (the export's style conditioner, MERT's config and weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lib.catalogue import get_spec
from server.hub import store
from server.hub.download import needed_files
from server.hub.importer import export_model, import_model
from server.models.convert.audiocraft_export import LM_FILE, convert_export
from server.models.convert.mert import hubert_config
from server.models.convert.xpcfg import ConversionError
from server.tiny.style import MERT_REPO, mert_config
from server.tiny.write import write_tiny_models

SPEC = get_spec("musicgen-style")


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    hub = tmp_path_factory.mktemp("style-hub")
    write_tiny_models(hub, ["musicgen-style"])
    return hub


def _snapshots(hub: Path) -> tuple[Path, Path, Path]:
    return (
        store.snapshot_dir(SPEC, hub),
        store.transformers_snapshot("google-t5/t5-base", hub),
        store.transformers_snapshot(MERT_REPO, hub),
    )


def test_the_catalogue_entry():
    assert SPEC.repo == "facebook/musicgen-style" and SPEC.licence == "CC-BY-NC-4.0"
    assert SPEC.extra_repos == ("google-t5/t5-base", MERT_REPO)
    assert "style" in SPEC.capabilities and SPEC.hub_format == "audiocraft"


def test_a_download_takes_only_the_files_the_engine_reads():
    mert_listing = ["config.json", "configuration_MERT.py", "modeling_MERT.py", "preprocessor_config.json",
                    "pytorch_model.bin", "README.md", ".gitattributes"]  # fmt: skip
    assert needed_files(mert_listing, "transformers") == [
        "config.json",
        "preprocessor_config.json",
        "pytorch_model.bin",
    ]
    assert needed_files(["state_dict.bin", "compression_state_dict.bin", "README.md"], "audiocraft") == [
        "compression_state_dict.bin", "state_dict.bin"
    ]  # fmt: skip


def test_tiny_checkpoint_is_installed_in_the_published_layouts(hub):
    assert store.is_installed(SPEC, hub)
    export, _, mert = _snapshots(hub)
    assert sorted(p.name for p in export.iterdir()) == ["README.md", "compression_state_dict.bin", "state_dict.bin"]
    config = json.loads((mert / "config.json").read_text())
    assert config["model_type"] == "mert_model" and (mert / "pytorch_model.bin").is_file()
    state = torch.load(mert / "pytorch_model.bin", weights_only=True)
    assert "encoder.pos_conv_embed.conv.weight_g" in state  # the old weight-norm names, as published


def test_export_import_and_delete(hub, tmp_path):
    archive = export_model(SPEC, hub, tmp_path / "style.tar.gz")
    other = tmp_path / "other-hub"
    import_model(archive, other)
    assert store.is_installed(SPEC, other)
    both = tmp_path / "both"
    write_tiny_models(both, ["musicgen-style", "magnet-small-10secs"])  # MAGNeT shares the T5-base
    assert store.remove_model(SPEC, both) > 0
    assert store.transformers_snapshot(MERT_REPO, both) is None
    assert store.transformers_snapshot("google-t5/t5-base", both) is not None
    assert store.remove_model(SPEC, other) > 0  # alone, its T5 goes too
    assert store.transformers_snapshot("google-t5/t5-base", other) is None


def _copy_export(src: Path, dst: Path, edit_state=None, edit_cfg=None) -> Path:
    dst.mkdir()
    pkg = torch.load(src / LM_FILE, weights_only=True)
    if edit_state:
        edit_state(pkg["best_state"])
    if edit_cfg:
        cfg = yaml.safe_load(pkg["xp.cfg"])
        edit_cfg(cfg)
        pkg["xp.cfg"] = yaml.safe_dump(cfg)
    torch.save(pkg, dst / LM_FILE)
    (dst / "compression_state_dict.bin").write_bytes((src / "compression_state_dict.bin").read_bytes())
    return dst


PREFIX = "condition_provider.conditioners.self_wav."


@pytest.mark.parametrize(
    "edit_state,edit_cfg,names",
    [
        (lambda s: s.pop(PREFIX + "embed.weight"), None, "self_wav.embed.weight"),
        (lambda s: s.__setitem__(PREFIX + "extra.weight", torch.zeros(2)), None, "self_wav.extra.weight"),
        (lambda s: s.__setitem__(PREFIX + "rvq.vq.layers.9._codebook.embed", torch.zeros(64, 256)), None, "rvq"),
        (None, lambda c: c["conditioners"]["self_wav"]["style"].__setitem__("model_name", "encodec"), "model_name"),
        (None, lambda c: c["fuser"].update(prepend=["description"], cross=["self_wav"]), "fuser.prepend"),
        (None, lambda c: c["conditioners"]["self_wav"]["style"].__setitem__("eval_q", 7), "eval_q"),
        (None, lambda c: c["conditioners"]["self_wav"]["style"].__setitem__("novel", 1), "novel"),
    ],
)
def test_conversion_refuses_what_does_not_convert_by_name(hub, tmp_path, edit_state, edit_cfg, names):
    export, t5, mert = _snapshots(hub)
    bad = _copy_export(export, tmp_path / "export", edit_state, edit_cfg)
    with pytest.raises(ConversionError, match=names.replace(".", r"\.")):
        convert_export(bad, t5, tmp_path / "out", mert)
    assert not (tmp_path / "out" / "config.json").exists()


def test_conversion_needs_the_mert_repo(hub, tmp_path):
    export, t5, _ = _snapshots(hub)
    with pytest.raises(ConversionError, match="MERT"):
        convert_export(export, t5, tmp_path / "out")


@pytest.mark.parametrize(
    "field,value",
    [("feature_extractor_cqt", True), ("deepnorm", True), ("attention_relax", 32.0), ("model_type", "hubert")],
)
def test_mert_extensions_are_refused_by_name(field, value):
    with pytest.raises(ConversionError, match=field):
        hubert_config(mert_config() | {field: value})


def test_mert_weights_map_strictly(hub, tmp_path):
    export, t5, mert = _snapshots(hub)
    bad = tmp_path / "mert"
    bad.mkdir()
    (bad / "config.json").write_text((mert / "config.json").read_text())
    state = torch.load(mert / "pytorch_model.bin", weights_only=True)
    state["encoder.layers.0.attention.k_proj.bias"] = torch.zeros(3)
    torch.save(state, bad / "pytorch_model.bin")
    with pytest.raises(ConversionError, match=r"encoder\.layers\.0\.attention\.k_proj\.bias"):
        convert_export(export, t5, tmp_path / "out", bad)


def _codes(lm, requests):
    from server.engine.decode import DecodeBatch

    batch = DecodeBatch(lm)
    handles = [batch.add(r) for r in requests]
    while batch.active:
        batch.step()
    return [batch.pop(h) for h in handles]


def test_a_request_gives_the_same_tokens_alone_or_batched_with_double_guidance(hub):
    """Rows of 1 (unguided), 2 and 3 (cfg_coef_beta) in one batch: each request's tokens are its own."""
    import numpy as np

    from server.engine.decode import DecodeRequest
    from server.engine.text_to_audio import AudioRequest, LongForm
    from server.models.style import load_style

    lm = load_style(SPEC, store.snapshot_dir(SPEC, hub), torch.device("cpu"), "float32")
    wav = np.sin(np.arange(4 * 32000) / 30.0).astype(np.float32) * 0.3
    plan = LongForm(lm, AudioRequest(prompt="lofi", duration_s=0.4, seed=3, style=wav), stride_s=18.0)
    style = plan.style.states
    requests = [
        DecodeRequest("lofi", 20, seed=1, style=style, cfg_coef_beta=5.0),
        DecodeRequest("lofi", 25, seed=2, style=style),
        DecodeRequest("", 15, seed=3, cfg_coef=1.0, style=style),
        DecodeRequest("lofi", 20, seed=1, style=style, cfg_coef_beta=1.0, top_k=1),
    ]
    together = _codes(lm, requests)
    for request, codes in zip(requests, together, strict=True):
        assert torch.equal(codes, _codes(lm, [request])[0])
    assert not torch.equal(together[0], _codes(lm, [DecodeRequest("lofi", 20, seed=1, style=style)])[0])


def test_double_guidance_is_only_for_style_models(tmp_path):
    from server.engine.decode import DecodeBatch, DecodeRequest
    from server.engine.errors import UnsupportedRequest
    from server.models.musicgen import load_musicgen

    small = get_spec("musicgen-small")
    write_tiny_models(tmp_path, [small.name])
    lm = load_musicgen(small, store.snapshot_dir(small, tmp_path), torch.device("cpu"), "float32")
    with pytest.raises(UnsupportedRequest, match="cfg_coef_beta"):
        DecodeBatch(lm).add(DecodeRequest("x", 5, seed=0, cfg_coef_beta=2.0))
