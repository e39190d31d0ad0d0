-- Less work per email for PostgreSQL (docs/performance.md, "the notifier's statements,
-- batched"): with one email per statement, 1-3 took a new email's claim and outcome from
-- ~400 to ~300 µs of server CPU on embedded PostgreSQL; batching does the rest.
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

-- 3. New emails claimed together, in one statement (notifier.lanes.ClaimLane): each one is
--    inserted with its attempt counted (no FOR UPDATE read, no second update), then locked
--    with a lock that does not wait, so one busy email never holds up the others of the
--    statement. No other session can hold a new row: a concurrent claim of the same email
--    waits on this insert's key until the statement commits, then finds the row.
--    An email whose row was already there is left out: its caller claims it alone, with
--    claim_notification (migration 0003), which waits for the lock. So is a new row whose
--    lock another session holds (only a collision of lock keys, hashtext being 32 bits):
--    it stays queued and its attempt is counted twice.
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
