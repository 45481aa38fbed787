-- weerwal schema 3: keys every node must share. `device_cookies` signs the
-- gateway's device cookies and the attestation form's token, so a device
-- cookie issued by one gateway node counts at every other. (The CA key
-- never comes here: it is deployed to each node as a file.)
CREATE TABLE cluster_keys (
    name        text PRIMARY KEY,
    value       text NOT NULL,      -- hex
    created_at  timestamptz NOT NULL DEFAULT now()
);
