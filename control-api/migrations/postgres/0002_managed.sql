-- PostgreSQL twin of migrations/sqlite/0002_managed.sql: the same tables, columns and indexes; every
-- integer is BIGINT (sqlx decodes them as i64 on both backends) and text compares bytewise
-- (COLLATE "C") so ORDER BY matches SQLite's.
-- Managed scans (issue 4): API tokens, scans of scoped targets, their ports, saved targets
-- with schedules, and alerts. Portable SQL, as 0001. Times in Unix seconds unless `_ms`.

-- Bearer tokens. Only the SHA-256 of the secret is stored; the secret is shown once.
CREATE TABLE api_tokens (
    id             TEXT COLLATE "C" PRIMARY KEY,
    name           TEXT COLLATE "C" NOT NULL UNIQUE,
    token_hash     TEXT COLLATE "C" NOT NULL UNIQUE,
    scope          TEXT COLLATE "C" NOT NULL,
    monthly_scans  BIGINT NOT NULL,
    max_concurrent BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    revoked_at     BIGINT
);

-- Saved targets (seed 001) with an optional re-scan interval.
CREATE TABLE managed_targets (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    token_id           TEXT COLLATE "C" NOT NULL REFERENCES api_tokens (id),
    target             TEXT COLLATE "C" NOT NULL,
    label              TEXT COLLATE "C",
    profile            TEXT COLLATE "C" NOT NULL,
    ports              TEXT COLLATE "C",
    interval_secs      BIGINT,
    enabled            BIGINT NOT NULL DEFAULT 1,
    next_run_at        BIGINT,
    webhook_url        TEXT COLLATE "C",
    alert_min_severity TEXT COLLATE "C",
    alert_email        TEXT COLLATE "C",
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX managed_targets_by_token ON managed_targets (token_id);
CREATE INDEX managed_targets_due ON managed_targets (next_run_at);

-- One managed scan = one engine scan (a CIDR is one multi-host engine scan).
CREATE TABLE managed_scans (
    id              TEXT COLLATE "C" PRIMARY KEY,
    token_id        TEXT COLLATE "C" NOT NULL REFERENCES api_tokens (id),
    target_id       TEXT COLLATE "C",
    target          TEXT COLLATE "C" NOT NULL,
    domain          TEXT COLLATE "C",
    addresses       TEXT COLLATE "C" NOT NULL,
    ports           TEXT COLLATE "C" NOT NULL,
    port_count      BIGINT NOT NULL,
    profile         TEXT COLLATE "C" NOT NULL,
    status          TEXT COLLATE "C" NOT NULL,
    submitted       BIGINT NOT NULL DEFAULT 0,
    chunks_complete BIGINT NOT NULL DEFAULT 0,
    total_chunks    BIGINT NOT NULL DEFAULT 0,
    error           TEXT COLLATE "C",
    report_key      TEXT COLLATE "C" NOT NULL,
    grade           TEXT COLLATE "C",
    grade_score     BIGINT,
    duration_ms     BIGINT,
    created_at_ms   BIGINT NOT NULL,
    started_at      BIGINT,
    completed_at    BIGINT
);
CREATE INDEX managed_scans_by_token ON managed_scans (token_id, created_at_ms);
CREATE INDEX managed_scans_by_target ON managed_scans (token_id, target, created_at_ms);
CREATE INDEX managed_scans_by_status ON managed_scans (status);

-- Open and filtered ports per host (closed ports are only counted).
CREATE TABLE managed_ports (
    scan_id TEXT COLLATE "C" NOT NULL REFERENCES managed_scans (id) ON DELETE CASCADE,
    host    TEXT COLLATE "C" NOT NULL,
    port    BIGINT NOT NULL,
    state   TEXT COLLATE "C" NOT NULL,
    banner  TEXT COLLATE "C",
    PRIMARY KEY (scan_id, host, port)
);

-- Changes between two complete scans of one target.
CREATE TABLE managed_alerts (
    id              TEXT COLLATE "C" PRIMARY KEY,
    token_id        TEXT COLLATE "C" NOT NULL REFERENCES api_tokens (id),
    scan_id         TEXT COLLATE "C" NOT NULL,
    target_id       TEXT COLLATE "C",
    target          TEXT COLLATE "C" NOT NULL,
    host            TEXT COLLATE "C" NOT NULL,
    port            BIGINT NOT NULL,
    kind            TEXT COLLATE "C" NOT NULL,
    severity        TEXT COLLATE "C" NOT NULL,
    message         TEXT COLLATE "C" NOT NULL,
    old_value       TEXT COLLATE "C",
    new_value       TEXT COLLATE "C",
    status          TEXT COLLATE "C" NOT NULL,
    created_at      BIGINT NOT NULL,
    acknowledged_at BIGINT,
    resolved_at     BIGINT,
    notified        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX managed_alerts_by_token ON managed_alerts (token_id, created_at);
