-- Authentication (CONTRACT.md, "Authentication and authorization").

-- Every account is a customer unless the user service made it staff (SHOP_ADMIN_EMAIL).
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'customer'
    CHECK (role IN ('customer', 'staff'));

-- The ES256 keys that sign access tokens. Only this service ever reads private_key; the
-- other services get the public halves from the JWK Set. The newest key without retired_at
-- signs; a retired key stays published until its last token has expired, then is deleted.
CREATE TABLE signing_keys (
    -- RFC 7638 thumbprint of the public key: the `kid` of the tokens it signs.
    kid         TEXT        PRIMARY KEY,
    -- PKCS#8 DER of the P-256 private key.
    private_key BYTEA       NOT NULL,
    -- The public key's coordinates, base64url (the JWK's x and y).
    public_x    TEXT        NOT NULL,
    public_y    TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    retired_at  TIMESTAMPTZ
);

-- Failed logins per email (lower-cased), for the throttling: kept in the database so it
-- holds across restarts and replicas. A row is also written, before the password is checked,
-- for every attempt in progress, and removed by a successful login.
CREATE TABLE login_failures (
    id        BIGSERIAL   PRIMARY KEY,
    email_key TEXT        NOT NULL,
    failed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_email ON login_failures (email_key, failed_at);
