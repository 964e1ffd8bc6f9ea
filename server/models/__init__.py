"""Models in memory: one loaded type per kind, their loaders, device and precision, the registry.

- `loaded.py`: `ResidentModel`, what the registry (and /health, /api/models) needs of any loaded
  model, and the types: `TextToAudioLM` (MusicGen, MusicGen-Melody, AudioGen), `CodecModel` (EnCodec).
- `loaders.py`: `LOADERS`, the loader of each kind; one module per family: `musicgen.py`,
  `audiogen.py` (converted from audiocraft's export by `convert/`), `encodec.py`.
- `weights.py`: weight preparation at load (EnCodec's weight norm baked in, the decoder packed).
- `heap.py`: glibc's heap, so what a load frees goes back to the OS.
- `device.py`: device and precision choice. `registry.py`: loading, leases, the memory budget.
"""
