-- Less work per email for PostgreSQL (docs/performance.md, "the notifier's rows"): on embedded
-- PostgreSQL the claim and the outcome went from ~400 to ~300 µs of server CPU per email.
--
-- 1. The row's id is derived from (source_event_id, recipient, template) (NotificationKey), so
--    the primary key already makes that triple unique: its own unique index was a second,
--    wider copy of the same rule, written on every insert.
-- 2. Nothing reads notifications by state: the index on (state, created_at) made the outcome's
--    update rewrite every index entry of the row. Without an indexed column changing, and
--    with room left on the page (fillfactor), that update is a heap-only one.
ALTER TABLE notifications DROP CONSTRAINT notifications_source_event_id_recipient_template_key;
DROP INDEX notifications_by_state;
ALTER TABLE notifications SET (fillfactor = 80);

-- 3. A new email (the usual case) is inserted with its first attempt already counted: one
--    insert instead of an insert, a row lock and an update. No other session can hold the
--    row: a concurrent claim of the same email waits on this insert's key until it commits,
--    then takes the path below, behind the advisory lock taken here.
--    A row that was there before (a redelivered event, a second worker during a rebalance)
--    is claimed as migration 0003 did: lock, read FOR UPDATE (which waits for the previous
--    holder's outcome to commit), then the suppression list, read after the wait.
CREATE OR REPLACE FUNCTION claim_notification(
    p_id text, p_source_event_id text, p_recipient text, p_template text, p_locale text,
    p_message_id text, p_program_id text, p_category text, p_lock_class int,
    OUT notification notifications, OUT unsubscribed boolean, OUT locked boolean)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    unsubscribed := EXISTS (SELECT 1 FROM unsubscribes u WHERE u.recipient = p_recipient
                            AND u.program_id = p_program_id AND u.category = p_category);
    INSERT INTO notifications (id, source_event_id, recipient, template, locale, message_id,
                               attempts, last_attempt_at)
    VALUES (p_id, p_source_event_id, p_recipient, p_template, p_locale, p_message_id,
            CASE WHEN unsubscribed THEN 0 ELSE 1 END,
            CASE WHEN unsubscribed THEN NULL ELSE now() END)
    ON CONFLICT DO NOTHING
    RETURNING * INTO notification;
    IF FOUND THEN  -- new: it goes out now (or is suppressed), under the lock
        PERFORM pg_advisory_lock(p_lock_class, hashtext(p_id));
        locked := true;
        RETURN;
    END IF;
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

-- 4. New emails claimed together, in one statement (notifier.lanes.ClaimLane): each one is
--    inserted with its attempt counted, then locked with a lock that does not wait, so one
--    busy email never holds up the others of the statement. An email whose row was already
--    there is left out: its caller claims it alone, with claim_notification, which waits
--    for the lock. So is a new row whose lock another session holds (only a collision of
--    lock keys, hashtext being 32 bits): it stays queued and its attempt is counted twice.
CREATE FUNCTION claim_new_notifications(
    p_ids text[], p_source_event_ids text[], p_recipients text[], p_templates text[],
    p_locales text[], p_message_ids text[], p_program_ids text[], p_categories text[],
    p_lock_class int)
RETURNS TABLE (notification notifications, unsubscribed boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    i int;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        unsubscribed := EXISTS (SELECT 1 FROM unsubscribes u
                                WHERE u.recipient = p_recipients[i]
                                  AND u.program_id = p_program_ids[i]
                                  AND u.category = p_categories[i]);
        INSERT INTO notifications (id, source_event_id, recipient, template, locale,
                                   message_id, attempts, last_attempt_at)
        VALUES (p_ids[i], p_source_event_ids[i], p_recipients[i], p_templates[i], p_locales[i],
                p_message_ids[i], CASE WHEN unsubscribed THEN 0 ELSE 1 END,
                CASE WHEN unsubscribed THEN NULL ELSE now() END)
        ON CONFLICT DO NOTHING
        RETURNING * INTO notification;
        IF FOUND AND pg_try_advisory_lock(p_lock_class, hashtext(p_ids[i])) THEN
            RETURN NEXT;
        END IF;
    END LOOP;
END $$;
