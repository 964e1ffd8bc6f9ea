"""Tiny random-weight checkpoints, written in the real Hugging Face hub cache layout.

Tests and offline users run the real loading code (`from_pretrained(repo, cache_dir=...,
local_files_only=True)`) on them: same model classes, same structure and framing as the released
checkpoints (32 kHz EnCodec at 50 Hz with 4 codebooks of 2048, T5 text encoder, delay-pattern
decoder), only with tiny widths and random weights. Everything is built in code; nothing is
downloaded. Output is deterministic: the same name and seed give the same bytes and revision.

MusicGen (kind "musicgen") and MusicGen-Melody (kind "musicgen-melody") entries, mono and
stereo, and the EnCodec entries (kind "encodec"; see server/tiny/encodec.py) are
written. AudioGen (kind "audiogen") is written in audiocraft's export format, as it is on the hub
(server/models/convert/tiny_export.py), with a tiny T5 as its text-encoder repo. Stereo MusicGen
models keep a mono EnCodec: transformers encodes and decodes stereo as two mono passes over the even
(left) and odd (right) codebooks.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import shutil
import string
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from huggingface_hub.file_download import repo_folder_name

from lib.catalogue import CATALOGUE, ModelSpec, get_spec
from server.hub.store import repo_folder

SUPPORTED_KINDS = ("musicgen", "musicgen-melody", "audiogen", "encodec")

# The dims of every tiny checkpoint. Structure and framing are the real ones; widths are tiny.
# num_codebooks (4, or 8 for stereo) and the decoder's audio_channels come from the catalogue.
TINY: dict[str, dict[str, Any]] = {
    "text_encoder": {  # T5; vocab_size = the tiny tokenizer's size
        "d_model": 32,
        "d_ff": 64,
        "num_layers": 2,
        "num_heads": 4,
        "d_kv": 8,
    },
    "audio_encoder": {  # EnCodec 32 kHz: hop 8*5*4*4 = 640 -> 50 Hz; 2.2 kbps -> 4 quantizers
        "sampling_rate": 32000,
        "audio_channels": 1,  # also for stereo models (two mono passes)
        "upsampling_ratios": [8, 5, 4, 4],
        "target_bandwidths": [2.2],
        "codebook_size": 2048,
        "codebook_dim": 16,
        "hidden_size": 16,
        "num_filters": 4,
        "num_lstm_layers": 1,
        "num_residual_layers": 1,
        "norm_type": "weight_norm",
        "use_causal_conv": False,
        "use_conv_shortcut": False,
        "normalize": False,
        "pad_mode": "reflect",
    },
    "decoder": {
        "vocab_size": 2048,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "ffn_dim": 64,
        "max_position_embeddings": 2048,
        "pad_token_id": 2048,
        "bos_token_id": 2048,
    },
    "melody": {"num_chroma": 12, "chroma_length": 235},
    "generation": {  # as in the released repos' generation_config.json
        "do_sample": True,
        "guidance_scale": 3.0,
        "max_length": 1500,
        "top_k": 250,
        "pad_token_id": 2048,
        "bos_token_id": 2048,
        "decoder_start_token_id": 2048,
    },
    "tokenizer": {"max_pieces": 1000, "extra_ids": 100, "model_max_length": 512},
}

# Files the hub stores through git LFS: their blob name (etag) is the sha256 of the content.
# Every other file's etag is its git blob sha1.
_LFS_SUFFIXES = (".safetensors", ".bin")
_README_MARKER = "tiny random-weight stand-in written by resource-audiocraft"
_STAGING_PREFIX = ".tiny-staging-"
_STALE_STAGING_S = 3600.0


# ---------------------------------------------------------------------------------------------
# Tokenizer


_CORPUS_WORDS = """
a an the and or with without of in on at to for from by into over under through as is are
this that some very more less slow fast soft loud low high deep bright warm cold light heavy
music song track tune beat beats loop loops sound sounds noise audio sample melody melodies
harmony harmonies rhythm rhythms groove grooves tempo bpm key major minor chord chords note
notes scale bass bassline line lead pad pads arpeggio riff riffs solo intro outro verse chorus
bridge drop build buildup breakdown fill hook vocal vocals voice voices choir singer singing
sung hum humming whistle whistling lyrics instrumental acoustic electric electronic digital
analog synth synths synthesizer keyboard piano organ guitar guitars violin viola cello strings
harp flute clarinet oboe bassoon saxophone sax trumpet trombone horn horns tuba brass woodwind
drum drums kick snare hihat hat hats cymbal cymbals clap claps percussion tambourine shaker
bongo bongos conga tabla marimba xylophone vibraphone bells glockenspiel ukulele banjo mandolin
sitar accordion harmonica orchestra orchestral ensemble band quartet trio duet
pop rock jazz blues funk soul disco house techno trance dubstep drum and bass dnb hip hop rap
trap lofi lo-fi ambient chillout chill classical baroque romantic cinematic epic soundtrack
score folk country reggae ska punk metal grunge indie alternative latin salsa bossa nova samba
tango flamenco afrobeat kpop jpop edm dance club rave garage grime drill gospel opera
upbeat happy sad dark moody calm relaxing peaceful dreamy energetic intense aggressive gentle
mellow smooth groovy funky catchy uplifting emotional melancholic nostalgic mysterious eerie
tense playful cheerful joyful romantic hopeful powerful driving bouncy punchy crisp lush
atmospheric spacious minimal minimalist experimental retro vintage modern futuristic 80s 90s
70s 60s 2000s style inspired feel vibe mood background cinematic trailer video game
dog dogs barking bark cat meowing bird birds chirping singing rain raining thunder storm wind
blowing waves ocean sea water river stream dripping splash fire crackling footsteps walking
running door knocking knock creaking car engine motor truck train horn siren traffic street
city crowd people talking laughing cheering applause clapping baby crying man woman child
speaking speech whisper scream typing keyboard clock ticking alarm phone ringing bell bells
church helicopter airplane plane jet explosion gunshot glass breaking wood metal hammer
machine machinery factory construction insects crickets frogs cow horse sheep rooster
forest jungle farm kitchen cooking frying sizzling boiling night morning
one two three four five six seven eight nine ten hundred twenty thirty forty fifty sixty
seconds minutes long short loop seamless fade in out up down left right stereo mono
"""


def _corpus() -> list[str]:
    words = _CORPUS_WORDS.split()
    lines: list[str] = []
    # The Unigram trainer seeds its pieces with substrings found in at least two distinct
    # pre-tokens (counts do not matter there), so each word also comes with punctuation attached:
    # "▁music" is then a substring of "▁music," and "▁music." and becomes a whole-word piece.
    for word in words:
        for form in (word, word.capitalize()):
            lines += [form, form + ",", form + "."]
    lines += [
        "upbeat electronic music with a groovy bassline and punchy drums",
        "a calm piano melody at 90 bpm, relaxing and peaceful",
        "80s pop track with bassy drums and synth",
        "90s rock song with loud guitars and heavy drums",
        "lofi hip hop beat, chill, vinyl crackle, 70 BPM",
        "epic orchestral soundtrack with choir and brass, cinematic trailer",
        "dog barking in the distance while rain is falling",
        "a car engine starting, then driving away on a wet street",
        "Ambient pads; slow arpeggios (C minor) - dreamy & spacious!",
    ]
    # Every ascii letter, digit and punctuation mark, alone and inside words.
    chars = string.ascii_letters + string.digits + string.punctuation
    lines += list(chars)
    lines += [" ".join(chars[i : i + 8]) for i in range(0, len(chars), 8)]
    return lines


@functools.lru_cache(maxsize=1)
def _trained_pieces() -> tuple[tuple[str, float], ...]:
    """A T5-style Unigram vocabulary trained on the built-in corpus: <pad>=0, </s>=1, <unk>=2."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    # The same pre-tokenizer transformers' T5Tokenizer builds (and rebuilds on load).
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=TINY["tokenizer"]["max_pieces"],
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    vocab = [(piece, round(float(score), 6)) for piece, score in json.loads(tok.to_str())["model"]["vocab"]]
    specials, pieces = vocab[:3], vocab[3:]
    if [p for p, _ in specials] != ["<pad>", "</s>", "<unk>"]:
        raise RuntimeError(f"unexpected special tokens from the Unigram trainer: {specials}")
    # Make the result the same in every process. The trainer's scores differ only in float noise
    # (rounded away above), but the single characters it re-adds after pruning get their scores
    # (min_score - k * 1e-4) in hash-set order, which changes from process to process. Single
    # characters are the fallback pieces anyway: give them all one score, below every longer piece.
    floor = round(min(score for _, score in pieces) - 1.0, 6)
    pieces = [(p, floor if len(p) == 1 else score) for p, score in pieces]
    return tuple(specials + sorted(pieces, key=lambda item: (-item[1], item[0])))


def build_tokenizer():
    """The tiny T5 tokenizer (transformers' T5Tokenizer, tokenizers-backed), as t5-base lays it out:
    special tokens first, then the pieces, then the <extra_id_N> sentinels in reverse order."""
    from transformers import T5Tokenizer

    extra_ids = TINY["tokenizer"]["extra_ids"]
    vocab = list(_trained_pieces()) + [(f"<extra_id_{i}>", 0.0) for i in reversed(range(extra_ids))]
    return T5Tokenizer(vocab=vocab, extra_ids=extra_ids, model_max_length=TINY["tokenizer"]["model_max_length"])


# ---------------------------------------------------------------------------------------------
# Models


def model_seed(name: str, seed: int = 0) -> int:
    """The torch seed of one tiny model: a stable hash of its name and the run's seed."""
    digest = hashlib.sha256(f"{name}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _check_supported(spec: ModelSpec) -> None:
    if spec.kind not in SUPPORTED_KINDS:
        raise ValueError(
            f"no tiny checkpoint for {spec.name} yet (kind {spec.kind!r}); "
            f"supported kinds: {', '.join(SUPPORTED_KINDS)}"
        )


def tiny_config(spec: ModelSpec, text_vocab_size: int):
    """MusicgenConfig / MusicgenMelodyConfig with the real structure and the TINY dims."""
    from transformers import EncodecConfig, T5Config

    _check_supported(spec)
    text = T5Config(vocab_size=text_vocab_size, **TINY["text_encoder"])
    audio = EncodecConfig(**copy.deepcopy(TINY["audio_encoder"]))
    decoder_kw = dict(TINY["decoder"], num_codebooks=spec.codebooks, audio_channels=spec.channels)
    if spec.kind == "musicgen":
        from transformers import MusicgenConfig, MusicgenDecoderConfig

        return MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=MusicgenDecoderConfig(**decoder_kw))
    from transformers import MusicgenMelodyConfig, MusicgenMelodyDecoderConfig

    return MusicgenMelodyConfig(
        text_encoder=text,
        audio_encoder=audio,
        decoder=MusicgenMelodyDecoderConfig(**decoder_kw),
        **TINY["melody"],
    )


def build_tiny_model(spec: ModelSpec, seed: int = 0, text_vocab_size: int | None = None):
    """The tiny random-weight model for a catalogue entry, in fp32 and eval mode.

    The global torch RNG is left as it was.
    """
    import torch
    from transformers import GenerationConfig

    if text_vocab_size is None:
        text_vocab_size = len(build_tokenizer())
    config = tiny_config(spec, text_vocab_size)
    if spec.kind == "musicgen":
        from transformers import MusicgenForConditionalGeneration as cls
    else:
        from transformers import MusicgenMelodyForConditionalGeneration as cls
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_seed(spec.name, seed))
        model = cls(config)
    model.generation_config = GenerationConfig(**TINY["generation"])
    return model.eval()


def _preprocessor_config(spec: ModelSpec) -> dict[str, Any]:
    """preprocessor_config.json as the released repos have it (the legacy single-file layout).

    The melody feature extractor needs torchaudio even to be constructed, and torchaudio does not
    load with this project's torch, so its dict is written out by hand with the class defaults.
    """
    if spec.kind == "musicgen":
        from transformers import EncodecFeatureExtractor

        # As transformers' conversion script: padding on the left, one feature per audio channel.
        fe = EncodecFeatureExtractor(feature_size=spec.channels, sampling_rate=32000, padding_side="left")
        return {**fe.to_dict(), "processor_class": "MusicgenProcessor"}
    return {
        "chunk_length": 30,
        "feature_extractor_type": "MusicgenMelodyFeatureExtractor",
        "feature_size": TINY["melody"]["num_chroma"],
        "hop_length": 4096,
        "n_fft": 16384,
        "num_chroma": TINY["melody"]["num_chroma"],
        "padding_side": "right",
        "padding_value": 0.0,
        "processor_class": "MusicgenMelodyProcessor",
        "return_attention_mask": False,
        "sampling_rate": 32000,
        "stem_indices": [3, 2],
    }


def _readme(spec: ModelSpec) -> str:
    return (
        f"# {spec.repo} ({_README_MARKER})\n\n"
        "Random weights with the real structure and tiny widths, for tests and offline use.\n"
        "It makes noise, not music. Replace it with the real weights: "
        f"`resource-audiocraft models pull {spec.name}`.\n"
    )


def _legacy_weight_norm_names(weights: Path) -> None:
    """Rename weight-norm tensors to the names the released checkpoints use.

    Current torch saves weight norm as `<conv>.parametrizations.weight.original0/1`; the released
    repos were converted with the older `weight_norm`, whose tensors are `<conv>.weight_g/weight_v`.
    transformers renames those on load, so keeping the released names tests that path too.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    renames = {
        ".parametrizations.weight.original0": ".weight_g",
        ".parametrizations.weight.original1": ".weight_v",
    }
    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata()
        tensors = {}
        for key in f.keys():
            new_key = key
            for old, new in renames.items():
                if key.endswith(old):
                    new_key = key[: -len(old)] + new
            tensors[new_key] = f.get_tensor(key)
    save_file(tensors, str(weights), metadata=metadata)


def _save_t5_repo(out: Path, seed: int) -> None:
    """A tiny T5 text-encoder repo, as google-t5/t5-large holds it (the full encoder-decoder model and
    its tokenizer); AudioGen uses its encoder."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), **TINY["text_encoder"]))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _save_files(spec: ModelSpec, out: Path, seed: int) -> None:
    if spec.kind == "audiogen":
        from server.tiny.audiocraft_export import save_export

        save_export(out, model_seed(spec.name, seed), text_width=TINY["text_encoder"]["d_model"])
        (out / "README.md").write_text(_readme(spec))
        return
    if spec.kind == "encodec":  # EnCodec alone: its shapes live with the codec
        from server.tiny.encodec import save_tiny

        save_tiny(spec, out, seed, _readme(spec))
        return
    tokenizer = build_tokenizer()
    model = build_tiny_model(spec, seed=seed, text_vocab_size=len(tokenizer))
    model.save_pretrained(out)
    _legacy_weight_norm_names(out / "model.safetensors")
    tokenizer.save_pretrained(out)
    pre = json.dumps(_preprocessor_config(spec), indent=2, sort_keys=True) + "\n"
    (out / "preprocessor_config.json").write_text(pre)
    (out / "README.md").write_text(_readme(spec))


# ---------------------------------------------------------------------------------------------
# Hub cache layout


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _new_file_mode(folder: Path) -> int:
    """The mode a new file gets under the process umask (read without changing the umask)."""
    probe = folder / ".mode-probe"
    probe.touch()
    try:
        return probe.stat().st_mode & 0o777
    finally:
        probe.unlink()


def _layout(files: Path, repo_dir: Path) -> str:
    """Move the files under `files` into `repo_dir` in the hub cache layout; returns the revision."""
    entries: dict[str, dict[str, Any]] = {}
    etags: dict[str, str] = {}
    for path in sorted(p for p in files.rglob("*") if p.is_file()):
        rel = path.relative_to(files).as_posix()
        data = path.read_bytes()
        if rel.endswith(_LFS_SUFFIXES):
            sha256 = hashlib.sha256(data).hexdigest()
            etags[rel] = sha256
            entries[rel] = {
                "size": len(data),
                "blob_id": _git_blob_sha1(_lfs_pointer(sha256, len(data))),
                "lfs_sha256": sha256,
                "lfs_size": len(data),
            }
        else:
            etags[rel] = _git_blob_sha1(data)
            entries[rel] = {"size": len(data), "blob_id": etags[rel]}
    # A deterministic 40-hex "commit": sha1 over the file names and their etags.
    rev = hashlib.sha1("".join(f"{rel}\0{etags[rel]}\n" for rel in sorted(etags)).encode()).hexdigest()

    blobs = repo_dir / "blobs"
    snapshot = repo_dir / "snapshots" / rev
    blobs.mkdir(parents=True)
    mode = _new_file_mode(blobs)
    for rel, etag in etags.items():
        blob = blobs / etag
        if blob.exists():  # two files with the same content share one blob
            (files / rel).unlink()
        else:
            os.rename(files / rel, blob)
            os.chmod(blob, mode)  # some writers (safetensors) create 0600 files; the hub uses the umask
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    # The tree listing snapshot_download keeps per commit, so it can tell a complete snapshot.
    trees = repo_dir / "trees"
    trees.mkdir()
    listing = {"format_version": 1, "files": {rel: entries[rel] for rel in sorted(entries)}}
    (trees / f"{rev}.json").write_text(json.dumps(listing, indent=1))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(rev)  # the hub writes the bare hash, no newline
    return rev


def _is_tiny_or_empty(folder: Path) -> bool:
    """Whether a repo folder may be replaced: it holds one of our tiny models, or no blobs at all."""
    blobs = folder / "blobs"
    if not blobs.is_dir() or not any(blobs.iterdir()):
        return True
    try:
        rev = (folder / "refs" / "main").read_text().strip()
        readme = (folder / "snapshots" / rev / "README.md").read_text()
    except (OSError, UnicodeDecodeError):
        return False
    return _README_MARKER in readme


def _clean_stale_staging(hub_cache: Path) -> None:
    now = time.time()
    for entry in hub_cache.glob(f"{_STAGING_PREFIX}*"):
        try:
            if now - entry.stat().st_mtime > _STALE_STAGING_S:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def _install(staged: Path, target: Path, staging: Path) -> None:
    """Swap the staged repo folder into place. Both renames stay inside hub_cache (one filesystem)."""
    if target.exists() or target.is_symlink():
        os.rename(target, staging / "replaced")
    os.rename(staged, target)


def write_tiny_model(spec: ModelSpec, hub_cache: Path, seed: int = 0) -> Path:
    """Write one tiny model (and the extra repos it needs, AudioGen's T5) into hub_cache; returns its
    snapshot folder."""
    _check_supported(spec)
    for repo in spec.extra_repos:
        readme = f"# {repo} ({_README_MARKER})\n\nA tiny random-weight T5 for {spec.name}.\n"
        write_repo(repo, readme, hub_cache, lambda out, r=repo: _save_t5_repo(out, model_seed(r, seed)))
    return write_snapshot(spec, hub_cache, lambda out: _save_files(spec, out, seed))


def write_snapshot(spec: ModelSpec, hub_cache: Path, save_files: Callable[[Path], None]) -> Path:
    """Install the files `save_files(folder)` writes as spec's repo in hub_cache, in the hub's
    layout (blobs, snapshots/<rev>, refs/main); returns the snapshot folder. Also used by the
    benchmarks for random-weight models of the real shapes.

    It is built completely in a staging folder inside hub_cache and renamed into place, so a crash
    never leaves a half-written model behind. An existing stand-in is replaced; a repo folder
    holding anything else (real weights, a partial download) is left alone: FileExistsError.
    """
    return write_repo(spec.repo, _readme(spec), hub_cache, save_files)


def write_repo(repo: str, readme: str, hub_cache: Path, save_files: Callable[[Path], None]) -> Path:
    """write_snapshot for any repo name (extra repos have no catalogue entry of their own)."""
    hub_cache = Path(hub_cache)
    target = repo_folder(repo, hub_cache)
    if target.exists() and not _is_tiny_or_empty(target):
        raise FileExistsError(
            f"{target} holds files that are not a tiny model (real weights?); "
            "refusing to replace it. Remove it first to write a tiny model there."
        )
    hub_cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=hub_cache))
    try:
        files = staging / "files"
        files.mkdir()
        save_files(files)
        if not (files / "README.md").exists():
            (files / "README.md").write_text(readme)
        staged = staging / repo_folder_name(repo_id=repo, repo_type="model")
        rev = _layout(files, staged)
        _install(staged, target, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / "snapshots" / rev


def write_tiny_models(hub_cache: Path, names: Iterable[str] | None = None, seed: int = 0) -> list[str]:
    """Write tiny models into hub_cache; returns the names written.

    names=None writes every catalogue entry of a supported kind and skips the rest; an explicitly
    named entry of an unsupported kind raises ValueError (before anything is written), an unknown
    name raises lib.catalogue.UnknownModel.
    """
    hub_cache = Path(hub_cache)
    if names is None:
        specs = [s for s in CATALOGUE.values() if s.kind in SUPPORTED_KINDS]
    else:
        specs = [get_spec(n) for n in dict.fromkeys(names)]
        for spec in specs:
            _check_supported(spec)
    for spec in specs:  # refuse before writing anything
        for repo in (spec.repo, *spec.extra_repos):
            target = repo_folder(repo, hub_cache)
            if target.exists() and not _is_tiny_or_empty(target):
                raise FileExistsError(f"{target} holds files that are not a tiny model (real weights?)")
    if hub_cache.is_dir():
        _clean_stale_staging(hub_cache)
    written = []
    for spec in specs:
        write_tiny_model(spec, hub_cache, seed=seed)
        written.append(spec.name)
    return written
