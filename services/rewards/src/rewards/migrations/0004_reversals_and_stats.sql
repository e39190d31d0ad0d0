-- Reversals and clawbacks; the roll-ups the stats endpoint reads (never raw rewards or
-- decisions). Every aggregate here is written by a trigger, in the transaction of the change
-- it counts, so it is exact whatever code path changed the row.

-- ---------------------------------------------------------------------------------------
-- Reversals (refunds, chargebacks, cancellations: topic referral.reversals)
-- ---------------------------------------------------------------------------------------

-- What a reward was worth when it was created, how it was computed (flat amount or percent
-- of the order), and how much of its order has been reversed so far. ``amount`` stays the
-- reward's current value: a partial reversal lowers it, so an approval credits what is left.
ALTER TABLE rewards
    ADD COLUMN original_amount        bigint,
    ADD COLUMN reward_basis           text CHECK (reward_basis IN ('flat', 'percent')),
    ADD COLUMN reversed_order_amount  bigint NOT NULL DEFAULT 0
                                      CHECK (reversed_order_amount >= 0);

UPDATE rewards w SET
    original_amount = w.amount,
    reward_basis = CASE WHEN (CASE w.beneficiary WHEN 'referrer' THEN p.referrer_reward
                                                 ELSE p.friend_reward END) ->> 'percent' IS NULL
                        THEN 'flat' ELSE 'percent' END
FROM programs p WHERE p.id = w.program_id;

-- Filled at insertion from how the reward was computed, so a later change of the programme
-- does not change how an existing reward is reversed: milestone bonuses are flat; a
-- referral reward follows its side's spec, or for the referrer the tier of this referral
-- (as rewards/rules.py picks it: the highest from_referral reached, if it sets an amount or
-- percent). A writer that knows the basis may set it itself.
CREATE FUNCTION rewards_fill_reversal_basis() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    spec jsonb;
    tiers jsonb;
    tier jsonb;
    nth int;
BEGIN
    NEW.original_amount := coalesce(NEW.original_amount, NEW.amount);
    IF NEW.reward_basis IS NOT NULL THEN
        RETURN NEW;
    END IF;
    IF to_jsonb(NEW) ->> 'purpose' = 'milestone' THEN
        NEW.reward_basis := 'flat';
        RETURN NEW;
    END IF;
    SELECT CASE NEW.beneficiary WHEN 'referrer' THEN p.referrer_reward ELSE p.friend_reward END,
           p.tiers
      INTO spec, tiers FROM programs p WHERE p.id = NEW.program_id;
    IF NEW.beneficiary = 'referrer' AND jsonb_typeof(tiers) = 'array'
            AND jsonb_array_length(tiers) > 0 THEN
        -- The referrer's successful referrals before this one (0003's running totals).
        SELECT coalesce(max(successful), 0) + 1 INTO nth FROM referrer_totals
         WHERE referrer_id = NEW.referrer_id AND period = 'all';
        SELECT t INTO tier FROM jsonb_array_elements(tiers) AS t
         WHERE (t ->> 'from_referral')::int <= nth
         ORDER BY (t ->> 'from_referral')::int DESC LIMIT 1;
        IF tier ->> 'amount' IS NOT NULL OR tier ->> 'percent' IS NOT NULL THEN
            spec := tier;
        END IF;
    END IF;
    NEW.reward_basis := CASE WHEN spec ->> 'percent' IS NULL THEN 'flat' ELSE 'percent' END;
    RETURN NEW;
END $$;
CREATE TRIGGER rewards_reversal_basis BEFORE INSERT ON rewards
    FOR EACH ROW EXECUTE FUNCTION rewards_fill_reversal_basis();

-- Every reversal received, applied or still waiting for the conversion's rewards
-- (attribution slower than the refund). ``amount`` null: the whole order.
CREATE TABLE conversion_reversals (
    event_id       text PRIMARY KEY,
    program_id     text NOT NULL,
    conversion_id  text NOT NULL,
    reason         text NOT NULL,
    amount         bigint CHECK (amount >= 0),
    occurred_at    timestamptz NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now(),
    applied_at     timestamptz,
    outcome        text
);
CREATE INDEX conversion_reversals_by_conversion
    ON conversion_reversals (program_id, conversion_id, occurred_at);
CREATE INDEX conversion_reversals_waiting
    ON conversion_reversals (received_at) WHERE applied_at IS NULL;

CREATE VIEW pending_reversals AS
    SELECT * FROM conversion_reversals WHERE applied_at IS NULL;

-- What each reversal did to each reward: the audit trail of every reduction and clawback.
CREATE TABLE reward_reversals (
    reward_id              text NOT NULL REFERENCES rewards (id),
    reversal_event_id      text NOT NULL REFERENCES conversion_reversals (event_id),
    reversed_order_amount  bigint NOT NULL,
    amount_before          bigint NOT NULL,
    amount_after           bigint NOT NULL,
    clawback               bigint NOT NULL DEFAULT 0,
    outcome                text NOT NULL
                           CHECK (outcome IN ('reversed', 'reduced', 'unchanged', 'ignored')),
    applied_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (reward_id, reversal_event_id)
);

-- The ledger may now hold several clawbacks of one reward (successive partial reversals),
-- each traceable to its reversal event; still one credit per reward.
ALTER TABLE ledger_entries ADD COLUMN source_event_id text;
ALTER TABLE ledger_entries DROP CONSTRAINT IF EXISTS ledger_entries_reward_id_entry_type_key;
CREATE UNIQUE INDEX ledger_one_credit_per_reward ON ledger_entries (reward_id)
    WHERE entry_type = 'credit';
CREATE UNIQUE INDEX ledger_one_clawback_per_reversal ON ledger_entries (reward_id, source_event_id)
    WHERE entry_type = 'clawback';
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entry_sign
    CHECK ((entry_type = 'credit' AND amount >= 0) OR (entry_type = 'clawback' AND amount < 0));

-- ---------------------------------------------------------------------------------------
-- Roll-ups for the stats endpoint (days are UTC dates)
-- ---------------------------------------------------------------------------------------
-- Programme-wide rows are hot (every event of a programme touches today's row), so they are
-- split into a few shards by database session: concurrent writers rarely wait on each other;
-- readers sum the shards.
CREATE FUNCTION rollup_shard() RETURNS smallint LANGUAGE sql STABLE AS
    $$ SELECT (pg_backend_pid() % 8)::smallint $$;

CREATE TABLE stats_daily_channel (
    program_id   text NOT NULL,
    day          date NOT NULL,
    channel      text NOT NULL,
    shard        smallint NOT NULL,
    clicks       bigint NOT NULL DEFAULT 0,
    conversions  bigint NOT NULL DEFAULT 0,
    attributed   bigint NOT NULL DEFAULT 0,
    revenue      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, day, channel, shard)
);

CREATE TABLE stats_daily_code (
    program_id   text NOT NULL,
    day          date NOT NULL,
    code         text NOT NULL,
    clicks       bigint NOT NULL DEFAULT 0,
    conversions  bigint NOT NULL DEFAULT 0,
    attributed   bigint NOT NULL DEFAULT 0,
    revenue      bigint NOT NULL DEFAULT 0,
    -- Covering: top referrers of a range sum these by code with an index-only scan.
    PRIMARY KEY (program_id, day, code) INCLUDE (clicks, attributed, revenue)
);

CREATE TABLE stats_daily_rejections (
    program_id  text NOT NULL,
    day         date NOT NULL,
    reason      text NOT NULL,
    shard       smallint NOT NULL,
    rejected    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, day, reason, shard)
);

-- hourly_stats rows are absolute and only ever replaced by a higher version: the roll-ups
-- add the difference between the new and the old row.
CREATE FUNCTION hourly_stats_roll_up() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d_clicks bigint; d_conversions bigint; d_attributed bigint; d_revenue bigint;
    the_day date := (NEW.hour AT TIME ZONE 'UTC')::date;
    old_rejected jsonb := '{}';
    reason_key text;
    d_rejected bigint;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        d_clicks := NEW.clicks - OLD.clicks;
        d_conversions := NEW.conversions - OLD.conversions;
        d_attributed := NEW.attributed - OLD.attributed;
        d_revenue := NEW.revenue - OLD.revenue;
        old_rejected := OLD.rejected;
    ELSE
        d_clicks := NEW.clicks; d_conversions := NEW.conversions;
        d_attributed := NEW.attributed; d_revenue := NEW.revenue;
    END IF;
    IF d_clicks <> 0 OR d_conversions <> 0 OR d_attributed <> 0 OR d_revenue <> 0 THEN
        INSERT INTO stats_daily_channel AS s
               (program_id, day, channel, shard, clicks, conversions, attributed, revenue)
        VALUES (NEW.program_id, the_day, NEW.channel, rollup_shard(), d_clicks, d_conversions,
                d_attributed, d_revenue)
        ON CONFLICT (program_id, day, channel, shard) DO UPDATE SET
            clicks = s.clicks + excluded.clicks,
            conversions = s.conversions + excluded.conversions,
            attributed = s.attributed + excluded.attributed,
            revenue = s.revenue + excluded.revenue;
        INSERT INTO stats_daily_code AS s
               (program_id, day, code, clicks, conversions, attributed, revenue)
        VALUES (NEW.program_id, the_day, NEW.code, d_clicks, d_conversions, d_attributed,
                d_revenue)
        ON CONFLICT (program_id, day, code) DO UPDATE SET
            clicks = s.clicks + excluded.clicks,
            conversions = s.conversions + excluded.conversions,
            attributed = s.attributed + excluded.attributed,
            revenue = s.revenue + excluded.revenue;
    END IF;
    FOR reason_key IN
        SELECT k FROM jsonb_object_keys(NEW.rejected) AS k
        UNION SELECT k FROM jsonb_object_keys(old_rejected) AS k ORDER BY 1
    LOOP
        d_rejected := coalesce((NEW.rejected ->> reason_key)::bigint, 0)
                      - coalesce((old_rejected ->> reason_key)::bigint, 0);
        IF d_rejected <> 0 THEN
            INSERT INTO stats_daily_rejections AS s (program_id, day, reason, shard, rejected)
            VALUES (NEW.program_id, the_day, reason_key, rollup_shard(), d_rejected)
            ON CONFLICT (program_id, day, reason, shard) DO UPDATE SET
                rejected = s.rejected + excluded.rejected;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
CREATE TRIGGER hourly_stats_roll_up AFTER INSERT OR UPDATE ON hourly_stats
    FOR EACH ROW EXECUTE FUNCTION hourly_stats_roll_up();

-- Rewards by creation day, side, kind and status: counts and current values.
CREATE TABLE reward_daily (
    program_id   text NOT NULL,
    day          date NOT NULL,
    beneficiary  text NOT NULL,
    kind         text NOT NULL,
    status       text NOT NULL,
    shard        smallint NOT NULL,
    rewards      bigint NOT NULL DEFAULT 0,
    amount       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, day, beneficiary, kind, status, shard)
);

-- Standing (pending, in review, approved) reward value per referrer and day, both sides of
-- the referrals they brought: money kinds in minor units, points apart.
CREATE TABLE referrer_reward_daily (
    program_id   text NOT NULL,
    referrer_id  text NOT NULL,
    day          date NOT NULL,
    cost         bigint NOT NULL DEFAULT 0,
    points       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, referrer_id, day)
);

-- Standing rewards per conversion, so "rewarded conversions" counts each conversion once
-- however many sides it rewards, and exactly under concurrent changes of its rewards.
CREATE TABLE conversion_reward_counts (
    program_id     text NOT NULL,
    conversion_id  text NOT NULL,
    standing       int NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, conversion_id)
);

CREATE TABLE rewarded_daily (
    program_id   text NOT NULL,
    day          date NOT NULL,
    shard        smallint NOT NULL,
    conversions  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, day, shard)
);

CREATE FUNCTION reward_is_standing(status text) RETURNS boolean LANGUAGE sql IMMUTABLE AS
    $$ SELECT status IN ('pending', 'in_review', 'approved') $$;

-- Adds one reward row's contribution to reward_daily (sign +1) or removes it (sign -1).
CREATE FUNCTION reward_daily_add(r rewards, sign int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reward_daily AS s
           (program_id, day, beneficiary, kind, status, shard, rewards, amount)
    VALUES (r.program_id, (r.created_at AT TIME ZONE 'UTC')::date, r.beneficiary, r.kind,
            r.status, rollup_shard(), sign, sign * r.amount)
    ON CONFLICT (program_id, day, beneficiary, kind, status, shard) DO UPDATE SET
        rewards = s.rewards + excluded.rewards, amount = s.amount + excluded.amount;
END $$;

CREATE FUNCTION rewards_roll_up() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was boolean := false;
    is_now boolean := reward_is_standing(NEW.status);
    old_value bigint := 0;
    new_value bigint;
    delta int;
    standing_now int;
BEGIN
    -- A reward's programme, referrer, kind and creation time never change; status and
    -- amount do.
    IF TG_OP = 'UPDATE' THEN
        IF OLD.status = NEW.status AND OLD.amount = NEW.amount THEN
            RETURN NULL;
        END IF;
        was := reward_is_standing(OLD.status);
        old_value := CASE WHEN was THEN OLD.amount ELSE 0 END;
        PERFORM reward_daily_add(OLD, -1);
    END IF;
    PERFORM reward_daily_add(NEW, 1);
    new_value := CASE WHEN is_now THEN NEW.amount ELSE 0 END;
    IF new_value <> old_value THEN  -- pending → approved changes nothing here
        INSERT INTO referrer_reward_daily AS s (program_id, referrer_id, day, cost, points)
        VALUES (NEW.program_id, NEW.referrer_id, (NEW.created_at AT TIME ZONE 'UTC')::date,
                CASE WHEN NEW.kind = 'points' THEN 0 ELSE new_value - old_value END,
                CASE WHEN NEW.kind = 'points' THEN new_value - old_value ELSE 0 END)
        ON CONFLICT (program_id, referrer_id, day) DO UPDATE SET
            cost = s.cost + excluded.cost, points = s.points + excluded.points;
    END IF;
    IF was <> is_now THEN
        delta := CASE WHEN is_now THEN 1 ELSE -1 END;
        INSERT INTO conversion_reward_counts AS c (program_id, conversion_id, standing)
        VALUES (NEW.program_id, NEW.conversion_id, delta)
        ON CONFLICT (program_id, conversion_id) DO UPDATE SET standing = c.standing + delta
        RETURNING standing INTO standing_now;
        IF (delta = 1 AND standing_now = 1) OR (delta = -1 AND standing_now = 0) THEN
            INSERT INTO rewarded_daily AS s (program_id, day, shard, conversions)
            VALUES (NEW.program_id, (NEW.created_at AT TIME ZONE 'UTC')::date, rollup_shard(),
                    delta)
            ON CONFLICT (program_id, day, shard) DO UPDATE
                SET conversions = s.conversions + excluded.conversions;
        END IF;
    END IF;
    RETURN NULL;
END $$;
-- Named to fire after rewards_totals (0003; triggers of one event fire in name order): every
-- transaction then takes the budget and referrer-total rows before these roll-up rows, one
-- lock order everywhere.
CREATE TRIGGER rewards_zz_roll_up AFTER INSERT OR UPDATE OF status, amount ON rewards
    FOR EACH ROW EXECUTE FUNCTION rewards_roll_up();

-- Ledger movements by day: money credited and clawed back (minor units; points apart).
CREATE TABLE ledger_daily (
    program_id  text NOT NULL,
    day         date NOT NULL,
    kind        text NOT NULL,
    entry_type  text NOT NULL,
    shard       smallint NOT NULL,
    entries     bigint NOT NULL DEFAULT 0,
    amount      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, day, kind, entry_type, shard)
);

CREATE FUNCTION ledger_roll_up() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_daily AS s (program_id, day, kind, entry_type, shard, entries, amount)
    VALUES (NEW.program_id, (NEW.created_at AT TIME ZONE 'UTC')::date, NEW.kind,
            NEW.entry_type, rollup_shard(), 1, NEW.amount)
    ON CONFLICT (program_id, day, kind, entry_type, shard) DO UPDATE SET
        entries = s.entries + 1, amount = s.amount + excluded.amount;
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_roll_up AFTER INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_roll_up();

-- Existing rows enter the roll-ups once (the triggers count everything from now on).
INSERT INTO stats_daily_channel (program_id, day, channel, shard, clicks, conversions,
                                 attributed, revenue)
SELECT program_id, (hour AT TIME ZONE 'UTC')::date, channel, 0, sum(clicks), sum(conversions),
       sum(attributed), sum(revenue)
FROM hourly_stats GROUP BY 1, 2, 3;
INSERT INTO stats_daily_code (program_id, day, code, clicks, conversions, attributed, revenue)
SELECT program_id, (hour AT TIME ZONE 'UTC')::date, code, sum(clicks), sum(conversions),
       sum(attributed), sum(revenue)
FROM hourly_stats GROUP BY 1, 2, 3;
INSERT INTO stats_daily_rejections (program_id, day, reason, shard, rejected)
SELECT program_id, (hour AT TIME ZONE 'UTC')::date, r.key, 0, sum(r.value::bigint)
FROM hourly_stats, jsonb_each_text(rejected) AS r GROUP BY 1, 2, 3;
INSERT INTO reward_daily (program_id, day, beneficiary, kind, status, shard, rewards, amount)
SELECT program_id, (created_at AT TIME ZONE 'UTC')::date, beneficiary, kind, status, 0, count(*),
       sum(amount)
FROM rewards GROUP BY 1, 2, 3, 4, 5;
INSERT INTO referrer_reward_daily (program_id, referrer_id, day, cost, points)
SELECT program_id, referrer_id, (created_at AT TIME ZONE 'UTC')::date,
       coalesce(sum(amount) FILTER (WHERE kind <> 'points'), 0),
       coalesce(sum(amount) FILTER (WHERE kind = 'points'), 0)
FROM rewards WHERE reward_is_standing(status) GROUP BY 1, 2, 3;
INSERT INTO conversion_reward_counts (program_id, conversion_id, standing)
SELECT program_id, conversion_id, count(*) FROM rewards WHERE reward_is_standing(status)
GROUP BY 1, 2;
INSERT INTO rewarded_daily (program_id, day, shard, conversions)
SELECT program_id, day, 0, count(*) FROM (
    SELECT program_id, conversion_id, (min(created_at) AT TIME ZONE 'UTC')::date AS day
    FROM rewards WHERE reward_is_standing(status) GROUP BY 1, 2) c
GROUP BY 1, 2;
INSERT INTO ledger_daily (program_id, day, kind, entry_type, shard, entries, amount)
SELECT program_id, (created_at AT TIME ZONE 'UTC')::date, kind, entry_type, 0, count(*),
       sum(amount)
FROM ledger_entries GROUP BY 1, 2, 3, 4;
