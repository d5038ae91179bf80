-- The authenticated caller whose command started the flow (CONTRACT.md: header x-actor-id).
-- Only the user id is stored: never the token.
ALTER TABLE outbox ADD COLUMN actor_id TEXT;
