"""MAGNeT on the tiny export `make-tiny` writes: strict conversion, the converted copy beside the
original, the lengths it makes, batching (a request's tokens are its own whether it runs alone,
batched, or joins late), and what a MAGNeT request resolves to. Its tokens against audiocraft's are
test/conformance/test_magnet_conformance.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from lib.catalogue import CATALOGUE, get_spec
from lib.errors import Invalid
from lib.schemas import MAGNET_DEFAULTS, MusicRequest, SoundRequest
from server.engine.decode import DecodeBatch
from server.engine.errors import UnsupportedRequest
from server.engine.magnet import MagnetBatch, MagnetParams, MagnetRequest, frames_for, frames_made
from server.hub import store
from server.models.convert import cache
from server.models.convert.audiocraft_export import COMPRESSION_FILE, LM_FILE, MAGNET_FILE, convert_export
from server.models.convert.xpcfg import ConversionError
from server.models.magnet import MagnetLM, load_magnet
from server.serving.magnet import resolve
from server.tiny.write import write_tiny_models

SPEC = get_spec("magnet-small-10secs")
QUICK = MagnetParams(decoding_steps=(3, 2, 2, 1))


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    hub = tmp_path_factory.mktemp("magnet-hub")
    write_tiny_models(hub, ["magnet-small-10secs", "audio-magnet-small"])
    return hub


@pytest.fixture(scope="module")
def lm(hub) -> MagnetLM:
    return load_magnet(SPEC, store.snapshot_dir(SPEC, hub), torch.device("cpu"), "float32")


def test_catalogue_has_the_six_models():
    names = [n for n, s in CATALOGUE.items() if s.kind == "magnet"]
    assert names == [
        "magnet-small-10secs", "magnet-medium-10secs", "magnet-small-30secs", "magnet-medium-30secs",
        "audio-magnet-small", "audio-magnet-medium",
    ]  # fmt: skip
    for name in names:
        spec = CATALOGUE[name]
        assert spec.hub_format == "audiocraft" and spec.licence == "CC-BY-NC-4.0"
        assert spec.window_s == (30.0 if "30secs" in name else 10.0)
    assert CATALOGUE["audio-magnet-small"].capabilities == ("sound",)
    assert CATALOGUE["audio-magnet-small"].sample_rate == 16000
    assert CATALOGUE["magnet-medium-30secs"].capabilities == ("music",)


def test_loads_converted_beside_the_original(hub, lm):
    snapshot = store.snapshot_dir(SPEC, hub)
    converted = list((snapshot.parent.parent / "converted").iterdir())
    assert len(converted) == 1 and (converted[0] / MAGNET_FILE).is_file()
    assert (lm.masking.span_len, lm.masking.subcodes_context, lm.segment_frames) == (3, 5, 500)
    assert lm.sample_rate == 32000


def _edited(hub, tmp_path, edit) -> Path:
    export = tmp_path / "export"
    export.mkdir()
    snapshot = store.snapshot_dir(SPEC, hub)
    for name in (LM_FILE, COMPRESSION_FILE):
        shutil.copyfile(snapshot / name, export / name)
    pkg = torch.load(export / LM_FILE, weights_only=True)
    cfg = yaml.safe_load(pkg["xp.cfg"])
    edit(pkg["best_state"], cfg)
    pkg["xp.cfg"] = yaml.safe_dump(cfg)
    torch.save(pkg, export / LM_FILE)
    return export


def _t5(hub) -> Path:
    return store.transformers_snapshot("google-t5/t5-base", hub)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda s, c: s.pop("transformer.layers.1.linear2.weight"), "transformer.layers.1.linear2.weight"),
        (lambda s, c: s.__setitem__("transformer.extra.weight", torch.zeros(1)), "transformer.extra.weight"),
        (lambda s, c: c["transformer_lm"].__setitem__("causal", True), "causal"),
        (lambda s, c: c.pop("masking"), "masking.span_len"),
        (lambda s, c: c["transformer_lm"].__setitem__("subcodes_context", -3), "subcodes_context"),
        (lambda s, c: c.__setitem__("lm_model", "transformer_lm_other"), "lm_model"),
    ],
)
def test_conversion_is_strict(hub, tmp_path, edit, message):
    export = _edited(hub, tmp_path, edit)
    with pytest.raises(ConversionError, match=message):
        convert_export(export, _t5(hub), tmp_path / "out")


def test_lengths_are_whole_spans_within_the_segment(lm):
    assert frames_made(50, 3, "nonoverlap") == 48 and frames_made(50, 3, "stride1") == 50
    assert frames_for(lm, 1.0, "nonoverlap") == 51  # covers 50 frames
    assert frames_for(lm, 10.0, "nonoverlap") == 500  # the segment: it makes 498
    assert frames_for(lm, 10.0, "stride1") == 500


def _run(lm, requests: list[MagnetRequest], late: int | None = None) -> list[torch.Tensor]:
    batch = MagnetBatch(lm)
    handles = []
    for i, request in enumerate(requests):
        if i == late:
            batch.step()
            batch.step()
        handles.append(batch.add(request))
    done = {}
    while len(batch):
        for handle in batch.step():
            done[handle] = batch.pop(handle)
    return [done[h] for h in handles]


@pytest.fixture(scope="module", params=["float32", "int8-dynamic"])
def any_lm(request, hub, lm) -> MagnetLM:
    """The model at float32, and at the CPU default precision (whose kernel depends on the call)."""
    if request.param == "float32":
        return lm
    return load_magnet(SPEC, store.snapshot_dir(SPEC, hub), torch.device("cpu"), request.param)


def test_a_request_keeps_its_tokens_alone_batched_or_joining_late(any_lm):
    lm = any_lm
    requests = [
        MagnetRequest("calm piano", 30, seed=1, params=QUICK),
        MagnetRequest("drums", 24, seed=2, params=MagnetParams(decoding_steps=(2, 1, 1, 1), top_p=0.0, top_k=20)),
        MagnetRequest("calm piano", 30, seed=1, params=MagnetParams(decoding_steps=(3, 2, 2, 1), use_sampling=False)),
    ]
    alone = [_run(lm, [r])[0] for r in requests]
    assert [tuple(a.shape) for a in alone] == [(4, 30), (4, 24), (4, 30)]
    assert not (alone[0] == 2048).any()  # every codebook decoded: no mask token left
    assert not torch.equal(alone[0], alone[2])
    for together in (_run(lm, requests), _run(lm, requests, late=2)):
        for a, b in zip(alone, together, strict=True):
            assert torch.equal(a, b)
    again = _run(lm, [MagnetRequest("calm piano", 30, seed=1, params=QUICK)])[0]
    other_seed = _run(lm, [MagnetRequest("calm piano", 30, seed=9, params=QUICK)])[0]
    assert torch.equal(again, alone[0]) and not torch.equal(other_seed, alone[0])


def test_progress_and_refusals(lm):
    batch = MagnetBatch(lm)
    handle = batch.add(MagnetRequest("x", 9, seed=0, params=QUICK))
    assert batch.progress(handle) == (0, 8)
    batch.step()
    assert batch.progress(handle) == (1, 8)
    assert batch.remove(handle) and len(batch) == 0
    with pytest.raises(UnsupportedRequest, match="decoding_steps"):
        batch.add(MagnetRequest("x", 9, seed=0, params=MagnetParams(decoding_steps=(2, 2))))
    with pytest.raises(UnsupportedRequest, match="span"):
        batch.add(MagnetRequest("x", 2, seed=0, params=QUICK))
    with pytest.raises(UnsupportedRequest, match="MAGNeT"):
        DecodeBatch(lm)


def test_a_magnet_request_gets_audiocrafts_defaults_and_its_own_overrides():
    resolved = resolve(SPEC, MusicRequest(prompt="x", duration=2, top_k=5))
    assert (resolved.temperature, resolved.top_p, resolved.top_k) == (3.0, 0.9, 5)
    assert resolved.decoding_steps == MAGNET_DEFAULTS["decoding_steps"]
    assert (resolved.max_cfg_coef, resolved.min_cfg_coef, resolved.span_arrangement) == (10.0, 1.0, "nonoverlap")
    mine = resolve(SPEC, MusicRequest(prompt="x", decoding_steps=[4, 3, 2, 1], min_cfg_coef=2, temperature=0))
    assert (mine.decoding_steps, mine.min_cfg_coef, mine.temperature) == ([4, 3, 2, 1], 2.0, 0.0)


@pytest.mark.parametrize(
    "spec,request_,field",
    [
        ("magnet-small-10secs", MusicRequest(prompt="x", cfg_coef=3.0), "cfg_coef"),
        ("magnet-small-10secs", MusicRequest(prompt="x", duration=10.5), "duration"),
        ("magnet-small-10secs", MusicRequest(prompt="x", decoding_steps=[5, 5]), "decoding_steps"),
        ("musicgen-small", MusicRequest(prompt="x", decoding_steps=[5, 5, 5, 5]), "decoding_steps"),
        ("audiogen-medium", SoundRequest(prompt="x", span_arrangement="stride1"), "span_arrangement"),
    ],
)
def test_what_magnet_refuses(spec, request_, field):
    with pytest.raises(Invalid) as caught:
        resolve(get_spec(spec), request_)
    assert caught.value.field == field and caught.value.hint


def test_the_converted_copy_is_reused(hub):
    snapshot = store.snapshot_dir(SPEC, hub)
    first = cache.ensure_converted(snapshot, _t5(hub))
    assert cache.ensure_converted(snapshot, _t5(hub)) == first
