-- The change feed behind GET /v1/events: every new server and job, every
-- status change of either, and every purge, appended by triggers in the
-- transaction that made the change (whatever code path made it), so the
-- feed misses nothing and holds nothing that was rolled back. `id` grows in
-- commit order (SQLite has one writer) and is the SSE event id a client
-- resumes from. Rows older than api.events_retention_secs are dropped by
-- the cleanup schedule.
CREATE TABLE changes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    -- PostgreSQL's transaction id (../postgres/0004_changes.sql); one writer
    -- needs none: ids are in commit order.
    tx         INTEGER NOT NULL DEFAULT 0,
    at         TEXT NOT NULL,
    owner_id   INTEGER,
    server_id  INTEGER NOT NULL,
    job_id     TEXT,
    action     TEXT,
    status     TEXT NOT NULL
);
CREATE INDEX changes_cursor ON changes(tx, id);
CREATE INDEX changes_at ON changes(at);

CREATE TRIGGER changes_server_created AFTER INSERT ON servers BEGIN
    INSERT INTO changes (at, owner_id, server_id, status) VALUES (NEW.updated_at, NEW.owner_id, NEW.id, NEW.status);
END;
CREATE TRIGGER changes_server_status AFTER UPDATE OF status ON servers WHEN NEW.status <> OLD.status BEGIN
    INSERT INTO changes (at, owner_id, server_id, status) VALUES (NEW.updated_at, NEW.owner_id, NEW.id, NEW.status);
END;
CREATE TRIGGER changes_server_purged AFTER DELETE ON servers BEGIN
    INSERT INTO changes (at, owner_id, server_id, status)
    VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), OLD.owner_id, OLD.id, 'purged');
END;
CREATE TRIGGER changes_job_created AFTER INSERT ON jobs BEGIN
    INSERT INTO changes (at, owner_id, server_id, job_id, action, status)
    VALUES (NEW.created_at, (SELECT owner_id FROM servers WHERE id = NEW.server_id), NEW.server_id, NEW.id, NEW.action, NEW.status);
END;
CREATE TRIGGER changes_job_status AFTER UPDATE OF status ON jobs WHEN NEW.status <> OLD.status BEGIN
    INSERT INTO changes (at, owner_id, server_id, job_id, action, status)
    VALUES (COALESCE(NEW.finished_at, NEW.started_at, NEW.created_at),
            (SELECT owner_id FROM servers WHERE id = NEW.server_id), NEW.server_id, NEW.id, NEW.action, NEW.status);
END;
