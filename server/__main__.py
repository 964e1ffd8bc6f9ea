"""`python -m server`: run the server with settings from the environment (AUDIOCRAFT_*)."""

from lib.settings import Settings
from server.main import serve

if __name__ == "__main__":
    serve(Settings())
