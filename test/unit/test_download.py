"""server/hub/download.py against a real HTTP hub on loopback (test/hub_server.py)."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from hub_server import FakeHub, HubRepo, repo_from_cache

from lib.catalogue import get_spec
from server.hub import download, store

SMALL = get_spec("musicgen-small")
AUDIOGEN = get_spec("audiogen-medium")


@pytest.fixture
def online(monkeypatch):
    """conftest switches huggingface_hub offline for the whole session; these tests reach a hub on
    loopback only (every call passes its endpoint)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # Read in 64 KiB chunks (10 MiB by default): the tiny weights then span many chunks, as real
    # ones do, so a cut or a cancel happens mid-file.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)


@pytest.fixture
def hub(tiny_hub, online):
    repo = repo_from_cache(tiny_hub, SMALL.repo)
    # Files the real repo also holds and the engine never reads: they must not be fetched.
    repo.files |= {"pytorch_model.bin": b"\0" * 5000, "state_dict.bin": b"\1" * 3000}
    repo = HubRepo(files=repo.files)
    with FakeHub(repos={SMALL.repo: repo}) as h:
        yield h


def test_needed_files_prefers_safetensors_and_skips_audiocraft_copies():
    listing = [
        ".gitattributes",
        "README.md",
        "config.json",
        "model.safetensors",
        "pytorch_model.bin",
        "state_dict.bin",
        "compression_state_dict.bin",
        "spiece.model",
        "tokenizer.json",
    ]
    assert download.needed_files(listing, "transformers") == [
        "config.json",
        "model.safetensors",
        "spiece.model",
        "tokenizer.json",
    ]
    sharded = [
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "pytorch_model-00001-of-00002.bin",
    ]
    assert download.needed_files(sharded, "transformers") == [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    ]
    assert download.needed_files(listing, "audiocraft") == ["compression_state_dict.bin", "state_dict.bin"]


def test_download_installs_only_what_the_engine_needs(hub, tiny_hub, tmp_path):
    seen = []
    snapshot = download.download_model(
        SMALL, tmp_path, endpoint=hub.url, progress=lambda done, total, name: seen.append((done, total))
    )
    assert store.is_installed(SMALL, tmp_path)
    assert snapshot == store.snapshot_dir(SMALL, tmp_path)
    fetched = {path.rsplit("/", 1)[1] for _, path, _ in hub.file_gets()}
    assert "pytorch_model.bin" not in fetched and "state_dict.bin" not in fetched
    assert "model.safetensors" in fetched and "config.json" in fetched
    # Byte-level progress: counts only grow, and end at the total of what was fetched.
    dones = [d for d, _ in seen]
    assert dones == sorted(dones)
    total = seen[-1][1]
    assert seen[-1][0] == total == sum(len(hub.repos[SMALL.repo].files[n]) for n in fetched)
    # Same bytes as the source, in the hub's layout (blobs named by etag, relative links).
    source = store.snapshot_dir(SMALL, tiny_hub)
    assert (snapshot / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    assert (snapshot / "model.safetensors").is_symlink()
    assert not (tmp_path / store.PARTIAL_DIR / store.repo_folder(SMALL.repo, tmp_path).name).exists()
    # Installed: a second download fetches nothing.
    before = len(hub.file_gets())
    download.download_model(SMALL, tmp_path, endpoint=hub.url)
    assert len(hub.file_gets()) == before


def test_cut_connection_resumes_with_a_range_request(hub, tmp_path):
    hub.cut_once.add("model.safetensors")
    download.download_model(SMALL, tmp_path, endpoint=hub.url)
    assert store.is_installed(SMALL, tmp_path)
    ranges = [r for _, _, r in hub.file_gets("model.safetensors")]
    size = len(hub.repos[SMALL.repo].files["model.safetensors"])
    assert len(ranges) == 2 and ranges[0] is None
    resumed_at = int(ranges[1].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= size // 2  # what had arrived before the cut was kept


def test_interrupted_download_resumes_from_the_partial_file(hub, tmp_path):
    """Cancelled after part of the weights arrived: that part stays; the next download asks for the rest."""
    stop = threading.Event()
    started_at: list[int] = []

    def progress(done, total, name):
        if name == "model.safetensors":
            started_at.append(done)
            if done > started_at[0]:  # some of the weights are in
                stop.set()

    with pytest.raises(download.DownloadCancelled):
        download.download_model(SMALL, tmp_path, endpoint=hub.url, progress=progress, cancelled=stop)
    assert not store.is_installed(SMALL, tmp_path)
    assert not store.repo_folder(SMALL.repo, tmp_path).exists()  # nothing installed half-way
    size = len(hub.repos[SMALL.repo].files["model.safetensors"])
    parts = list(store.partial_folder(SMALL.repo, tmp_path).glob("*.part"))
    assert len(parts) == 1
    kept = parts[0].stat().st_size
    assert 0 < kept < size

    download.download_model(SMALL, tmp_path, endpoint=hub.url)
    assert store.is_installed(SMALL, tmp_path)
    assert hub.file_gets("model.safetensors")[-1][2] == f"bytes={kept}-"


@pytest.mark.parametrize("fault, words", [("corrupt", "does not match"), ("short", "wrong size")])
def test_a_damaged_file_is_rejected_and_nothing_is_left_half_written(hub, tmp_path, fault, words):
    getattr(hub, fault).add("model.safetensors")
    with pytest.raises(download.DownloadFailed, match=words):
        download.download_model(SMALL, tmp_path, endpoint=hub.url)
    assert not store.is_installed(SMALL, tmp_path)
    assert not store.repo_folder(SMALL.repo, tmp_path).exists()
    leftovers = list(store.partial_folder(SMALL.repo, tmp_path).glob("*"))
    # Only files that passed their own check are kept (for the retry); none of the damaged one.
    etag = hub.repos[SMALL.repo].etag("model.safetensors")
    assert not [p for p in leftovers if p.name.startswith(etag)]
    assert all(p.suffix == ".ok" for p in leftovers)
    getattr(hub, fault).clear()
    download.download_model(SMALL, tmp_path, endpoint=hub.url)  # the retry works
    assert store.is_installed(SMALL, tmp_path)


def test_hub_down_is_a_plain_error(online, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(download.DownloadFailed, match="no connection to the hub") as info:
        download.download_model(SMALL, tmp_path, endpoint=f"http://127.0.0.1:{port}", timeout_s=2)
    assert "models import" in info.value.hint


def test_hub_that_never_answers_times_out(online, tmp_path):
    with socket.socket() as s:  # accepts connections (the kernel's backlog) and never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(download.DownloadFailed, match="did not answer in time"):
            download.download_model(SMALL, tmp_path, endpoint=endpoint, timeout_s=0.5)


def test_offline_mode_says_so(tmp_path):
    with pytest.raises(download.DownloadFailed, match="offline mode"):
        download.download_model(SMALL, tmp_path, endpoint="http://127.0.0.1:9")


def test_audiogen_also_fetches_t5_large(online, tmp_path):
    t5 = {
        "config.json": b'{"model_type": "t5"}',
        "model.safetensors": b"w" * 4000,
        "spiece.model": b"s" * 100,
        "pytorch_model.bin": b"x" * 9000,
    }
    audiogen = {"state_dict.bin": b"l" * 3000, "compression_state_dict.bin": b"c" * 2000, "README.md": b"hi"}
    with FakeHub(repos={AUDIOGEN.repo: HubRepo(audiogen), "google-t5/t5-large": HubRepo(t5)}) as h:
        download.download_model(AUDIOGEN, tmp_path, endpoint=h.url)
        fetched = sorted(p.split("/resolve/")[0] + ":" + p.rsplit("/", 1)[1] for _, p, _ in h.file_gets())
    assert store.is_installed(AUDIOGEN, tmp_path)
    assert fetched == [
        "/facebook/audiogen-medium:compression_state_dict.bin",
        "/facebook/audiogen-medium:state_dict.bin",
        "/google-t5/t5-large:config.json",
        "/google-t5/t5-large:model.safetensors",
        "/google-t5/t5-large:spiece.model",
    ]


def _layout(repo_dir, names):  # noqa: ANN001, ANN202
    """What a snapshot of `names` looks like on disk: refs/main, each link's text and its blob's mode,
    and the folders' modes."""
    rev = (repo_dir / "refs" / "main").read_bytes()
    snap = repo_dir / "snapshots" / rev.decode()
    links = {n: (os.readlink(snap / n), (snap / n).stat().st_mode & 0o777) for n in names}
    folders = {
        d: (repo_dir / d).stat().st_mode & 0o777
        for d in ("", "blobs", "refs", "snapshots", f"snapshots/{rev.decode()}")
    }
    return rev, links, folders


def test_a_download_and_the_tiny_writer_leave_the_layout_huggingface_hub_leaves(online, tmp_path):
    """One writer: the same files, downloaded or written as a tiny model, give the same blob names,
    links, modes and refs/main; and those are what huggingface_hub's own download gives (here under a
    umask of 027, so that a mode taken from anywhere else would show)."""
    from huggingface_hub import hf_hub_download

    from server.tiny.write import write_tiny_model

    umask = os.umask(0o027)
    try:
        write_tiny_model(SMALL, tmp_path / "tiny")
        with FakeHub(repos={SMALL.repo: repo_from_cache(tmp_path / "tiny", SMALL.repo)}) as h:
            ours = download.download_model(SMALL, tmp_path / "ours", endpoint=h.url)
            names = sorted(p.name for p in ours.iterdir())
            for name in names:
                hf_hub_download(SMALL.repo, name, cache_dir=tmp_path / "theirs", endpoint=h.url)
    finally:
        os.umask(umask)
    assert "model.safetensors" in names and "README.md" not in names  # the engine needs no README
    downloaded = _layout(store.repo_folder(SMALL.repo, tmp_path / "ours"), names)
    assert downloaded == _layout(store.repo_folder(SMALL.repo, tmp_path / "theirs"), names)
    assert downloaded == _layout(store.repo_folder(SMALL.repo, tmp_path / "tiny"), names)
    rev, links, folders = downloaded
    assert {mode for _, mode in links.values()} == {0o640} and set(folders.values()) == {0o750}
    assert rev.decode() == ours.name and len(rev) == 40  # the bare commit, no newline
