-- Accounts (tracker issue 9): a user can be disabled and a token revoked,
-- both without deleting rows, so the activity log keeps naming them; and
-- the activity log itself (seed 003 §3.6, System_RecentActivity).

-- Set: every token of the user is refused (401) until it is cleared.
ALTER TABLE users ADD COLUMN disabled_at TEXT;

-- Set: the token is refused (401) for good.
ALTER TABLE api_tokens ADD COLUMN revoked_at TEXT;
CREATE INDEX api_tokens_user ON api_tokens(user_id);

-- Who did what to what, when, and how it ended: every lifecycle request
-- (accepted or refused), every token and user change, job outcomes.
--   user_id: whose log the entry belongs to (the owner of the server, token
--            or account concerned; the actor when the target is not theirs
--            to see). NULL for entries that concern no user.
--   actor:   the user's email, or `scheduler`, or a worker host
--   action:  `create`, `start` … `force_stop`, `rename`, `token.create`,
--            `token.revoke`, `user.create`, `user.disable`, `user.enable`
--   target:  `server:42`, `token:7`, `user:3` (`server:new` for a refused create)
--   result:  `accepted`, `refused: <code>`, `succeeded`, `failed: <reason>`
-- Not foreign keys: the log outlives purged servers and must cost one
-- INSERT, nothing more.
-- A plain rowid, not AUTOINCREMENT: rows are never deleted, so ids only
-- grow, and every request's entry is written on the writer's hot path,
-- where AUTOINCREMENT's extra sqlite_sequence update cost accept ~15%.
CREATE TABLE activity (
    id       INTEGER PRIMARY KEY,
    at       TEXT NOT NULL,
    user_id  INTEGER,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    result   TEXT NOT NULL,
    detail   TEXT
);
CREATE INDEX activity_user ON activity(user_id, id);
