-- Registered users. The password is stored only as an argon2id PHC string.
CREATE TABLE users (
    user_id       UUID        PRIMARY KEY,
    email         TEXT        NOT NULL,
    name          TEXT        NOT NULL,
    password_hash TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

-- Email addresses are unique case-insensitively (CONTRACT.md: ALREADY_EXISTS).
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
