"""GET / and /studio/*: the studio page's files through the ASGI app (the browser tests are in test/browser)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from api_client import make_client

from server.http.routes.studio import STUDIO_DIR

KEY = "studio-key"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(tiny_hub, tmp_path_factory):
    """The app with an API key set: the page itself must not need it."""
    keyed = make_client(tiny_hub, tmp_path_factory.mktemp("studio"), api_key=KEY)
    with keyed:
        yield keyed


def test_the_page_is_open_even_with_a_key_and_has_a_strict_policy(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    policy = dict(part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/api/models").status_code == 401  # what the page calls needs the key


def local_references(text: str) -> list[str]:
    """The files a page, a stylesheet or a module names: src/href attributes, imports, url()."""
    found = re.findall(r'(?:src|href)="([^"#]+)"', text)
    found += re.findall(r'from\s+"([^"]+)"', text) + re.findall(r'import\("([^"]+)"\)', text)
    found += re.findall(r"url\(([^)]+)\)", text)
    return found


def test_every_file_the_page_names_is_served_from_this_origin(client):
    seen, todo = set(), ["/"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        r = client.get(path)
        assert r.status_code == 200, path
        if path.endswith(".svg"):
            continue
        for ref in local_references(r.text):
            # Nothing from another host (no CDN): the page works offline.
            assert not re.match(r"^(https?:)?//", ref), f"{path} loads {ref} from elsewhere"
            todo.append(ref if ref.startswith("/") else "/studio/" + ref.removeprefix("./"))
    assert {"/studio/studio.js", "/studio/api.js", "/studio/studio.css", "/studio/icon.svg"} <= seen


@pytest.mark.parametrize(
    ("name", "media_type"),
    [("studio.js", "text/javascript"), ("studio.css", "text/css"), ("icon.svg", "image/svg+xml")],
)
def test_assets_have_their_types(client, name, media_type):
    r = client.get(f"/studio/{name}")
    assert r.status_code == 200 and r.headers["content-type"].startswith(media_type)
    assert "content-security-policy" in r.headers
    assert client.head(f"/studio/{name}").status_code == 200


@pytest.mark.parametrize("path", ["/studio/nope.js", "/studio/index.html", "/studio/..%2Fapp.py", "/studio/"])
def test_other_names_are_not_found(client, path):
    r = client.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_the_page_takes_only_get(client):
    r = client.post("/", headers={"Origin": "http://localhost"})
    assert r.status_code == 405


def test_the_files_ship_in_the_package():
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "http/studio/*" in package_data["server"]
    assert (STUDIO_DIR / "index.html").is_file()
