-- Managed scans (issue 4): API tokens, scans of scoped targets, their ports, saved targets
-- with schedules, and alerts. Portable SQL, as 0001. Times in Unix seconds unless `_ms`.

-- Bearer tokens. Only the SHA-256 of the secret is stored; the secret is shown once.
CREATE TABLE api_tokens (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    token_hash     TEXT NOT NULL UNIQUE,
    scope          TEXT NOT NULL,
    monthly_scans  INTEGER NOT NULL,
    max_concurrent INTEGER NOT NULL,
    created_at     BIGINT NOT NULL,
    revoked_at     BIGINT
);

-- Saved targets (seed 001) with an optional re-scan interval.
CREATE TABLE managed_targets (
    id                 TEXT PRIMARY KEY,
    token_id           TEXT NOT NULL REFERENCES api_tokens (id),
    target             TEXT NOT NULL,
    label              TEXT,
    profile            TEXT NOT NULL,
    ports              TEXT,
    interval_secs      BIGINT,
    enabled            INTEGER NOT NULL DEFAULT 1,
    next_run_at        BIGINT,
    webhook_url        TEXT,
    alert_min_severity TEXT,
    alert_email        TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX managed_targets_by_token ON managed_targets (token_id);
CREATE INDEX managed_targets_due ON managed_targets (next_run_at);

-- One managed scan = one engine scan (a CIDR is one multi-host engine scan).
CREATE TABLE managed_scans (
    id              TEXT PRIMARY KEY,
    token_id        TEXT NOT NULL REFERENCES api_tokens (id),
    target_id       TEXT,
    target          TEXT NOT NULL,
    domain          TEXT,
    addresses       TEXT NOT NULL,
    ports           TEXT NOT NULL,
    port_count      BIGINT NOT NULL,
    profile         TEXT NOT NULL,
    status          TEXT NOT NULL,
    submitted       INTEGER NOT NULL DEFAULT 0,
    chunks_complete INTEGER NOT NULL DEFAULT 0,
    total_chunks    INTEGER NOT NULL DEFAULT 0,
    error           TEXT,
    report_key      TEXT NOT NULL,
    grade           TEXT,
    grade_score     INTEGER,
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
    scan_id TEXT NOT NULL REFERENCES managed_scans (id) ON DELETE CASCADE,
    host    TEXT NOT NULL,
    port    INTEGER NOT NULL,
    state   TEXT NOT NULL,
    banner  TEXT,
    PRIMARY KEY (scan_id, host, port)
);

-- Changes between two complete scans of one target.
CREATE TABLE managed_alerts (
    id              TEXT PRIMARY KEY,
    token_id        TEXT NOT NULL REFERENCES api_tokens (id),
    scan_id         TEXT NOT NULL,
    target_id       TEXT,
    target          TEXT NOT NULL,
    host            TEXT NOT NULL,
    port            INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    severity        TEXT NOT NULL,
    message         TEXT NOT NULL,
    old_value       TEXT,
    new_value       TEXT,
    status          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    acknowledged_at BIGINT,
    resolved_at     BIGINT,
    notified        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX managed_alerts_by_token ON managed_alerts (token_id, created_at);
