-- Programmes, referrers, rewards, the append-only ledger, the transactional outbox and the
-- processed-event ids that make every consumed event take effect exactly once.

CREATE TABLE programs (
    id                       text PRIMARY KEY,
    name                     text NOT NULL,
    landing_url              text NOT NULL,
    currency                 char(3) NOT NULL,
    locale                   text NOT NULL DEFAULT 'en',
    attribution_window_days  int NOT NULL DEFAULT 30,
    attribution_model        text NOT NULL DEFAULT 'last_click'
                             CHECK (attribution_model IN ('last_click', 'first_click')),
    code_only_attribution    boolean NOT NULL DEFAULT true,
    new_customers_only       boolean NOT NULL DEFAULT true,
    hold_period              text NOT NULL DEFAULT 'P14D',
    min_order_amount         bigint NOT NULL DEFAULT 0 CHECK (min_order_amount >= 0),
    referrer_reward          jsonb,
    friend_reward            jsonb,
    tiers                    jsonb NOT NULL DEFAULT '[]',
    caps                     jsonb NOT NULL DEFAULT '{}',
    fraud                    jsonb NOT NULL DEFAULT '{}',
    marketer_emails          text[] NOT NULL DEFAULT '{}',
    active                   boolean NOT NULL DEFAULT true,
    publishable_key          text NOT NULL UNIQUE,
    secret_key_hash          text NOT NULL UNIQUE,
    version                  int NOT NULL DEFAULT 1,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE referrers (
    id           text PRIMARY KEY,
    program_id   text NOT NULL REFERENCES programs (id),
    external_id  text NOT NULL,
    email        text NOT NULL,
    name         text,
    locale       text,
    code         text NOT NULL UNIQUE,
    active       boolean NOT NULL DEFAULT true,
    version      int NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (program_id, external_id)
);

-- Every conversion attribution decided, attributed or not (dedupe + stats).
CREATE TABLE referral_decisions (
    program_id     text NOT NULL,
    conversion_id  text NOT NULL,
    outcome        text NOT NULL CHECK (outcome IN ('attributed', 'rejected')),
    reason         text,
    referrer_id    text,
    code           text,
    channel        text,
    order_amount   bigint NOT NULL,
    currency       char(3) NOT NULL,
    converted_at   timestamptz NOT NULL,
    decided_at     timestamptz NOT NULL,
    event_id       text NOT NULL,
    PRIMARY KEY (program_id, conversion_id)
);

CREATE TABLE rewards (
    id                text PRIMARY KEY,
    program_id        text NOT NULL REFERENCES programs (id),
    referrer_id       text NOT NULL REFERENCES referrers (id),
    beneficiary       text NOT NULL CHECK (beneficiary IN ('referrer', 'friend')),
    conversion_id     text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('cash', 'credit', 'discount', 'points')),
    amount            bigint NOT NULL CHECK (amount >= 0),
    currency          char(3) NOT NULL,
    status            text NOT NULL
                      CHECK (status IN ('pending', 'in_review', 'approved', 'rejected', 'reversed')),
    available_at      timestamptz NOT NULL,
    expires_after     text,
    recipient_id      text,
    recipient_email   text,
    recipient_name    text,
    recipient_locale  text,
    order_amount      bigint NOT NULL,
    channel           text,
    fraud_signals     jsonb NOT NULL DEFAULT '[]',
    reason            text,
    source_event_id   text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (program_id, conversion_id, beneficiary)
);
CREATE INDEX rewards_due ON rewards (available_at) WHERE status = 'pending';
CREATE INDEX rewards_by_program ON rewards (program_id, status, created_at, id);
CREATE INDEX rewards_by_referrer ON rewards (referrer_id, status);

-- Money that became payable (credit) or was taken back (clawback, negative). Never edited.
CREATE TABLE ledger_entries (
    id           bigserial PRIMARY KEY,
    reward_id    text NOT NULL REFERENCES rewards (id),
    program_id   text NOT NULL,
    referrer_id  text NOT NULL,
    beneficiary  text NOT NULL,
    entry_type   text NOT NULL CHECK (entry_type IN ('credit', 'clawback')),
    kind         text NOT NULL,
    amount       bigint NOT NULL,
    currency     char(3) NOT NULL,
    expires_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (reward_id, entry_type)
);
CREATE INDEX ledger_by_referrer ON ledger_entries (referrer_id, kind);

CREATE FUNCTION ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only: write a clawback entry instead';
END $$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();

CREATE TABLE processed_events (
    event_id      text PRIMARY KEY,
    consumer      text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now()
);

-- Transactional outbox: written in the same transaction as the change it announces.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    topic         text NOT NULL,
    key           text NOT NULL,
    value         bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
