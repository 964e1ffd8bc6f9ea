"""What the CLI and the server share: settings, schemas and the model catalogue.

Nothing here imports torch: the CLI must start fast.
"""

__version__ = "0.1.0"
# The same as pyproject.toml's description (a test checks it); `info --json` reports it.
__description__ = (
    "A self-hosted AudioCraft service: MusicGen, AudioGen and EnCodec behind one REST API and a lifecycle CLI"
)
