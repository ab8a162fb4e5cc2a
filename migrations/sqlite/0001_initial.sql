-- vsfleet schema, modelled on seed 003 (System_Users, Hosting_VirtualServers)
-- and seed 004 (states, data_exists, deleted_at). Timestamps are RFC 3339 UTC
-- text, which sorts in time order.

CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    email       TEXT NOT NULL UNIQUE,
    is_admin    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);

-- Only a SHA-256 of each token is stored: a leaked database grants nothing.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL
);

-- AUTOINCREMENT, not plain rowid: a purged server's id is never reused, so a
-- new server can never meet an old server's archive `{id}-deleted-*` on disk.
CREATE TABLE servers (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id      INTEGER NOT NULL REFERENCES users(id),
    name          TEXT NOT NULL,
    host          TEXT NOT NULL,
    status        TEXT NOT NULL,
    container_id  TEXT,
    data_exists   INTEGER NOT NULL DEFAULT 0,
    cpus          REAL,
    memory_mb     INTEGER,
    last_error    TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    deleted_at    TEXT,
    purge_after   TEXT
);
CREATE INDEX servers_owner ON servers(owner_id);
CREATE INDEX servers_host ON servers(host);

-- Jobs outlive their server (a purge removes the server row, not its
-- history), so server_id is not a foreign key.
--   origin:       'api' for requests, 'scheduler' for auto-purge and orphan
--                 removal, 'nats' for jobs an operator published by hand
--   result:       JSON of what the action produced (cleanup: space reclaimed)
--   payload:      the exact JSON published, so the outbox republishes it unchanged
--   published_at: NULL until JetStream acknowledged the publish (the outbox)
CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    server_id     INTEGER NOT NULL,
    action        TEXT NOT NULL,
    host          TEXT NOT NULL,
    status        TEXT NOT NULL,
    origin        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    result        TEXT,
    payload       TEXT NOT NULL,
    requested_by  INTEGER,
    created_at    TEXT NOT NULL,
    published_at  TEXT,
    started_at    TEXT,
    finished_at   TEXT
);
CREATE INDEX jobs_server ON jobs(server_id, created_at);
CREATE INDEX jobs_unpublished ON jobs(created_at) WHERE published_at IS NULL;
CREATE INDEX jobs_in_flight ON jobs(server_id) WHERE status IN ('queued', 'running');
-- The database itself refuses a second in-flight request for one server, so
-- two racing requests cannot both be accepted. Jobs published by hand are
-- recorded as they are reported, so they are outside the rule.
CREATE UNIQUE INDEX jobs_one_request_in_flight ON jobs(server_id)
    WHERE origin != 'nats' AND status IN ('queued', 'running');

-- The containers inside each running server (seed 003 §3.4), replaced by
-- each monitor report; rows not refreshed for five minutes are dropped by
-- the stale cleanup.
CREATE TABLE server_containers (
    server_id   INTEGER NOT NULL,
    docker_id   TEXT NOT NULL,
    image       TEXT NOT NULL,
    names       TEXT NOT NULL,
    state       TEXT NOT NULL,
    status      TEXT NOT NULL,
    ports       TEXT NOT NULL,
    labels      TEXT NOT NULL,
    created     TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (server_id, docker_id)
);
CREATE INDEX server_containers_updated ON server_containers(updated_at);
