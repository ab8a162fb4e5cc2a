# vsfleet-worker. Runs as root, on purpose: it drives the host's Docker engine
# through its socket (root-equivalent on the host whatever the uid), and it
# moves and deletes the servers' data, whose files belong to the servers' own
# users (root, or the ids Sysbox maps them to), which no other uid may remove.
ARG BASE=vsfleet-base:bookworm
FROM ${BASE}
COPY vsfleet-worker /usr/local/bin/vsfleet-worker
# The shipped templates (worker.templates_dir in docker-compose.yml).
COPY templates /usr/share/vsfleet/templates
USER 0:0
ENTRYPOINT ["/usr/bin/tini", "--", "vsfleet-worker"]
ARG REVISION=unknown
LABEL org.opencontainers.image.title=vsfleet-worker org.opencontainers.image.revision=${REVISION}
