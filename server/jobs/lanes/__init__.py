"""The lanes of the job queue: decode (generation, batched), codec, download."""
