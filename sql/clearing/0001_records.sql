-- Clearing schema, migration 1: the forwarded journal records, partitioned by service day, and
-- each depot's forwarding mark. Applied once, in order, by clearing::schema::migrate (the
-- version is kept in clearing_migrations). docs/clearing.md describes every column.

-- One row per journal record (docs/journal.md), keyed like the upload: (terminal, epoch, seq).
-- service_day is a function of the record's own time and offset (the local date 04:00 to
-- 04:00), so a record always lands in the same partition and the key stays unique across
-- partitions. Integers read as unsigned from the record (u32, u64 epoch) are stored in the
-- next wider signed type, except the epoch: its 64 bits are kept as the bigint of the same
-- bits (two's complement).
CREATE TABLE records (
    service_day     date     NOT NULL,
    terminal        text     NOT NULL,
    epoch           bigint   NOT NULL,
    seq             bigint   NOT NULL,
    depot           text     NOT NULL,
    kind            smallint NOT NULL,   -- 1 card purchase, 2 recovered by proof, 3 ride code, 4 QuickPass
    category        smallint NOT NULL,
    at_unix_s       bigint   NOT NULL,
    utc_offset_min  smallint NOT NULL,
    route           integer  NOT NULL,
    fare_fen        bigint   NOT NULL,
    balance_fen     bigint,              -- purse balance after; NULL: none (ride code, QuickPass)
    card_no         text     NOT NULL,   -- 20 digits; the card linked to a ride code; '' for QuickPass
    card_counter    integer  NOT NULL,   -- the card's offline transaction counter
    psam_seq        bigint   NOT NULL,   -- the PSAM's terminal transaction number
    tac             bytea    NOT NULL,   -- 4 bytes
    terminal_no     text     NOT NULL,   -- the PSAM's terminal number, 12 hex digits
    channel         integer,             -- ride code channel; NULL otherwise
    account         text,                -- ride code account CHANNEL:ACCOUNT, QuickPass masked PAN
    qr_counter      bigint,
    qr_generated_at bigint,
    pan_token       bytea,               -- QuickPass keyed PAN token (8 bytes)
    atc             integer,             -- QuickPass application transaction counter
    cryptogram      bytea,               -- QuickPass application cryptogram (8 bytes)
    raw             bytea    NOT NULL,   -- the record's 96 bytes as the bus wrote them
    forwarded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (terminal, epoch, seq, service_day)
) PARTITION BY RANGE (service_day);

CREATE INDEX records_card ON records (card_no, card_counter) WHERE kind IN (1, 2);
CREATE INDEX records_psam ON records (terminal_no, psam_seq) WHERE kind IN (1, 2);
CREATE INDEX records_account ON records (account, at_unix_s) WHERE kind IN (3, 4);

-- How far each depot has forwarded each journal: every record of (terminal, epoch) with seq up
-- to through_seq that the depot held when it forwarded is in records. Written in the same
-- transaction as the records it covers, so a crash of either side leaves mark and records in
-- step.
CREATE TABLE forward_marks (
    depot       text   NOT NULL,
    terminal    text   NOT NULL,
    epoch       bigint NOT NULL,
    through_seq bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (depot, terminal, epoch)
);

-- The partition of records for service day d, made when first needed. The name is formatted
-- here, from a date, never from text sent by a client.
CREATE FUNCTION clearing_ensure_day(d date) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    part text := format('records_%s', to_char(d, 'YYYYMMDD'));
BEGIN
    -- Two forwarders meeting a new day make its partition once.
    PERFORM pg_advisory_xact_lock(hashtext('clearing_ensure_day'));
    IF to_regclass(part) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF records FOR VALUES FROM (%L) TO (%L)',
                       part, d, d + 1);
    END IF;
END $$;
