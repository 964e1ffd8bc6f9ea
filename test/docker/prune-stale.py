"""Remove the untagged images that earlier builds of the test image left behind (previous final images
and build stages), keeping the current build's chain, so repeated runs do not fill the disk.

    python test/docker/prune-stale.py IMAGE BASE_IMAGE

Only dangling images built on BASE_IMAGE are candidates, and only those outside the chains of IMAGE
and of the newest dangling build stage (the layer cache of the next build) are removed.
"""

from __future__ import annotations

import sys

import docker
from docker.errors import APIError, ImageNotFound


def chain(api, image_id: str) -> list[str]:
    ids = []
    while image_id:
        ids.append(image_id)
        image_id = api.inspect_image(image_id).get("Parent") or ""
    return ids


def main(image: str, base: str) -> int:
    client = docker.from_env(timeout=120)
    api = client.api
    try:
        base_id = client.images.get(base).id
        image_id = client.images.get(image).id
    except ImageNotFound:
        return 0
    dangling = sorted(
        (img for img in client.images.list(filters={"dangling": True}) if base_id in chain(api, img.id)),
        key=lambda img: img.attrs.get("Created", ""),
    )
    keep = set(chain(api, image_id))
    if dangling:
        keep.update(chain(api, dangling[-1].id))  # the newest build stage: the cache of the next build
    removed = 0
    for img in dangling:
        if img.id in keep:
            continue
        try:
            client.images.remove(img.id, noprune=False)
            removed += 1
        except (APIError, ImageNotFound):
            continue  # still a parent of something else: it goes with that one
    if removed:
        print(f"removed {removed} stale image(s) of earlier builds", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
