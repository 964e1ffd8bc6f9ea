"""Which audiocraft melody exports convert (server/models/convert/xpcfg.py melody_settings): the
chroma and the text prepended, ChromaStemConditioner's settings as MusicgenMelody computes them."""

from __future__ import annotations

import copy

import pytest

from server.models.convert.xpcfg import ConversionError, melody_settings

CFG = {
    "sample_rate": 32000,
    "dataset": {"segment_duration": 30},
    "fuser": {"prepend": ["self_wav", "description"], "cross": [], "sum": [], "input_interpolate": []},
    "conditioners": {
        "description": {"model": "t5", "t5": {"name": "t5-base"}},
        "self_wav": {
            "model": "chroma_stem",
            "chroma_stem": {
                "sample_rate": 32000, "n_chroma": 12, "radix2_exp": 14, "argmax": True, "match_len_on_eval": True,
                "eval_wavs": None, "n_eval_wavs": 100, "cache_path": None,
            },
        },
    },
}  # fmt: skip


def test_audiocrafts_chroma2music_converts_with_235_frames():
    assert melody_settings(CFG) == (12, 235)
    ten = copy.deepcopy(CFG)
    ten["dataset"]["segment_duration"] = 10
    assert melody_settings(ten) == (12, 1 + 320000 // 4096)


@pytest.mark.parametrize(
    "path,value,message",
    [
        ("fuser.prepend", ["self_wav"], "fuser.prepend"),
        ("fuser.cross", ["description"], "fuser.cross"),
        ("conditioners.self_wav.model", "chroma", "self_wav.model"),
        ("conditioners.self_wav.chroma_stem.match_len_on_eval", False, "match_len_on_eval"),
        ("conditioners.self_wav.chroma_stem.argmax", False, "argmax"),
        ("conditioners.self_wav.chroma_stem.radix2_exp", 12, "radix2_exp"),
        ("conditioners.self_wav.chroma_stem.sample_rate", 16000, "chroma_stem.sample_rate"),
        ("conditioners.self_wav.chroma_stem.eval_wavs", "musiccaps.jsonl", "eval_wavs"),
        ("conditioners.self_wav.chroma_stem.winhop", 1024, "winhop"),
    ],
)
def test_what_musicgen_melody_would_compute_differently_is_refused(path, value, message):
    cfg = copy.deepcopy(CFG)
    *parents, last = path.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[last] = value
    with pytest.raises(ConversionError, match=message):
        melody_settings(cfg)
