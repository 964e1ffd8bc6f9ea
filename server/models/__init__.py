"""Models in memory: loaders from the on-disk formats, device and precision, the registry."""
