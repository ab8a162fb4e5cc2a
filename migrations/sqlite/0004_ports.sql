-- A server's published TCP ports (seed 002 "Port Allocation"). `ports` on
-- the server is what its spec carries (`container:host` pairs, comma-
-- separated); `server_ports` holds each allocated host port once per host,
-- so racing creates cannot both take one. They stay while the server is
-- soft-deleted (seed 004: "port allocations preserved until purge") and go
-- with its row at purge (the cascade).
ALTER TABLE servers ADD COLUMN ports TEXT NOT NULL DEFAULT '';
CREATE TABLE server_ports (
    host            TEXT NOT NULL,
    host_port       INTEGER NOT NULL,
    server_id       INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    container_port  INTEGER NOT NULL,
    PRIMARY KEY (host, host_port)
);
CREATE INDEX server_ports_server ON server_ports(server_id);
