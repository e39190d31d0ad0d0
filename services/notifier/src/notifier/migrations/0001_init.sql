-- One row per email the notifier owes: (source event, recipient, template) is its key, so a
-- redelivered event finds its row and sends nothing new.
CREATE TABLE notifications (
    id               text PRIMARY KEY,
    source_event_id  text NOT NULL,
    recipient        text NOT NULL,
    template         text NOT NULL,
    locale           text NOT NULL,
    state            text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sent', 'failed')),
    attempts         int NOT NULL DEFAULT 0,
    message_id       text NOT NULL,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    sent_at          timestamptz,
    UNIQUE (source_event_id, recipient, template)
);
CREATE INDEX notifications_by_state ON notifications (state, created_at);
