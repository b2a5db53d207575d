-- Receivers keep a copy of each provider whose webhooks they check (its secrets); a change
-- of what that copy holds notifies them (`herald_shared::provider_changes`), delivered once
-- committed, so a rotated secret checks the very next callback signed with it rather than
-- one after the copy is read again.
CREATE FUNCTION herald_provider_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('herald_providers', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER providers_changed AFTER UPDATE ON providers FOR EACH ROW
WHEN (OLD.credentials IS DISTINCT FROM NEW.credentials
      OR OLD.previous_credentials IS DISTINCT FROM NEW.previous_credentials
      OR OLD.previous_credentials_until IS DISTINCT FROM NEW.previous_credentials_until
      OR OLD.settings IS DISTINCT FROM NEW.settings
      OR OLD.kind IS DISTINCT FROM NEW.kind
      OR OLD.endpoint IS DISTINCT FROM NEW.endpoint
      OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
EXECUTE FUNCTION herald_provider_changed();
