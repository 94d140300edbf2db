-- PostgreSQL twin of migrations/sqlite/0001_init.sql: the same tables, columns and indexes; every
-- integer is BIGINT (sqlx decodes them as i64 on both backends) and text compares bytewise
-- (COLLATE "C") so ORDER BY matches SQLite's.
-- Self-scan results. Portable SQL: no SQLite-only syntax (runs unchanged on PostgreSQL).
-- Times: created_at_ms in Unix milliseconds (ordering), the rest in Unix seconds.
-- Booleans are BIGINT 0/1.
CREATE TABLE scans (
    id              TEXT COLLATE "C" PRIMARY KEY,
    ip              TEXT COLLATE "C" NOT NULL,
    scan_type       TEXT COLLATE "C" NOT NULL,
    status          TEXT COLLATE "C" NOT NULL,
    submitted       BIGINT NOT NULL DEFAULT 0,
    engine_done     BIGINT NOT NULL DEFAULT 0,
    queue_position  BIGINT,
    chunks_complete BIGINT NOT NULL DEFAULT 0,
    total_chunks    BIGINT NOT NULL DEFAULT 0,
    fail_reason     TEXT COLLATE "C",
    ptr_record      TEXT COLLATE "C",
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
    scan_id TEXT COLLATE "C" NOT NULL REFERENCES scans (id) ON DELETE CASCADE,
    port    BIGINT NOT NULL,
    state   TEXT COLLATE "C" NOT NULL,
    banner  TEXT COLLATE "C",
    PRIMARY KEY (scan_id, port)
);

-- X-Callback-Url webhooks: pending, delivered or failed.
CREATE TABLE callbacks (
    scan_id  TEXT COLLATE "C" NOT NULL REFERENCES scans (id) ON DELETE CASCADE,
    url      TEXT COLLATE "C" NOT NULL,
    state    TEXT COLLATE "C" NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (scan_id, url)
);
