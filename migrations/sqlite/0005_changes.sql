-- The change feed behind GET /v1/events: every new server and job, every
-- status change of either, and every purge, appended by triggers in the
-- transaction that made the change (whatever code path made it), so the
-- feed misses nothing and holds nothing that was rolled back. `id` grows in
-- commit order (SQLite has one writer) and is the SSE event id a client
-- resumes from; `at` is when the change was recorded, and the cleanup
-- schedule drops rows older than api.events_retention_secs, oldest ids
-- first. No index but the id, and no AUTOINCREMENT (its bookkeeping row is
-- written with every insert): each costs every write of a server or job.
-- A rowid is then max + 1, so ids only grow as long as the newest row is
-- never deleted, and the cleanup keeps it.
CREATE TABLE changes (
    id         INTEGER PRIMARY KEY,
    -- PostgreSQL's transaction id (../postgres/0004_changes.sql); one writer
    -- needs none: ids are in commit order.
    tx         INTEGER NOT NULL DEFAULT 0,
    at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    owner_id   INTEGER,
    server_id  INTEGER NOT NULL,
    job_id     TEXT,
    action     TEXT,
    status     TEXT NOT NULL
);

CREATE TRIGGER changes_server_created AFTER INSERT ON servers BEGIN
    INSERT INTO changes (owner_id, server_id, status) VALUES (NEW.owner_id, NEW.id, NEW.status);
END;
CREATE TRIGGER changes_server_status AFTER UPDATE OF status ON servers WHEN NEW.status <> OLD.status BEGIN
    INSERT INTO changes (owner_id, server_id, status) VALUES (NEW.owner_id, NEW.id, NEW.status);
END;
CREATE TRIGGER changes_server_purged AFTER DELETE ON servers BEGIN
    INSERT INTO changes (owner_id, server_id, status) VALUES (OLD.owner_id, OLD.id, 'purged');
END;
CREATE TRIGGER changes_job_created AFTER INSERT ON jobs BEGIN
    INSERT INTO changes (owner_id, server_id, job_id, action, status)
    VALUES ((SELECT owner_id FROM servers WHERE id = NEW.server_id), NEW.server_id, NEW.id, NEW.action, NEW.status);
END;
CREATE TRIGGER changes_job_status AFTER UPDATE OF status ON jobs WHEN NEW.status <> OLD.status BEGIN
    INSERT INTO changes (owner_id, server_id, job_id, action, status)
    VALUES ((SELECT owner_id FROM servers WHERE id = NEW.server_id), NEW.server_id, NEW.id, NEW.action, NEW.status);
END;
