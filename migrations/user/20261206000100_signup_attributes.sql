-- What a sign-up may say besides the display name (docs/contract.md, "Versions of an event"):
-- the name in parts (published in user.created.v2) and free-form attributes (published in
-- user.created and user.created.v2). Existing users have none.
ALTER TABLE users ADD COLUMN given_name TEXT;
ALTER TABLE users ADD COLUMN family_name TEXT;
ALTER TABLE users ADD COLUMN metadata JSONB NOT NULL DEFAULT '{}';
