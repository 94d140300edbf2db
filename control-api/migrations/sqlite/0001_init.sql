-- Self-scan results. Portable SQL: no SQLite-only syntax (runs unchanged on PostgreSQL).
-- Times: created_at_ms in Unix milliseconds (ordering), the rest in Unix seconds.
-- Booleans are INTEGER 0/1.
CREATE TABLE scans (
    id              TEXT PRIMARY KEY,
    ip              TEXT NOT NULL,
    scan_type       TEXT NOT NULL,
    status          TEXT NOT NULL,
    submitted       INTEGER NOT NULL DEFAULT 0,
    engine_done     INTEGER NOT NULL DEFAULT 0,
    queue_position  INTEGER,
    chunks_complete INTEGER NOT NULL DEFAULT 0,
    total_chunks    INTEGER NOT NULL DEFAULT 0,
    fail_reason     TEXT,
    ptr_record      TEXT,
    duration_ms     BIGINT,
    created_at_ms   BIGINT NOT NULL,
    completed_at    BIGINT,
    expires_at      BIGINT NOT NULL
);
CREATE INDEX scans_by_target ON scans (ip, scan_type, created_at_ms);
CREATE INDEX scans_by_status ON scans (status);
CREATE INDEX scans_by_expiry ON scans (expires_at);

-- Open and filtered ports of a scan (closed ports are only counted by the engine).
CREATE TABLE scan_ports (
    scan_id TEXT NOT NULL REFERENCES scans (id) ON DELETE CASCADE,
    port    INTEGER NOT NULL,
    state   TEXT NOT NULL,
    banner  TEXT,
    PRIMARY KEY (scan_id, port)
);

-- X-Callback-Url webhooks: pending, delivered or failed.
CREATE TABLE callbacks (
    scan_id  TEXT NOT NULL REFERENCES scans (id) ON DELETE CASCADE,
    url      TEXT NOT NULL,
    state    TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scan_id, url)
);
