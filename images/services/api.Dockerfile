# vsfleet-api. The context holds only the binary, built on the machine by
# cargo (scripts/build-images): no Rust toolchain or registry is needed here.
ARG BASE=vsfleet-base:bookworm
FROM ${BASE}
# The database lives in /var/lib/vsfleet/api (a named volume in
# docker-compose.yml, which takes this directory's owner when first mounted).
RUN mkdir -p /var/lib/vsfleet/api && chown 10001:10001 /var/lib/vsfleet/api
COPY vsfleet-api /usr/local/bin/vsfleet-api
ENV VSFLEET_DATABASE__URL=sqlite:///var/lib/vsfleet/api/vsfleet.db \
    VSFLEET_API__LISTEN=0.0.0.0:8080
USER 10001:10001
WORKDIR /var/lib/vsfleet/api
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "vsfleet-api"]
CMD ["serve"]
ARG REVISION=unknown
LABEL org.opencontainers.image.title=vsfleet-api org.opencontainers.image.revision=${REVISION}
