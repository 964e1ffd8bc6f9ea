# Redis for the compose test, on the registry-free base (no image registry is reachable here, so
# Docker Hub's redis image, compose.yaml's default, cannot be pulled): Debian's redis-server.
ARG BASE_IMAGE=audiocraft-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no", "--dir", "/data"]
