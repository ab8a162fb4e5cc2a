# vsfleet-scheduler: stateless, no volume, no port.
ARG BASE=vsfleet-base:bookworm
FROM ${BASE}
COPY vsfleet-scheduler /usr/local/bin/vsfleet-scheduler
USER 10001:10001
ENTRYPOINT ["/usr/bin/tini", "--", "vsfleet-scheduler"]
ARG REVISION=unknown
LABEL org.opencontainers.image.title=vsfleet-scheduler org.opencontainers.image.revision=${REVISION}
