"""Model names: the catalogue's aliases (AudioCraft's short names, Replicate's `model_version`) and
the close matches an unknown name gets."""

from __future__ import annotations

import pytest

from lib.catalogue import ALIASES, CATALOGUE, UnknownModel, close_matches, get_spec, resolve_name
from lib.schemas import codec_bandwidths
from lib.settings import Settings


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        # MusicGen's short names
        ("small", "musicgen-small"),
        ("medium", "musicgen-medium"),
        ("large", "musicgen-large"),
        ("melody", "musicgen-melody"),
        # Replicate's model_version values
        ("stereo-melody-large", "musicgen-stereo-melody-large"),
        ("stereo-large", "musicgen-stereo-large"),
        ("melody-large", "musicgen-melody-large"),
        # any case, stray spaces
        ("Large", "musicgen-large"),
        (" STEREO-LARGE ", "musicgen-stereo-large"),
        ("MusicGen-Small", "musicgen-small"),
    ],
)
def test_aliases_resolve(alias, name):
    assert resolve_name(alias) == name
    assert get_spec(alias) is CATALOGUE[name]


def test_every_musicgen_has_its_short_name_and_aliases_are_unambiguous():
    for spec in CATALOGUE.values():
        if spec.kind.startswith("musicgen"):
            assert spec.name.removeprefix("musicgen-") in spec.aliases
        for alias in spec.aliases:
            assert ALIASES[alias] == spec.name
    assert not set(ALIASES) & set(CATALOGUE)
    assert all(resolve_name(name) == name for name in CATALOGUE)


@pytest.mark.parametrize(
    ("typo", "expected"),
    [
        ("musicgen-smal", "musicgen-small"),
        ("smal", "small (musicgen-small)"),
        ("stereo-melody-larg", "stereo-melody-large (musicgen-stereo-melody-large)"),
        ("audiogen", "audiogen-medium"),
        ("encodec-24k", "encodec-24khz"),
    ],
)
def test_unknown_names_get_close_matches(typo, expected):
    with pytest.raises(UnknownModel) as info:
        get_spec(typo)
    e = info.value
    assert e.suggestions[0] == expected
    assert expected in e.message and e.message.startswith(f"there is no model named '{typo}'")
    assert "musicgen-small" in e.hint and "stereo-melody-large" in e.hint  # every name and alias
    assert len(close_matches(typo)) <= 3


def test_nothing_close_still_says_what_to_do():
    e = UnknownModel("xyzzy")
    assert e.suggestions == [] and e.message == "there is no model named 'xyzzy'"
    assert e.hint.startswith("use a catalogue name")


def test_aliases_in_settings_and_schemas():
    s = Settings(model_dtype="large=bfloat16")
    assert s.dtype_for("musicgen-large") == "bfloat16" and s.dtype_for("musicgen-small") == "auto"
    assert codec_bandwidths("encodec-24khz") == (1.5, 3.0, 6.0, 12.0, 24.0)
    assert codec_bandwidths("nope") is None and codec_bandwidths("small") is None
