-- The stats store: attribution's hourly counts per programme, code and channel
-- (topic referral.stats, event ReferralStatsCounted). Counts are absolute; a row is
-- replaced only by a higher version, so replays and reordering change nothing.
CREATE TABLE hourly_stats (
    program_id   text NOT NULL,
    code         text NOT NULL,
    channel      text NOT NULL,
    hour         timestamptz NOT NULL,
    clicks       bigint NOT NULL DEFAULT 0,
    conversions  bigint NOT NULL DEFAULT 0,
    attributed   bigint NOT NULL DEFAULT 0,
    rejected     jsonb NOT NULL DEFAULT '{}',   -- reason → count
    revenue      bigint NOT NULL DEFAULT 0,     -- attributed order amounts, minor units
    version      bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, code, channel, hour)
);
CREATE INDEX hourly_stats_by_program_hour ON hourly_stats (program_id, hour);
