-- Providers speak one of several APIs: a generic HTTP JSON API (the original kind), Twilio
-- Messaging, Twilio Voice and the WhatsApp Cloud API. For the generic kind `endpoint` is the
-- whole URL; for the others it is the API's base URL (the real host by default, the
-- simulator in tests).
ALTER TABLE providers DROP CONSTRAINT providers_kind_check;
ALTER TABLE providers ADD CONSTRAINT providers_kind_check
    CHECK (kind IN ('http', 'twilio_sms', 'twilio_voice', 'whatsapp'));

-- Non-secret per-kind settings (Twilio `from`, WhatsApp `phone_number_id`, a generic body
-- template, …); secrets stay in the write-only `credentials`. Both are validated by
-- herald_shared::provider_config, the one definition the admin and the workers share.
ALTER TABLE providers ADD COLUMN settings jsonb NOT NULL DEFAULT '{}'::jsonb
    CONSTRAINT providers_settings_object CHECK (jsonb_typeof(settings) = 'object');
