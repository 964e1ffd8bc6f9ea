"""Tiny random-weight checkpoints in the real on-disk layouts, for tests and trying the service.

Tests and offline users run the real loading code (`from_pretrained(repo, cache_dir=...,
local_files_only=True)`) on them: same model classes, same structure and framing as the released
checkpoints, only with tiny widths and random weights. Everything is built in code; nothing is
downloaded. Output is deterministic: the same name and seed give the same bytes and commit.

- dims.py: the kinds written (SUPPORTED_KINDS), their dims (TINY), each model's seed;
- tokenizer.py: the tiny T5 tokenizer, trained in code;
- musicgen.py, encodec.py, t5.py, audiocraft_export.py: a repo's files, by family (AudioGen is
  written in audiocraft's export format, as it is on the hub, with a tiny T5 repo beside it);
- weight_norm.py: weight-norm tensors under the released checkpoints' names;
- write.py: into a hub cache, through the hub's one writer (server/hub/snapshot.py).
"""
