"""The CLI's --track syntax (cli/mix.py): SOURCE[@OFFSET_S][:GAIN_dB][,KEY=VALUE...]."""

from __future__ import annotations

import json

import pytest

from cli.errors import CliError
from cli.mix import from_preset, from_specs, parse_track, request_body
from lib.content import ContentStore, InvalidContent, normalize_preset
from lib.schemas import MixRequest


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("music.wav@0:-3dB", ("name", "music.wav", {"offset_s": 0.0, "gain_db": -3.0})),
        ("thunder.wav@2.5s", ("name", "thunder.wav", {"offset_s": 2.5})),
        ("x.flac:+2db", ("name", "x.flac", {"gain_db": 2.0})),
        (
            "job:0123456789abcdef@10:-6dB,loop,pan=-0.5",
            ("job", "0123456789abcdef", {"offset_s": 10.0, "gain_db": -6.0, "loop": True, "pan": -0.5}),
        ),  # fmt: skip
        ("job:1234@1", ("job", "1234", {"offset_s": 1.0})),  # a job id of digits is no gain
        (
            "content:rain,role=effect,fade_in=0.5s,fade_out_s=1",
            ("content", "rain", {"role": "effect", "fade_in_s": 0.5, "fade_out_s": 1.0}),
        ),  # fmt: skip
        (
            "a.wav,gain=-3dB,loop=no,trim_start=1,trim_end=2.5",
            ("name", "a.wav", {"gain_db": -3.0, "loop": False, "trim_start_s": 1.0, "trim_end_s": 2.5}),
        ),  # fmt: skip
        ("a.wav,loop,loop_crossfade=0.1", ("name", "a.wav", {"loop": True, "loop_crossfade_s": 0.1})),
        ("take@2.wav", ("name", "take@2.wav", {})),  # not an offset: the name goes on
    ],
)
def test_specs(spec, expected):
    assert parse_track(spec) == expected


def test_an_existing_file_is_the_file_whatever_its_name(tmp_path):
    odd = tmp_path / "a@1:2,loop.wav"
    odd.write_bytes(b"RIFF")
    assert parse_track(str(odd)) == ("file", str(odd), {})


@pytest.mark.parametrize(
    "spec,says",
    [
        ("a.wav,colour=blue", "unknown key"),
        ("a.wav,pan=2", "outside -1..1"),
        ("a.wav,fade_in=-1", "negative"),
        ("a.wav,fade_in=soon", "not a number"),
        ("a.wav,role=drums", "music, effect, voice"),
        ("a.wav,loop=maybe", "loop=true|false"),
        ("a.wav,trim_start=2,trim_end=1", "trim_end must come after trim_start"),
        ("a.wav,gain", "needs a value"),
        (",loop", "names no audio"),
    ],
)
def test_mistakes_say_what_is_wrong(spec, says):
    with pytest.raises(CliError) as err:
        parse_track(spec)
    assert says in err.value.message + (err.value.hint or "")


def test_files_and_content_become_uploads_and_jobs_references(tmp_path):
    wav = tmp_path / "music.wav"
    wav.write_bytes(b"RIFF....WAVE")
    store = ContentStore.for_data_dir(tmp_path / "data")
    store.add_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ", name="rain", suffix=".wav")
    tracks = from_specs([f"{wav}@1", "content:rain,loop", "rain:-6", "job:abc@2"], tmp_path / "data")
    assert tracks.tracks == [
        {"upload": "track0", "offset_s": 1.0},
        {"upload": "track1", "loop": True},
        {"upload": "track2", "gain_db": -6.0},
        {"job": "abc", "offset_s": 2.0},
    ]
    assert tracks.files["track0"] == wav and tracks.files["track1"] == store.path_of("rain")
    with pytest.raises(CliError, match="no audio content item"):
        from_specs(["content:nothing"], tmp_path / "data")
    with pytest.raises(CliError, match="neither a file nor an audio content item"):
        from_specs(["missing.wav"], tmp_path / "data")
    with pytest.raises(CliError, match="at least one --track"):
        from_specs([], tmp_path / "data")


def test_the_body_is_a_valid_mix_request(tmp_path):
    tracks = from_preset([{"job": "abc", "offset_s": 1, "role": "effect"}, "job:def,loop"], tmp_path)
    body = request_body(tracks, duration=4, fmt="mp3", sample_rate="native", channels=2, duck_db=6, duck_release=1)
    assert body["ducking"] == {"db": 6, "release_s": 1}
    request = MixRequest.model_validate(body)
    assert request.duration_s == 4 and request.tracks[1].loop and request.sample_rate == "native"
    with pytest.raises(CliError, match="--duck"):
        request_body(tracks, duck_attack=0.1)


def test_a_mix_preset_needs_tracks():
    assert normalize_preset({"type": "mix", "tracks": ["a.wav@0"]})["type"] == "mix"
    with pytest.raises(InvalidContent, match="tracks"):
        normalize_preset({"type": "mix"})
    json.dumps(normalize_preset({"type": "mix", "tracks": [{"content": "rain"}]}))
