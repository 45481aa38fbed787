-- weerwal schema 2: the compliance state every node shares. `data` is the
-- flag as JSON text (a row edited by hand into something unreadable is
-- skipped with one log line, never a crash).
CREATE TABLE compliance_flags (
    key         text PRIMARY KEY,   -- "user:jdevries" or "client:10.1.2.3"
    data        text NOT NULL,      -- {"app":…,"host":…,"since":…,"since_unix":…,"seq":…}
    node        text NOT NULL,      -- where it was raised
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE device_links (
    cookie      text PRIMARY KEY,   -- the gateway's device cookie
    keys        text NOT NULL,      -- JSON array of subject keys
    node        text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Who was last seen at an address on a proxy (authenticated users only),
-- so a gateway on another node can name the user of that session.
CREATE TABLE live_sessions (
    address     text NOT NULL,
    username    text NOT NULL,
    node        text NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (address, username)
);
