"""Tiny random-weight checkpoints (server/tiny/) and the hub-cache store (server.hub.store)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from lib.catalogue import CATALOGUE, HTDEMUCS, UnknownModel, get_spec
from server.hub import snapshot, store
from server.tiny import dims, tokenizer, write
from server.tiny.musicgen import build_tiny_model

MUSICGEN_NAMES = [s.name for s in CATALOGUE.values() if s.kind in ("musicgen", "musicgen-melody")]
REV_CHARS = set("0123456789abcdef")


def _model_class(kind: str):
    from transformers import MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

    return MusicgenForConditionalGeneration if kind == "musicgen" else MusicgenMelodyForConditionalGeneration


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file and symlink under folder, as bytes (symlinks as their target path)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = os.readlink(path).encode()
        elif path.is_file():
            out[rel] = path.read_bytes()
    return out


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("name", ["musicgen-small", "musicgen-stereo-small", "musicgen-melody"])
def test_from_pretrained_loads_with_no_missing_or_unexpected_keys(tiny_hub: Path, name: str):
    spec = get_spec(name)
    model, info = _model_class(spec.kind).from_pretrained(
        spec.repo, cache_dir=tiny_hub, local_files_only=True, output_loading_info=True
    )
    assert info["missing_keys"] == set()
    assert info["unexpected_keys"] == set()
    assert info["mismatched_keys"] == set()
    assert info["error_msgs"] == []

    cfg = model.config
    assert cfg.decoder.num_codebooks == spec.codebooks
    assert cfg.decoder.audio_channels == spec.channels
    assert cfg.decoder.vocab_size == spec.codebook_size == 2048
    assert cfg.decoder.hidden_size == dims.TINY["decoder"]["hidden_size"]
    # EnCodec is mono even for stereo models; framing is the real one.
    assert cfg.audio_encoder.audio_channels == 1
    assert cfg.audio_encoder.sampling_rate == spec.sample_rate == 32000
    assert cfg.audio_encoder.frame_rate == spec.frame_rate_hz == 50
    assert cfg.audio_encoder.num_quantizers * (2 if spec.channels == 2 else 1) == spec.codebooks
    assert cfg.audio_encoder.codebook_size == 2048
    if spec.kind == "musicgen-melody":
        assert (cfg.num_chroma, cfg.chroma_length) == (12, 235)

    gen = model.generation_config
    assert (gen.do_sample, gen.guidance_scale, gen.max_length, gen.top_k) == (True, 3.0, 1500, 250)
    assert gen.pad_token_id == gen.bos_token_id == gen.decoder_start_token_id == 2048


@pytest.mark.parametrize("name", ["musicgen-stereo-small", "musicgen-stereo-melody"])
def test_generate_runs_on_loaded_model(tiny_hub: Path, name: str):
    from transformers import AutoTokenizer

    spec = get_spec(name)
    model = _model_class(spec.kind).from_pretrained(spec.repo, cache_dir=tiny_hub, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(spec.repo, cache_dir=tiny_hub, local_files_only=True)
    inputs = tok(["upbeat electronic music", "rain"], return_tensors="pt", padding=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        audio = model.generate(**inputs, max_new_tokens=8)
    # 8 steps with codebook k delayed by k steps -> 8 - (4 - 1) = 5 frames of 640 samples.
    assert audio.shape == (2, spec.channels, 5 * 640)


def test_every_musicgen_entry_is_installed_and_resolves(tiny_hub: Path):
    from huggingface_hub import snapshot_download

    for name in MUSICGEN_NAMES:
        spec = get_spec(name)
        assert store.is_installed(spec, tiny_hub), name
        snap = store.snapshot_dir(spec, tiny_hub)
        assert snap is not None
        resolved = snapshot_download(spec.repo, cache_dir=tiny_hub, local_files_only=True)
        assert Path(resolved) == snap


# --------------------------------------------------------------------------- layout


def test_hub_cache_layout(tiny_hub: Path):
    spec = get_spec("musicgen-small")
    folder = store.repo_folder(spec.repo, tiny_hub)
    assert folder == tiny_hub / "models--facebook--musicgen-small"
    rev = (folder / "refs" / "main").read_text()
    assert len(rev) == 40 and set(rev) <= REV_CHARS  # the bare hash, no newline
    snap = folder / "snapshots" / rev
    assert store.snapshot_dir(spec, tiny_hub) == snap
    # packed/: the packed-decoder cache, there once another test loaded the model (server/models/packcache.py)
    assert sorted(p.name for p in folder.iterdir() if p.name != "packed") == ["blobs", "refs", "snapshots", "trees"]

    names = sorted(p.name for p in snap.iterdir())
    assert names == [
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    blobs = folder / "blobs"
    for link in snap.iterdir():
        assert link.is_symlink()
        target = os.readlink(link)
        assert not os.path.isabs(target) and target.startswith("../../blobs/")
        blob = (link.parent / target).resolve()
        assert blob.parent == blobs.resolve()
        data = blob.read_bytes()
        if link.name == "model.safetensors":  # LFS: sha256 of the content
            assert blob.name == hashlib.sha256(data).hexdigest()
        else:  # git blob sha1, the etag the hub gives small files
            assert blob.name == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert {p.name for p in blobs.iterdir()} == {(snap / n).resolve().name for n in names}
    assert all(not p.is_symlink() and p.is_file() for p in blobs.iterdir())

    listing = json.loads((folder / "trees" / f"{rev}.json").read_text())
    assert listing["format_version"] == 1
    assert sorted(listing["files"]) == names
    weights = listing["files"]["model.safetensors"]
    assert weights["lfs_sha256"] == (snap / "model.safetensors").resolve().name
    assert weights["size"] == weights["lfs_size"] == (snap / "model.safetensors").stat().st_size

    # Weight norm under the released checkpoints' names.
    from safetensors import safe_open

    with safe_open(str(snap / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert any(k.endswith(".weight_g") for k in keys)
    assert not any(".parametrizations." in k for k in keys)


def test_preprocessor_config_matches_the_released_layout(tiny_hub: Path):
    def pre(name: str) -> dict:
        snap = store.snapshot_dir(get_spec(name), tiny_hub)
        return json.loads((snap / "preprocessor_config.json").read_text())

    mono, stereo, melody = pre("musicgen-small"), pre("musicgen-stereo-small"), pre("musicgen-melody")
    assert mono["processor_class"] == "MusicgenProcessor"
    assert mono["feature_extractor_type"] == "EncodecFeatureExtractor"
    assert (mono["feature_size"], mono["sampling_rate"], mono["padding_side"]) == (1, 32000, "left")
    assert stereo["feature_size"] == 2
    assert melody["processor_class"] == "MusicgenMelodyProcessor"
    assert melody["feature_extractor_type"] == "MusicgenMelodyFeatureExtractor"
    assert (melody["num_chroma"], melody["sampling_rate"], melody["n_fft"], melody["hop_length"]) == (
        12,
        32000,
        16384,
        4096,
    )


def test_processor_loads_for_musicgen(tiny_hub: Path):
    from transformers import AutoProcessor, MusicgenProcessor

    spec = get_spec("musicgen-stereo-small")
    processor = AutoProcessor.from_pretrained(spec.repo, cache_dir=tiny_hub, local_files_only=True)
    assert isinstance(processor, MusicgenProcessor)
    assert processor.feature_extractor.sampling_rate == 32000
    assert processor.feature_extractor.feature_size == 2
    batch = processor(text=["80s pop track with bassy drums and synth"], return_tensors="pt")
    assert batch["input_ids"].shape[0] == 1


# --------------------------------------------------------------------------- determinism


def test_writing_twice_gives_the_same_revision_and_bytes(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert write.write_tiny_models(a, names=["musicgen-small"]) == ["musicgen-small"]
    write.write_tiny_models(b, names=["musicgen-small"])
    spec = get_spec("musicgen-small")
    rev_a = store.current_revision(spec.repo, a)
    assert rev_a is not None and rev_a == store.current_revision(spec.repo, b)
    assert _tree_bytes(store.repo_folder(spec.repo, a)) == _tree_bytes(store.repo_folder(spec.repo, b))

    # Rewriting in place replaces the model with the same one.
    before = _tree_bytes(store.repo_folder(spec.repo, a))
    write.write_tiny_models(a, names=["musicgen-small"])
    assert _tree_bytes(store.repo_folder(spec.repo, a)) == before
    assert store.is_installed(spec, a)
    assert [p.name for p in a.iterdir()] == ["models--facebook--musicgen-small"]  # no staging left

    # Another seed gives other weights, hence another revision.
    c = tmp_path / "c"
    write.write_tiny_models(c, names=["musicgen-small"], seed=1)
    assert store.current_revision(spec.repo, c) != rev_a


def test_tokenizer_training_is_deterministic():
    # The Unigram trainer's raw output changes from run to run (hash-set order); the canonicalised
    # pieces must not, or the tokenizer.json bytes and the revision would change between processes.
    runs = {tokenizer.trained_pieces.__wrapped__() for _ in range(3)}
    assert len(runs) == 1


def test_model_seed_is_stable():
    assert dims.model_seed("musicgen-small", 0) == dims.model_seed("musicgen-small", 0)
    assert dims.model_seed("musicgen-small", 0) != dims.model_seed("musicgen-small", 1)
    assert dims.model_seed("musicgen-small", 0) != dims.model_seed("musicgen-medium", 0)
    # Independent of PYTHONHASHSEED: derived from sha256, a known value.
    digest = hashlib.sha256(b"musicgen-small/0").digest()
    assert dims.model_seed("musicgen-small", 0) == int.from_bytes(digest[:8], "big") >> 1


def test_building_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(get_spec("musicgen-small"))
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------- which names


UNSUPPORTED_NAMES = [s.name for s in CATALOGUE.values() if s.kind not in dims.SUPPORTED_KINDS]


def test_write_all_writes_exactly_the_supported_entries(tiny_hub: Path):
    assert len(MUSICGEN_NAMES) == 10
    assert set(MUSICGEN_NAMES) <= {s.name for s in CATALOGUE.values() if s.kind in dims.SUPPORTED_KINDS}
    expected = {
        store.repo_folder(repo, tiny_hub).name
        for s in CATALOGUE.values()
        if s.kind in dims.SUPPORTED_KINDS and s is not HTDEMUCS  # the fixture leaves it out (test/conftest.py)
        for repo in (s.repo, *s.extra_repos)  # AudioGen's T5 repo comes with it
    }
    # A fine-tune test in the same session may leave its result (models--finetuned--*) in the shared
    # hub: not a tiny checkpoint, and not this test's business.
    written = {p.name for p in tiny_hub.iterdir() if not p.name.startswith("models--finetuned--")}
    assert written == expected
    for name in UNSUPPORTED_NAMES:
        assert not store.is_installed(get_spec(name), tiny_hub)


def test_write_all_includes_htdemucs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """make-tiny with no names writes every supported entry, htdemucs too (the fixture leaves it out)."""
    written = []
    monkeypatch.setattr(write, "write_tiny_model", lambda spec, hub, seed=0: written.append(spec.name))
    write.write_tiny_models(tmp_path)
    assert HTDEMUCS.name in written
    assert written == [s.name for s in CATALOGUE.values() if s.kind in dims.SUPPORTED_KINDS]


@pytest.mark.skipif(not UNSUPPORTED_NAMES, reason="every kind has tiny checkpoints")
def test_unsupported_or_unknown_names_raise_before_writing(tmp_path: Path):
    unsupported = UNSUPPORTED_NAMES[0]
    with pytest.raises(ValueError, match=unsupported):
        write.write_tiny_models(tmp_path, names=["musicgen-small", unsupported])
    with pytest.raises(UnknownModel):
        write.write_tiny_models(tmp_path, names=["musicgen-small", "no-such-model"])
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- store


def test_store_for_a_missing_model(tmp_path: Path):
    spec = get_spec("musicgen-small")
    assert store.snapshot_dir(spec, tmp_path) is None
    assert store.is_installed(spec, tmp_path) is False
    assert store.size_on_disk_bytes(spec, tmp_path) == 0
    assert store.current_revision(spec.repo, tmp_path) is None
    err = store.ModelNotInstalled(spec, tmp_path)  # as the loaders raise it
    assert isinstance(err, LookupError)
    assert err.spec is spec
    assert err.hint == "resource-audiocraft models pull musicgen-small"
    assert err.hint in str(err)


def test_store_for_an_installed_model(tiny_hub: Path):
    spec = get_spec("musicgen-melody")
    folder = store.repo_folder(spec.repo, tiny_hub)
    # The blobs, and the packed-decoder cache when another test loaded the model at int8.
    expected = sum(p.stat().st_size for p in (folder / "blobs").iterdir())
    expected += sum(p.stat().st_size for p in (folder / "packed").rglob("*") if p.is_file())
    size = store.size_on_disk_bytes(spec, tiny_hub)
    assert size == expected
    assert 100_000 < size < 20_000_000  # tiny: a few MB
    rev = store.current_revision(spec.repo, tiny_hub)
    assert store.snapshot_dir(spec, tiny_hub) == folder / "snapshots" / rev


def test_incomplete_snapshots_do_not_count(tmp_path: Path):
    spec = get_spec("musicgen-small")
    snap = write.write_tiny_model(spec, tmp_path)
    folder = store.repo_folder(spec.repo, tmp_path)
    assert store.snapshot_dir(spec, tmp_path) == snap

    # The weights blob is gone: the snapshot's symlink dangles.
    weights_blob = (snap / "model.safetensors").resolve()
    moved = tmp_path / "weights.bak"
    shutil.move(weights_blob, moved)
    assert not store.is_installed(spec, tmp_path)
    shutil.move(moved, weights_blob)
    assert store.is_installed(spec, tmp_path)

    # No config.json.
    (snap / "config.json").rename(tmp_path / "config.bak")
    assert not store.is_installed(spec, tmp_path)
    (tmp_path / "config.bak").rename(snap / "config.json")

    # A sharded checkpoint counts only with every shard present.
    (snap / "model.safetensors").rename(tmp_path / "weights.link")
    index = {
        "metadata": {},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
    (snap / "model.safetensors.index.json").write_text(json.dumps(index))
    (snap / "model-00001-of-00002.safetensors").write_bytes(b"x")
    assert not store.is_installed(spec, tmp_path)
    (snap / "model-00002-of-00002.safetensors").write_bytes(b"x")
    assert store.is_installed(spec, tmp_path)

    # refs/main naming a snapshot that does not exist, or holding garbage.
    (folder / "refs" / "main").write_text("0" * 40)
    assert store.snapshot_dir(spec, tmp_path) is None
    (folder / "refs" / "main").write_text("not a commit")
    assert store.snapshot_dir(spec, tmp_path) is None
    (folder / "refs" / "main").unlink()
    assert store.snapshot_dir(spec, tmp_path) is None
    assert store.size_on_disk_bytes(spec, tmp_path) > 0  # the blobs are still there


def _fake_repo(hub: Path, repo: str, files: dict[str, bytes]) -> None:
    """A hub-cache repo folder with the given files (plain copies, not via tiny)."""
    folder = store.repo_folder(repo, hub)
    rev = "a" * 40
    snap = folder / "snapshots" / rev
    snap.mkdir(parents=True)
    (folder / "blobs").mkdir()
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data + name.encode()).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snap), snap / name)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(rev)


def test_audiocraft_format_and_extra_repos(tmp_path: Path):
    spec = get_spec("audiogen-medium")
    assert spec.hub_format == "audiocraft" and spec.extra_repos == ("google-t5/t5-large",)
    _fake_repo(tmp_path, spec.repo, {"state_dict.bin": b"lm"})
    assert store.snapshot_dir(spec, tmp_path) is None
    shutil.rmtree(store.repo_folder(spec.repo, tmp_path))
    _fake_repo(tmp_path, spec.repo, {"state_dict.bin": b"lm", "compression_state_dict.bin": b"codec"})
    assert store.snapshot_dir(spec, tmp_path) is not None
    assert store.size_on_disk_bytes(spec, tmp_path) == len(b"lm") + len(b"codec")
    # Not installed until its T5 is there too.
    assert not store.is_installed(spec, tmp_path)
    _fake_repo(tmp_path, "google-t5/t5-large", {"config.json": b"{}", "model.safetensors": b"w"})
    assert store.is_installed(spec, tmp_path)


# --------------------------------------------------------------------------- interrupted writes


class _Crash(BaseException):
    """Stands in for a kill in the middle of a write."""


def test_an_interrupted_write_leaves_nothing_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    spec = get_spec("musicgen-small")

    def crash(*args, **kwargs):
        raise _Crash

    # Everything is built, then the process dies before the rename into place, and (as after a
    # real kill) no cleanup runs.
    monkeypatch.setattr(write, "_swap_in", crash)
    monkeypatch.setattr(write.shutil, "rmtree", lambda *a, **k: None)
    with pytest.raises(_Crash):
        write.write_tiny_models(tmp_path, names=[spec.name])
    monkeypatch.undo()

    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".tiny-staging-")
    assert not store.is_installed(spec, tmp_path)
    assert store.snapshot_dir(spec, tmp_path) is None
    assert not store.repo_folder(spec.repo, tmp_path).exists()

    # A later write succeeds; staging folders left by a crash are swept once they are old.
    old = time.time() - 2 * 3600
    os.utime(tmp_path / leftovers[0], (old, old))
    write.write_tiny_models(tmp_path, names=[spec.name])
    assert store.is_installed(spec, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["models--facebook--musicgen-small"]


def test_a_failed_write_cleans_up_and_keeps_the_previous_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    spec = get_spec("musicgen-small")
    write.write_tiny_models(tmp_path, names=[spec.name])
    before = _tree_bytes(store.repo_folder(spec.repo, tmp_path))

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(snapshot, "install", fail)
    with pytest.raises(OSError, match="disk full"):
        write.write_tiny_models(tmp_path, names=[spec.name], seed=7)
    assert [p.name for p in tmp_path.iterdir()] == ["models--facebook--musicgen-small"]
    assert _tree_bytes(store.repo_folder(spec.repo, tmp_path)) == before
    assert store.is_installed(spec, tmp_path)


def test_real_weights_are_never_replaced(tmp_path: Path):
    spec = get_spec("musicgen-small")
    _fake_repo(tmp_path, spec.repo, {"config.json": b"{}", "model.safetensors": b"real weights"})
    before = _tree_bytes(store.repo_folder(spec.repo, tmp_path))
    with pytest.raises(FileExistsError):
        write.write_tiny_models(tmp_path)
    assert _tree_bytes(store.repo_folder(spec.repo, tmp_path)) == before
    assert [p.name for p in tmp_path.iterdir()] == ["models--facebook--musicgen-small"]


# --------------------------------------------------------------------------- tokenizer


PROMPTS = [
    "upbeat electronic music",
    "80s pop track with bassy drums and synth",
    "Lofi hip hop beat, chill, 70 BPM!",
    "dog barking (far away) & rain; thunder at 3:45?",
    "Zebra quartz {jumps} over ~the~ lazy fox #42",
]


def test_tokenizer_round_trip(tiny_hub: Path):
    from transformers import AutoTokenizer, T5Tokenizer

    spec = get_spec("musicgen-small")
    tok = AutoTokenizer.from_pretrained(spec.repo, cache_dir=tiny_hub, local_files_only=True)
    assert isinstance(tok, T5Tokenizer)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert (tok.pad_token, tok.eos_token, tok.unk_token) == ("<pad>", "</s>", "<unk>")

    # Every known prompt word is one piece; nothing is unknown.
    ids = tok("upbeat electronic music")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["▁upbeat", "▁electronic", "▁music", "</s>"]

    built = tokenizer.build_tokenizer()
    for text in PROMPTS:
        ids = tok(text)["input_ids"]
        assert ids[-1] == tok.eos_token_id
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids, skip_special_tokens=True) == text
        assert built(text)["input_ids"] == ids  # the saved tokenizer is the one built in code

    # The text encoder's vocabulary is exactly the tokenizer's.
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(spec.repo, cache_dir=tiny_hub, local_files_only=True)
    assert config.text_encoder.vocab_size == len(tok)
    batch = tok(PROMPTS[:2], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape[0] == 2 and int(batch["input_ids"].max()) < len(tok)
