"""lib.content: the content store shared by the CLI and the server."""

from __future__ import annotations

import json
import math
import struct
import threading
import wave
from pathlib import Path

import pytest

from lib.content import (
    ContentExists,
    ContentNotFound,
    ContentStore,
    InvalidContent,
    NotExecutable,
    normalize_preset,
    sanitize_name,
    sniff_audio_format,
    valid_name,
    wav_info,
)


def make_wav(path: Path, seconds: float = 0.25, rate: int = 8000, channels: int = 1, width: int = 2) -> Path:
    frames = int(seconds * rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        sample = struct.pack("<h", 0) if width == 2 else b"\x00" * width
        w.writeframes(sample * channels * frames)
    return path


def float_wav(path: Path, seconds: float, rate: int) -> Path:
    """A WAVE_FORMAT_IEEE_FLOAT file (the stdlib wave module cannot read these)."""
    frames = int(seconds * rate)
    data = b"".join(struct.pack("<f", math.sin(i / 10)) for i in range(frames))
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore.for_data_dir(tmp_path / "data")


def test_add_list_get_remove(store, tmp_path):
    wav = make_wav(tmp_path / "Theme Song.wav", seconds=0.5)
    item = store.add_file(wav)
    assert item.name == "Theme-Song"
    assert (item.type, item.format, item.media_type) == ("audio", "wav", "audio/wav")
    assert item.duration_s == pytest.approx(0.5)
    assert (item.sample_rate, item.channels) == (8000, 1)
    assert store.path_of("Theme-Song").read_bytes() == wav.read_bytes()
    assert [i.name for i in store.list()] == ["Theme-Song"]
    assert store.get("Theme-Song").sha256 == item.sha256
    with pytest.raises(ContentExists):
        store.add_file(wav)
    removed = store.remove("Theme-Song")
    assert removed.name == "Theme-Song"
    assert not (store.root / item.path).exists()
    with pytest.raises(ContentNotFound):
        store.remove("Theme-Song")
    with pytest.raises(ContentNotFound):
        store.get("Theme-Song")


def test_index_is_written_atomically_and_survives_a_new_store(store, tmp_path):
    store.add_file(make_wav(tmp_path / "a.wav"), name="a")
    leftovers = [p.name for p in store.root.iterdir() if p.name.endswith(".tmp") or ".incoming." in p.name]
    assert leftovers == []
    raw = json.loads(store.index_path.read_text())
    assert raw["version"] == 1 and set(raw["items"]) == {"a"}
    assert [i.name for i in ContentStore(store.root).list()] == ["a"]


def test_a_corrupt_index_is_a_clear_error(store, tmp_path):
    store.add_file(make_wav(tmp_path / "a.wav"), name="a")
    store.index_path.write_text("{not json")
    with pytest.raises(Exception) as info:
        store.list()
    assert "index" in str(info.value)


def test_concurrent_adds_all_land(store, tmp_path):
    wav = make_wav(tmp_path / "a.wav")
    errors: list[Exception] = []

    def add(i: int) -> None:
        try:
            store.add_file(wav, name=f"item-{i}")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list()) == 16


def test_names():
    assert valid_name("calm-piano_2.v1")
    for bad in ("", "-x", "a/b", "../x", "a b", "x" * 129, "calm\n", "calm\r\n", "\ncalm"):  # the whole name
        assert not valid_name(bad)
    assert sanitize_name("  My song (final)!.wav ") == "My-song-final-.wav"
    assert sanitize_name("///") == "item"


def test_bad_input(store, tmp_path):
    with pytest.raises(InvalidContent):
        store.add_file(tmp_path / "missing.wav")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01\x02 nothing")
    with pytest.raises(InvalidContent):
        store.add_file(junk)
    wav = make_wav(tmp_path / "a.wav")
    with pytest.raises(InvalidContent):
        store.add_file(wav, name="no spaces")
    with pytest.raises(InvalidContent):
        store.add_file(wav, type="video")
    not_json = tmp_path / "p.json"
    not_json.write_text("{oops")
    with pytest.raises(InvalidContent):
        store.add_file(not_json, type="preset")


def test_filter_and_type(store, tmp_path):
    wav = make_wav(tmp_path / "a.wav")
    for name in ("calm-piano", "calm-strings", "drums"):
        store.add_file(wav, name=name)
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"prompt": "calm", "duration": 3}))
    store.add_file(preset, name="calm-preset")
    assert {i.name for i in store.list("calm*")} == {"calm-piano", "calm-strings", "calm-preset"}
    assert {i.name for i in store.list("STRINGS")} == {"calm-strings"}
    assert [i.name for i in store.list("preset")] == ["calm-preset"]
    assert {i.name for i in store.list(type="audio")} == {"calm-piano", "calm-strings", "drums"}


def test_presets(store, tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"type": "sound", "request": {"prompt": "rain", "duration": 4}, "seed": 2}))
    item = store.add_file(p)
    assert (item.type, item.format, item.path) == ("preset", "json", "presets/p.json")
    assert store.load_preset("p") == {"type": "sound", "prompt": "rain", "duration": 4, "seed": 2}
    store.add_file(make_wav(tmp_path / "a.wav"), name="audio")
    with pytest.raises(NotExecutable):
        store.load_preset("audio")
    with pytest.raises(ContentNotFound):
        store.load_preset("ghost")


def test_normalize_preset():
    assert normalize_preset({"prompt": "x"}) == {"type": "music", "prompt": "x"}
    assert normalize_preset({"kind": "melody", "input": "theme"})["type"] == "melody"
    for bad in ([], {"type": "music"}, {"type": "poem", "prompt": "x"}, {"prompt": "x", "duration": -1}):
        with pytest.raises(InvalidContent):
            normalize_preset(bad)


def test_add_bytes_and_unique_names(store, tmp_path):
    data = make_wav(tmp_path / "a.wav").read_bytes()
    item = store.add_bytes(data, name="music-1", metadata={"seed": 5})
    assert item.source == "generated" and item.metadata == {"seed": 5}
    assert store.unique_name("music-1") == "music-1-2"
    assert store.unique_name("fresh") == "fresh"


def test_resolve_audio(store, tmp_path):
    store.add_file(make_wav(tmp_path / "a.wav"), name="theme")
    assert store.resolve_audio("theme").is_file()
    store.path_of("theme").unlink()
    with pytest.raises(ContentNotFound):
        store.resolve_audio("theme")


def test_sniff_and_wav_info(tmp_path):
    assert sniff_audio_format(b"fLaC\x00\x00") == "flac"
    assert sniff_audio_format(b"OggS\x00") == "ogg"
    assert sniff_audio_format(b"ID3\x04") == "mp3"
    assert sniff_audio_format(b"\xff\xfb\x90\x00") == "mp3"
    assert sniff_audio_format(b"hello world") is None
    stereo = make_wav(tmp_path / "s.wav", seconds=1.0, rate=44100, channels=2)
    assert wav_info(stereo) == {"sample_rate": 44100, "channels": 2, "duration_s": 1.0}
    f32 = float_wav(tmp_path / "f.wav", seconds=0.5, rate=32000)
    assert wav_info(f32) == {"sample_rate": 32000, "channels": 1, "duration_s": 0.5}
    (tmp_path / "x.wav").write_bytes(b"RIFF")
    assert wav_info(tmp_path / "x.wav") is None
