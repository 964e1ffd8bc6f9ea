"""The command groups of the CLI."""
