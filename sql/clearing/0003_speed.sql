-- Clearing schema, migration 3: forwarding and clearing speed (docs/clearing.md, "Performance").
--
-- Two of migration 1's indexes were never read: the clearing run windows the PSAM numbers and
-- the pay-after-ride accounts over the whole day (a sort, not an index), and every insert
-- paid for them. The card index stays: the grey-record steps look cards up by counter.
DROP INDEX IF EXISTS records_psam;
DROP INDEX IF EXISTS records_account;

-- The partition of records for service day d, made when first needed. The name is formatted
-- here, from a date, never from text sent by a client. The lock is taken only to make a
-- partition: a forwarder whose days exist (every batch but a day's first) holds no lock, so
-- depots forwarding at once do not wait for each other's commits.
CREATE OR REPLACE FUNCTION clearing_ensure_day(d date) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    part text := format('records_%s', to_char(d, 'YYYYMMDD'));
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN;
    END IF;
    -- Two forwarders meeting a new day make its partition once.
    PERFORM pg_advisory_xact_lock(hashtext('clearing_ensure_day'));
    IF to_regclass(part) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF records FOR VALUES FROM (%L) TO (%L)',
                       part, d, d + 1);
    END IF;
END $$;

-- The card's TAC key as one expression (migration 2's had a FROM clause, so PostgreSQL called
-- it as a function, a plan per call, instead of inlining it): same result, DTK_left XOR
-- DTK_right, D the last 8 bytes of the card number.
CREATE OR REPLACE FUNCTION clearing_tac_key(master bytea, card_no text) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
    SELECT int8send(
        clearing_b2i(encrypt(substring(decode(card_no, 'hex') FROM 3 FOR 8),
                             master || substring(master FROM 1 FOR 8), '3des-ecb/pad:none'))
        # clearing_b2i(encrypt(int8send(~clearing_b2i(substring(decode(card_no, 'hex') FROM 3 FOR 8))),
                               master || substring(master FROM 1 FOR 8), '3des-ecb/pad:none')))
    $$;
