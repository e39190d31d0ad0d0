-- Rewards inserted by one statement enter the running totals (0003) and the roll-ups (0004)
-- once per statement instead of once per row. The decision worker writes a whole batch of
-- rewards with one INSERT, and the row triggers (six upserts per reward) cost more than the
-- insert itself; grouped, they cost one upsert per budget, referrer period, day and
-- conversion touched.
--
-- The figures are the same: each inserted row adds what the row triggers added (granted
-- amount and successful referral as reward_granted_amount and reward_success define them;
-- the same roll-up rules). So are the locks: budgets, then referrer totals, then the roll-ups,
-- each in key order (a referrer's 'all' row before its day and month rows, as before).
-- Updates (review, approval, reversal) keep their row triggers.

DROP TRIGGER rewards_totals ON rewards;
CREATE TRIGGER rewards_totals AFTER UPDATE ON rewards
    FOR EACH ROW EXECUTE FUNCTION reward_totals_track();
DROP TRIGGER rewards_zz_roll_up ON rewards;
CREATE TRIGGER rewards_zz_roll_up AFTER UPDATE OF status, amount ON rewards
    FOR EACH ROW EXECUTE FUNCTION rewards_roll_up();

CREATE FUNCTION rewards_inserted_totals() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO program_budgets AS b (program_id, spent)
    SELECT program_id, sum(amount) FROM new_rewards
    WHERE status IN ('pending', 'in_review', 'approved') AND amount <> 0
    GROUP BY program_id
    ORDER BY program_id
    ON CONFLICT (program_id) DO UPDATE SET spent = b.spent + excluded.spent;

    INSERT INTO referrer_totals AS t (referrer_id, period, amount, successful)
    SELECT referrer_id, period, sum(granted), sum(success)
    FROM (SELECT r.referrer_id, p.period, g.granted,
                 CASE WHEN p.period = 'all' THEN g.success ELSE 0 END AS success
          FROM new_rewards r
          CROSS JOIN LATERAL (SELECT
              CASE WHEN r.status IN ('pending', 'in_review', 'approved') THEN r.amount
                   ELSE 0 END AS granted,
              CASE WHEN r.purpose = 'referral'
                        AND (r.status IN ('pending', 'in_review', 'approved')
                             OR (r.status = 'rejected'
                                 AND split_part(coalesce(r.reason, ''), ':', 1) = 'cap_reached'))
                   THEN 1 ELSE 0 END AS success) g
          CROSS JOIN LATERAL (VALUES
              ('all'),
              ('d:' || to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')),
              ('m:' || to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM'))) AS p (period)
          WHERE r.beneficiary = 'referrer' AND (g.granted <> 0 OR g.success <> 0)) AS change
    GROUP BY referrer_id, period
    ORDER BY referrer_id, period
    ON CONFLICT (referrer_id, period) DO UPDATE SET
        amount = t.amount + excluded.amount, successful = t.successful + excluded.successful;
    RETURN NULL;
END $$;

CREATE FUNCTION rewards_inserted_roll_up() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    my_shard smallint := rollup_shard();
BEGIN
    INSERT INTO reward_daily AS s
           (program_id, day, beneficiary, kind, status, shard, rewards, amount)
    SELECT program_id, (created_at AT TIME ZONE 'UTC')::date, beneficiary, kind, status,
           my_shard, count(*), sum(amount)
    FROM new_rewards
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (program_id, day, beneficiary, kind, status, shard) DO UPDATE SET
        rewards = s.rewards + excluded.rewards, amount = s.amount + excluded.amount;

    INSERT INTO referrer_reward_daily AS s (program_id, referrer_id, day, cost, points)
    SELECT program_id, referrer_id, (created_at AT TIME ZONE 'UTC')::date,
           coalesce(sum(amount) FILTER (WHERE kind <> 'points'), 0),
           coalesce(sum(amount) FILTER (WHERE kind = 'points'), 0)
    FROM new_rewards
    WHERE reward_is_standing(status) AND amount <> 0
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (program_id, referrer_id, day) DO UPDATE SET
        cost = s.cost + excluded.cost, points = s.points + excluded.points;

    -- A conversion is rewarded from its first standing reward on: counted on the day of the
    -- rewards that made its count leave zero.
    WITH added AS (
        SELECT program_id, conversion_id, count(*) AS n,
               min((created_at AT TIME ZONE 'UTC')::date) AS day
        FROM new_rewards
        WHERE reward_is_standing(status)
        GROUP BY 1, 2
    ), counted AS (
        INSERT INTO conversion_reward_counts AS c (program_id, conversion_id, standing)
        SELECT program_id, conversion_id, n FROM added ORDER BY 1, 2
        ON CONFLICT (program_id, conversion_id) DO UPDATE SET
            standing = c.standing + excluded.standing
        RETURNING program_id, conversion_id, standing
    )
    INSERT INTO rewarded_daily AS s (program_id, day, shard, conversions)
    SELECT a.program_id, a.day, my_shard, count(*)
    FROM counted JOIN added AS a USING (program_id, conversion_id)
    WHERE counted.standing = a.n
    GROUP BY 1, 2
    ORDER BY 1, 2
    ON CONFLICT (program_id, day, shard) DO UPDATE SET
        conversions = s.conversions + excluded.conversions;
    RETURN NULL;
END $$;

-- Fired in name order: the totals before the roll-ups, as the row triggers were.
CREATE TRIGGER rewards_totals_inserted AFTER INSERT ON rewards
    REFERENCING NEW TABLE AS new_rewards FOR EACH STATEMENT
    EXECUTE FUNCTION rewards_inserted_totals();
CREATE TRIGGER rewards_zz_roll_up_inserted AFTER INSERT ON rewards
    REFERENCING NEW TABLE AS new_rewards FOR EACH STATEMENT
    EXECUTE FUNCTION rewards_inserted_roll_up();
