"""server/models/tensorfile.py: what `write` writes, `read` gives back bit for bit, in file order or
another, whatever runs its reads are cut into and however short each system call comes back; a file
cut short names the tensor it ends in; safetensors reads the same file."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from server.models import tensorfile


def sample() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return {
        "a.weight": torch.randn(7, 5, generator=gen),
        "a.scale": torch.randn(7, generator=gen),
        "b.codes": torch.randint(-127, 128, (9, 4), generator=gen, dtype=torch.int8),
        "b.half": torch.randn(3, 3, generator=gen).to(torch.bfloat16),
        "c.empty": torch.empty(0, 4),
        "c.scalar": torch.tensor(2.5),
        "c.steps": torch.arange(6, dtype=torch.int64),
        "c.mask": torch.tensor([True, False, True]),
    }


@pytest.fixture
def path(tmp_path):
    out = tmp_path / "t.safetensors"
    with open(out, "wb") as f:
        tensorfile.write(f, sample().items(), {"k": "v"})
    return out


def read_all(path, order=None) -> list[tuple[str, torch.Tensor]]:
    with open(path, "rb", buffering=0) as f:
        entries, metadata, start = tensorfile.read_header(f)
        assert metadata == {"k": "v"}
        return list(tensorfile.read(f, entries, start, order))


def assert_same(got: dict[str, torch.Tensor]) -> None:
    want = sample()
    assert got.keys() == want.keys()
    for name, t in want.items():
        assert got[name].dtype == t.dtype and got[name].shape == t.shape and torch.equal(got[name], t), name


def test_it_reads_back_what_it_wrote_in_file_order(path):
    got = read_all(path)
    assert [name for name, _ in got] == list(sample())
    assert_same(dict(got))
    assert_same(load_file(path))  # a plain safetensors file


def test_it_reads_in_the_order_asked(path):
    order = list(reversed(sample()))
    got = read_all(path, order)
    assert [name for name, _ in got] == order
    assert_same(dict(got))


@pytest.mark.parametrize(("run_bytes", "run_tensors"), [(1, 512), (64, 2), (1 << 20, 3)])
def test_runs_of_any_size_read_the_same(path, monkeypatch, run_bytes, run_tensors):
    monkeypatch.setattr(tensorfile, "_RUN_BYTES", run_bytes)
    monkeypatch.setattr(tensorfile, "_RUN_TENSORS", run_tensors)
    assert_same(dict(read_all(path)))


def test_short_reads_are_continued(path, monkeypatch):
    """Linux returns at most ~2 GB per call; here every call stops after 5 bytes."""
    calls = []

    def short(fd, buffers, offset):
        calls.append(offset)
        first = next(b for b in buffers if len(b))
        n = min(5, len(first))
        data = os.pread(fd, n, offset)
        first[: len(data)] = data
        return len(data)

    monkeypatch.setattr(tensorfile.os, "preadv", short)
    assert_same(dict(read_all(path)))
    assert len(calls) > len(sample())


def test_a_file_cut_short_while_read_names_the_tensor(path):
    with open(path, "rb", buffering=0) as f:
        entries, _, start = tensorfile.read_header(f)
        os.truncate(path, start + entries["b.codes"].start + 3)  # after the header was checked
        with pytest.raises(tensorfile.TensorFileError, match="b.codes: the file ends inside it"):
            list(tensorfile.read(f, entries, start))
