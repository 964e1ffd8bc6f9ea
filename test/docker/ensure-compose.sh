#!/usr/bin/env bash
# Print the Compose command for the docker phase: `docker compose` when the engine has the plugin,
# else Debian's `docker-compose` (1.29, which reads compose.yaml's Compose Specification), installed
# with apt-get when missing (root only). Exit 2, with the reason on stderr, when there is none.
set -uo pipefail

if docker compose version >/dev/null 2>&1; then
    echo "docker compose"
    exit 0
fi
if ! command -v docker-compose >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 || {
        echo "no Compose: neither the docker compose plugin nor docker-compose, and no root apt-get to install it" >&2
        exit 2
    }
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q docker-compose >/tmp/apt-docker-compose.log 2>&1; then
        apt-get update -q >>/tmp/apt-docker-compose.log 2>&1
        apt-get install -y -q docker-compose >>/tmp/apt-docker-compose.log 2>&1 || {
            echo "apt-get install docker-compose failed (see /tmp/apt-docker-compose.log)" >&2
            exit 2
        }
    fi
fi
docker-compose version >/dev/null 2>&1 || { echo "docker-compose is installed but does not run" >&2; exit 2; }
echo "docker-compose"
