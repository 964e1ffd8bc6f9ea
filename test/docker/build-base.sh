#!/usr/bin/env bash
# Build the Docker base image without any image registry: a Debian bookworm minbase made with
# debootstrap (Debian's own packages, reachable here), with Python 3.11 and venv support, then
# `docker import`ed. The Dockerfile takes it as BASE_IMAGE.
#
#   test/docker/build-base.sh [TAG]        # default audiocraft-base:bookworm; no-op when it exists
#   FORCE=1 test/docker/build-base.sh      # rebuild even when it exists
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), SUITE (default bookworm).
# Needs root (debootstrap), debootstrap and a running Docker engine.
set -euo pipefail

TAG="${1:-${BASE_TAG:-audiocraft-base:bookworm}}"
SUITE="${SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# python3-venv brings ensurepip, so `python3 -m venv` gives a venv with pip; no python3-pip needed.
# soundfile's manylinux wheels bundle libsndfile, so no libsndfile1 either.
PACKAGES="python3,python3-venv,ca-certificates"

if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "${TAG}" >/dev/null 2>&1; then
    echo "base image ${TAG} exists; reusing it (FORCE=1 rebuilds)"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "error: debootstrap is not installed (apt-get install -y debootstrap)" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "error: debootstrap needs root" >&2; exit 1; }

ROOTFS="$(mktemp -d /tmp/audiocraft-rootfs.XXXXXX)"
trap 'rm -rf "${ROOTFS}"' EXIT
started=$(date +%s)
echo "debootstrap ${SUITE} (minbase + ${PACKAGES}) from ${MIRROR} into ${ROOTFS} ..."
debootstrap --variant=minbase --include="${PACKAGES}" "${SUITE}" "${ROOTFS}" "${MIRROR}" >"${ROOTFS}.log" 2>&1 || {
    tail -30 "${ROOTFS}.log" >&2
    exit 1
}
rm -f "${ROOTFS}.log"

# Slim it: package caches and lists, docs, man pages, locales (the image needs none of them).
rm -rf "${ROOTFS}"/var/cache/apt/archives/*.deb "${ROOTFS}"/var/lib/apt/lists/* \
    "${ROOTFS}"/usr/share/doc/* "${ROOTFS}"/usr/share/man/* "${ROOTFS}"/usr/share/info/* \
    "${ROOTFS}"/var/log/*.log "${ROOTFS}"/var/cache/debconf/*-old
find "${ROOTFS}/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
# The host's resolver and hostname must not leak into the image (Docker supplies its own at run time).
: >"${ROOTFS}/etc/resolv.conf"
echo "localhost" >"${ROOTFS}/etc/hostname"
# Apt inside the image uses the same mirror.
echo "deb ${MIRROR} ${SUITE} main" >"${ROOTFS}/etc/apt/sources.list"

tar --numeric-owner -C "${ROOTFS}" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap ${SUITE} minbase + ${PACKAGES}" \
    - "${TAG}" >/dev/null
size=$(docker image inspect -f '{{.Size}}' "${TAG}")
echo "built ${TAG} ($((size / 1000000)) MB) in $(($(date +%s) - started)) s"
