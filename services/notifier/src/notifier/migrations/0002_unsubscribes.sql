-- The suppression list: a recipient who unsubscribed from a category of a programme's emails.
CREATE TABLE unsubscribes (
    recipient   text NOT NULL,
    program_id  text NOT NULL,
    category    text NOT NULL CHECK (category IN ('rewards', 'digest')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (recipient, program_id, category)
);

-- An email owed to someone who unsubscribed is kept as 'suppressed': never sent, not failed.
ALTER TABLE notifications DROP CONSTRAINT notifications_state_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_state_check
    CHECK (state IN ('queued', 'sent', 'failed', 'suppressed'));
