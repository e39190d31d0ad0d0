-- Rules and fraud checks: milestone bonuses as rewards of their own, the referrers' known IP
-- hashes and devices, and running totals that make tiers, caps and the programme budget
-- exact. The totals are written by a trigger in the transaction of the reward change they
-- count, so a rejection or reversal by any code path gives its room back at once.

-- A conversion may earn the referrer its referral reward and a milestone bonus.
ALTER TABLE rewards
    ADD COLUMN purpose text NOT NULL DEFAULT 'referral'
        CHECK (purpose IN ('referral', 'milestone')),
    ADD COLUMN milestone int,
    ADD CONSTRAINT rewards_milestone_numbered CHECK ((purpose = 'milestone') = (milestone IS NOT NULL));
ALTER TABLE rewards DROP CONSTRAINT rewards_program_id_conversion_id_beneficiary_key;
ALTER TABLE rewards ADD CONSTRAINT rewards_one_per_purpose
    UNIQUE (program_id, conversion_id, beneficiary, purpose);
-- One standing bonus per referrer and milestone; a rejected or reversed one can be earned
-- again when the count reaches the milestone again.
CREATE UNIQUE INDEX rewards_one_milestone ON rewards (referrer_id, milestone)
    WHERE purpose = 'milestone' AND status IN ('pending', 'in_review', 'approved');

-- Salted IP hashes (as the tracker hashes buyers' IPs) and device ids of the referrer.
ALTER TABLE referrers
    ADD COLUMN ip_hashes text[] NOT NULL DEFAULT '{}',
    ADD COLUMN device_ids text[] NOT NULL DEFAULT '{}';

-- The velocity check counts a referrer's attributed referrals of the last hour.
CREATE INDEX referral_decisions_velocity ON referral_decisions (referrer_id, converted_at)
    WHERE outcome = 'attributed';

-- Granted (pending, in review, approved) reward amount per programme, both sides.
CREATE TABLE program_budgets (
    program_id  text PRIMARY KEY,
    spent       bigint NOT NULL DEFAULT 0
);

-- Per referrer, its own rewards: granted amount over its lifetime ('all'), per UTC day
-- ('d:YYYY-MM-DD') and month ('m:YYYY-MM') of the decision; successful referrals on 'all'.
CREATE TABLE referrer_totals (
    referrer_id  text NOT NULL,
    period       text NOT NULL,
    amount       bigint NOT NULL DEFAULT 0,
    successful   int NOT NULL DEFAULT 0,
    PRIMARY KEY (referrer_id, period)
);

-- What one reward row adds to the totals. A successful referral (see rewards/rules.py): the
-- referrer's referral reward standing, or refused only because a cap was full.
CREATE FUNCTION reward_granted_amount(r rewards) RETURNS bigint LANGUAGE sql IMMUTABLE AS
    $$ SELECT CASE WHEN r.status IN ('pending', 'in_review', 'approved') THEN r.amount
                   ELSE 0 END $$;
CREATE FUNCTION reward_success(r rewards) RETURNS int LANGUAGE sql IMMUTABLE AS
    $$ SELECT CASE WHEN r.beneficiary = 'referrer' AND r.purpose = 'referral'
                    AND (r.status IN ('pending', 'in_review', 'approved')
                         OR (r.status = 'rejected'
                             AND split_part(coalesce(r.reason, ''), ':', 1) = 'cap_reached'))
                   THEN 1 ELSE 0 END $$;

-- Locks are taken in one order everywhere (budget, then the referrer's 'all', day, month
-- rows), so concurrent deciders, reviewers and reversals never deadlock on the totals.
CREATE FUNCTION reward_totals_add(r rewards, amount bigint, success int) RETURNS void
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF amount <> 0 THEN
        INSERT INTO program_budgets AS b (program_id, spent) VALUES (r.program_id, amount)
        ON CONFLICT (program_id) DO UPDATE SET spent = b.spent + excluded.spent;
    END IF;
    IF r.beneficiary = 'referrer' AND (amount <> 0 OR success <> 0) THEN
        INSERT INTO referrer_totals AS t (referrer_id, period, amount, successful)
        VALUES (r.referrer_id, 'all', amount, success),
               (r.referrer_id, 'd:' || to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
                amount, 0),
               (r.referrer_id, 'm:' || to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM'),
                amount, 0)
        ON CONFLICT (referrer_id, period) DO UPDATE SET
            amount = t.amount + excluded.amount, successful = t.successful + excluded.successful;
    END IF;
END $$;

CREATE FUNCTION reward_totals_track() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    old_amount bigint := 0;
    old_success int := 0;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        old_amount := reward_granted_amount(OLD);
        old_success := reward_success(OLD);
        IF old_amount = reward_granted_amount(NEW) AND old_success = reward_success(NEW)
                AND OLD.created_at = NEW.created_at AND OLD.referrer_id = NEW.referrer_id THEN
            RETURN NULL;  -- e.g. pending → approved: the totals stay as they are
        END IF;
        PERFORM reward_totals_add(OLD, -old_amount, -old_success);
    END IF;
    PERFORM reward_totals_add(NEW, reward_granted_amount(NEW), reward_success(NEW));
    RETURN NULL;
END $$;

-- Existing rewards enter the totals once; the trigger counts everything from now on.
INSERT INTO program_budgets (program_id, spent)
SELECT program_id, sum(reward_granted_amount(r)) FROM rewards r GROUP BY 1;
INSERT INTO referrer_totals (referrer_id, period, amount, successful)
SELECT referrer_id, p.period, sum(reward_granted_amount(r)),
       CASE WHEN p.period = 'all' THEN sum(reward_success(r)) ELSE 0 END
FROM rewards r, LATERAL (VALUES
    ('all'),
    ('d:' || to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')),
    ('m:' || to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM'))) AS p (period)
WHERE r.beneficiary = 'referrer' GROUP BY 1, 2;

CREATE TRIGGER rewards_totals AFTER INSERT OR UPDATE ON rewards
    FOR EACH ROW EXECUTE FUNCTION reward_totals_track();
