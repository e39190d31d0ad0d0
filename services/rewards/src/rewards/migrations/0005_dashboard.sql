-- The dashboard's top referrers for any date range without summing every day of every code.
--
-- stats_daily_code (0004) is rolled up once more into aligned spans of 3, 9, 27 and 81 days
-- (a span starts on a day number, counted from 1970-01-01, divisible by its length). Any
-- range is covered by single days and such spans (rewards/stats.py, covering_spans): at most
-- 10 pieces for 90 days (8 on average) and 16 for a year, so ranking 5,000 active codes over
-- 90 days reads ~40,000 rows instead of 450,000. Powers of 3 balance reads against writes:
-- a write touches four span rows per code and day it changes. Kept exact by triggers, in the
-- transaction of the change.

CREATE TABLE stats_code_spans (
    program_id   text NOT NULL,
    span_days    smallint NOT NULL CHECK (span_days IN (3, 9, 27, 81)),
    first_day    date NOT NULL,
    code         text NOT NULL,
    clicks       bigint NOT NULL DEFAULT 0,
    conversions  bigint NOT NULL DEFAULT 0,
    attributed   bigint NOT NULL DEFAULT 0,
    revenue      bigint NOT NULL DEFAULT 0,
    -- Covering, as stats_daily_code's: settled spans are read by an index-only scan.
    PRIMARY KEY (program_id, span_days, first_day, code) INCLUDE (clicks, attributed, revenue)
);

-- Kept from hourly_stats by statement-level triggers: one grouped upsert per statement (the
-- stats store writes a whole batch in one), in key order, so the cost is per code and span
-- touched, not per hourly row. Inserted rows add themselves; updated rows add new − old.
CREATE FUNCTION stats_code_spans_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stats_code_spans AS s
           (program_id, span_days, first_day, code, clicks, conversions, attributed, revenue)
    SELECT program_id, span,
           DATE '1970-01-01' + (((hour AT TIME ZONE 'UTC')::date - DATE '1970-01-01') / span)
                               * span,
           code, sum(clicks), sum(conversions), sum(attributed), sum(revenue)
    FROM new_rows, unnest(ARRAY[3, 9, 27, 81]) AS span
    GROUP BY 1, 2, 3, 4
    HAVING sum(clicks) <> 0 OR sum(conversions) <> 0 OR sum(attributed) <> 0
        OR sum(revenue) <> 0
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (program_id, span_days, first_day, code) DO UPDATE SET
        clicks = s.clicks + excluded.clicks,
        conversions = s.conversions + excluded.conversions,
        attributed = s.attributed + excluded.attributed,
        revenue = s.revenue + excluded.revenue;
    RETURN NULL;
END $$;

CREATE FUNCTION stats_code_spans_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stats_code_spans AS s
           (program_id, span_days, first_day, code, clicks, conversions, attributed, revenue)
    SELECT program_id, span,
           DATE '1970-01-01' + (((hour AT TIME ZONE 'UTC')::date - DATE '1970-01-01') / span)
                               * span,
           code, sum(clicks), sum(conversions), sum(attributed), sum(revenue)
    FROM (SELECT program_id, code, hour, clicks, conversions, attributed, revenue FROM new_rows
          UNION ALL
          SELECT program_id, code, hour, -clicks, -conversions, -attributed, -revenue
          FROM old_rows) AS change,
         unnest(ARRAY[3, 9, 27, 81]) AS span
    GROUP BY 1, 2, 3, 4
    HAVING sum(clicks) <> 0 OR sum(conversions) <> 0 OR sum(attributed) <> 0
        OR sum(revenue) <> 0
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (program_id, span_days, first_day, code) DO UPDATE SET
        clicks = s.clicks + excluded.clicks,
        conversions = s.conversions + excluded.conversions,
        attributed = s.attributed + excluded.attributed,
        revenue = s.revenue + excluded.revenue;
    RETURN NULL;
END $$;

-- Created before the backfill: the triggers' lock waits for running writers and holds new
-- ones until this migration commits, so no change is counted twice or missed.
CREATE TRIGGER stats_code_spans_inserted AFTER INSERT ON hourly_stats
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION stats_code_spans_inserted();
CREATE TRIGGER stats_code_spans_updated AFTER UPDATE ON hourly_stats
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION stats_code_spans_updated();

INSERT INTO stats_code_spans (program_id, span_days, first_day, code, clicks, conversions,
                              attributed, revenue)
SELECT program_id, span, DATE '1970-01-01' + ((day - DATE '1970-01-01') / span) * span, code,
       sum(clicks), sum(conversions), sum(attributed), sum(revenue)
FROM stats_daily_code, unnest(ARRAY[3, 9, 27, 81]) AS span
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4;  -- a span's rows on neighbouring pages: one range reads few of them
