"""bench/generate.py's own arithmetic: the streaming bandwidth it measures and the share of it a step uses."""

from __future__ import annotations

from bench import generate


def _row(config: str, steps_per_s: float, read_mb: float | None = None) -> dict:
    row = {
        "model": "musicgen-small",
        "config": config,
        "total_s": 10.0,
        "steps_per_s": steps_per_s,
        "rss_loaded_mb": 1000.0,
        "peak_rss_mb": 1200.0,
        "peak_rss_process_mb": 1300.0,
    }
    if read_mb is not None:
        row |= {"weight_mb_per_step": read_mb - 10, "read_mb_per_step": read_mb}
    return row


def test_the_share_of_bandwidth_is_bytes_per_step_times_steps_per_second():
    rows = [_row("transformers", 5.0), _row("int8-dynamic", 30.0, read_mb=350.0)]
    bandwidth = 350.0 * 2**20 * 30.0 / 0.75  # a step rate that uses exactly 75 %
    lines = generate.table(rows, 5.0, bandwidth).splitlines()
    assert "of bandwidth" in lines[0]
    engine = lines[3].split("|")
    assert engine[7].strip() == "350 MB" and engine[8].strip() == "75%"
    assert lines[2].split("|")[8].strip() == "-"  # transformers: its bytes are not counted
    assert "| - |" in generate.table(rows, 5.0).splitlines()[3]  # no bandwidth measured: no share


def test_stream_bandwidth_is_a_rate():
    rate = generate.stream_bandwidth(size_bytes=2**22, repeats=2)
    assert rate > 2**22  # more than 4 MiB moved per second, on any machine
