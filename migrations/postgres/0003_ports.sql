-- A server's published TCP ports (see ../sqlite/0004_ports.sql).
ALTER TABLE servers ADD COLUMN ports TEXT NOT NULL DEFAULT '';
CREATE TABLE server_ports (
    host            TEXT NOT NULL,
    host_port       INTEGER NOT NULL,
    server_id       BIGINT NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    container_port  INTEGER NOT NULL,
    PRIMARY KEY (host, host_port)
);
CREATE INDEX server_ports_server ON server_ports(server_id);
