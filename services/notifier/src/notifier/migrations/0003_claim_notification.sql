-- Taking an email on in one round trip (it was four: record it, read the suppression list,
-- lock it, read it, and a fifth to count the attempt). Called outside any transaction: its
-- statements commit together.
--
-- The lock is a session advisory lock held across the SMTP exchange (no transaction is open
-- meanwhile). The holder may release it in the very statement that writes the outcome,
-- before that statement commits: the next holder reads the row FOR UPDATE, which waits for
-- that write to commit and then reads it (a VOLATILE function's statements each take a fresh
-- snapshot), so it always sees the outcome of the previous holder.
CREATE FUNCTION claim_notification(
    p_id text, p_source_event_id text, p_recipient text, p_template text, p_locale text,
    p_message_id text, p_program_id text, p_category text, p_lock_class int,
    OUT notification notifications, OUT unsubscribed boolean, OUT locked boolean)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO notifications (id, source_event_id, recipient, template, locale, message_id)
    VALUES (p_id, p_source_event_id, p_recipient, p_template, p_locale, p_message_id)
    ON CONFLICT DO NOTHING;
    PERFORM pg_advisory_lock(p_lock_class, hashtext(p_id));
    SELECT * INTO notification FROM notifications n WHERE n.id = p_id FOR UPDATE;
    IF notification.id IS NULL THEN
        PERFORM pg_advisory_unlock(p_lock_class, hashtext(p_id));
        RAISE EXCEPTION 'notification % vanished while it was being claimed', p_id
            USING ERRCODE = 'no_data_found';
    END IF;
    unsubscribed := EXISTS (SELECT 1 FROM unsubscribes u WHERE u.recipient = p_recipient
                            AND u.program_id = p_program_id AND u.category = p_category);
    locked := notification.state = 'queued';
    IF locked AND NOT unsubscribed THEN  -- it goes out now: the attempt is on record first
        UPDATE notifications n SET attempts = n.attempts + 1, last_attempt_at = now()
        WHERE n.id = p_id RETURNING * INTO notification;
    ELSIF NOT locked THEN  -- settled before (sent, failed, suppressed): nothing to guard
        PERFORM pg_advisory_unlock(p_lock_class, hashtext(p_id));
    END IF;
END $$;
