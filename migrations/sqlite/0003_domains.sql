-- A server's domain names (seed 003 §3.5, Hosting_DomainNames), stored in
-- lower case: unique across all servers whatever case they were given in.
-- Removed when their server is deleted (seed 000 §5.2).
CREATE TABLE domains (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    server_id   INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);
CREATE INDEX domains_server ON domains(server_id);
