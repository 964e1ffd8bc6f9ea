"""Tiny random-weight checkpoints in the real on-disk layouts, for tests and trying the service."""
