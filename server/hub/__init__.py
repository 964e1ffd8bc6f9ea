"""Hub I/O, torch-free: the hub cache layout, downloads, imports."""
