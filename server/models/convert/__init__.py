"""Converting audiocraft's export format into the transformers classes the engine runs.

`audiocraft_export.convert_export` turns an export folder (state_dict.bin + compression_state_dict.bin)
plus a T5 repo into a MusicgenForConditionalGeneration folder; `cache.ensure_converted` keeps that
converted copy beside the original in the hub cache.
"""
