"""Audio files for tests, written with real encoders."""

from __future__ import annotations

import io

import av
import numpy as np


def make_m4a(audio: np.ndarray, sample_rate: int) -> bytes:
    """AAC in an MP4 (m4a) container, written with PyAV's ffmpeg encoder."""
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[audio.shape[0]]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="ipod") as out:
        stream = out.add_stream("aac", rate=sample_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()
