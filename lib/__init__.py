"""What the CLI and the server share: settings, schemas and the model catalogue.

Nothing here imports torch: the CLI must start fast.
"""

__version__ = "0.1.0"
