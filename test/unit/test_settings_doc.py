"""README.md's settings tables come from lib.settings.Settings, and what they say of
AUDIOCRAFT_DTYPE=auto is what the code picks (issue 14: the README said float32 on CPU while the
code chose int8-dynamic)."""

from __future__ import annotations

import re

import pytest
import torch

from cli import schema
from lib.settings import Settings, load_settings
from server.models import device
from server.models.device import PRECISIONS, default_precision

PRECISION_WORD = re.compile(
    r"(?<![\w-])(" + "|".join(sorted(map(re.escape, PRECISIONS), key=len, reverse=True)) + r")(?![\w-])"
)


def _readme() -> str:
    return schema.readme_path().read_text()


def test_readme_tables_are_generated_from_the_settings():
    assert schema.render_readme(_readme()) == _readme(), (
        "README.md's settings tables are stale: run `python -m cli.schema`"
    )
    assert schema.main(["--check"]) == 0
    rows = _readme().split(schema._markers("settings")[0])[1].split(schema._markers("settings")[1])[0]
    docker = _readme().split(schema._markers("docker")[0])[1].split(schema._markers("docker")[1])[0]
    for name in Settings.model_fields:  # every setting is in one of the two tables, once
        variable = f"`AUDIOCRAFT_{name.upper()}`"
        assert (rows + docker).count(f"| {variable} |") == 1, variable


def _readme_auto_clause() -> str:
    """What the README's AUDIOCRAFT_DTYPE row says `auto` is: from `auto:` to the end of that sentence."""
    row = next(line for line in _readme().splitlines() if line.startswith("| `AUDIOCRAFT_DTYPE` |"))
    assert row.split("|")[2].strip() == Settings.model_fields["dtype"].default == "auto"
    meaning = row.split("|", 3)[3]
    assert "auto:" in meaning, f"the README's AUDIOCRAFT_DTYPE row does not say what auto is: {row}"
    return meaning.split("auto:", 1)[1].split(". ", 1)[0]


def _named(text: str) -> set[str]:
    return set(PRECISION_WORD.findall(text))


@pytest.fixture(params=["this machine", "x86 engine", "no x86 engine"])
def engines(request, monkeypatch):
    """The quantized engines torch offers: as they are here, or as on an x86 build, or an ARM build."""
    if request.param != "this machine":
        offered = (
            ["none", "onednn", "x86", "fbgemm", "qnnpack"] if request.param == "x86 engine" else ["none", "qnnpack"]
        )
        monkeypatch.setattr(type(torch.backends.quantized), "supported_engines", property(lambda _self: offered))
    return request.param


def test_readme_says_what_auto_picks_on_cpu(engines):
    picked = default_precision(torch.device("cpu"))  # what the code does, asked at run time
    clause = _readme_auto_clause()
    cpu_part = clause.split("CUDA", 1)[0]  # the clause names the CPU choices before CUDA's
    assert picked in _named(cpu_part), f"auto is {picked} on this CPU ({engines}); the README says: {clause}"
    assert "float32" not in _named(cpu_part)


def test_readme_says_what_auto_picks_on_cuda():
    picked = default_precision(torch.device("cuda"))
    clause = _readme_auto_clause()
    assert re.search(rf"(?<![\w-]){re.escape(picked)} on CUDA", clause), clause


def test_the_registry_resolves_auto_the_same_way():
    s = load_settings(dtype="auto")
    assert device.pick_precision(s.dtype, torch.device("cpu")) == default_precision(torch.device("cpu"))
