-- Clearing schema, migration 2: the clearing run's results, by service day, and the TAC
-- computed in the database with pgcrypto (docs/clearing.md). Every result table is rewritten
-- for its day in one transaction by `clearing run --day D`, so a run is repeatable.

CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- 8 bytes as a bigint (two's complement).
CREATE FUNCTION clearing_b2i(b bytea) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT ('x' || encode(b, 'hex'))::bit(64)::bigint $$;

-- The card's TAC key (src/card/crypto.rs): DTK = 3DES_master(D) || 3DES_master(NOT D), D the
-- last 8 bytes of the card number, and the key is DTK_left XOR DTK_right. A double-length
-- 3DES key K1 K2 is given to pgcrypto as K1 K2 K1 (its 3des is EDE3).
CREATE FUNCTION clearing_tac_key(master bytea, card_no text) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
    SELECT int8send(clearing_b2i(encrypt(d, k, '3des-ecb/pad:none'))
                    # clearing_b2i(encrypt(int8send(~clearing_b2i(d)), k, '3des-ecb/pad:none')))
    FROM (SELECT substring(decode(card_no, 'hex') FROM 3 FOR 8) AS d,
                 master || substring(master FROM 1 FOR 8) AS k) s
    $$;

-- The TAC of a purchase (JT/T 978, PBOC purse): single-DES CBC-MAC (ISO 9797-1 algorithm 1,
-- padding method 2, zero IV, leftmost 4 bytes) under the TAC key over amount(4) || type 09 ||
-- terminal number(6) || PSAM number(4) || local date and time (BCD, 7). Single DES is EDE3
-- with one key thrice (OpenSSL 3 keeps DES itself in its legacy provider).
CREATE FUNCTION clearing_tac(tac_key bytea, fare_fen bigint, terminal_no text, psam_seq bigint,
                             at_unix_s bigint, utc_offset_min smallint) RETURNS bytea
    LANGUAGE sql STABLE STRICT PARALLEL SAFE
    AS $$
    SELECT substring(encrypt(
        substring(int8send(fare_fen) FROM 5) || '\x09'::bytea || decode(terminal_no, 'hex')
        || substring(int8send(psam_seq) FROM 5)
        || decode(to_char(to_timestamp(at_unix_s + utc_offset_min * 60) AT TIME ZONE 'UTC',
                          'YYYYMMDDHH24MISS'), 'hex')
        || '\x8000'::bytea,
        tac_key || tac_key || tac_key, '3des-cbc/pad:none') FROM 17 FOR 4)
    $$;

-- One row a cleared day: when, and the run's summary (JSON, as `clearing run` prints it).
CREATE TABLE clearing_days (
    service_day date PRIMARY KEY,
    cleared_at  timestamptz NOT NULL DEFAULT now(),
    summary     jsonb NOT NULL
);

-- Purse records whose TAC does not verify (or whose issuer has no key): forged or altered.
CREATE TABLE tac_failures (
    service_day date   NOT NULL,
    terminal    text   NOT NULL,
    epoch       bigint NOT NULL,
    seq         bigint NOT NULL,
    card_no     text   NOT NULL,
    reason      text   NOT NULL,   -- 'mismatch' | 'no_issuer_key'
    PRIMARY KEY (service_day, terminal, epoch, seq)
);

-- Counter continuity: per card (its offline counter) and per PSAM (terminal number, its
-- transaction number). A gap: counters from_counter..to_counter never seen; a duplicate: one
-- counter on several records (listed).
CREATE TABLE counter_findings (
    service_day  date   NOT NULL,
    subject      text   NOT NULL,  -- 'card' | 'psam'
    subject_id   text   NOT NULL,
    finding      text   NOT NULL,  -- 'gap' | 'duplicate'
    from_counter bigint NOT NULL,
    to_counter   bigint NOT NULL,
    records      text[] NOT NULL   -- terminal/epoch/seq of the records around or at it
);
CREATE INDEX counter_findings_day ON counter_findings (service_day);

-- Grey records (灰记录): debits recovered by proof on the card's next tap, matched with that
-- tap; and debits the card counted that no record shows (a grey record never settled).
CREATE TABLE grey_findings (
    service_day  date   NOT NULL,
    finding      text   NOT NULL,  -- 'recovered' | 'unsettled'
    card_no      text   NOT NULL,
    card_counter bigint NOT NULL,
    record       text,             -- the recovered record, terminal/epoch/seq
    recovered_by text,             -- the tap that recovered it
    delay_s      bigint,           -- from the debit to its recovery
    terminal_no  text              -- the PSAM of the record next to it
);
CREATE INDEX grey_findings_day ON grey_findings (service_day);

-- Every record of the day with what it is charged: once per claim (a ride code or QuickPass
-- cryptogram seen on several buses, a card counter seen twice), nothing for a failed TAC,
-- pay-after-ride media capped daily and weekly per account in boarding order.
CREATE TABLE charges (
    service_day       date   NOT NULL,
    terminal          text   NOT NULL,
    epoch             bigint NOT NULL,
    seq               bigint NOT NULL,
    medium            text   NOT NULL,  -- 'card' | 'ride_code' | 'quickpass'
    counterparty_kind text   NOT NULL,  -- 'issuer' | 'channel' | 'acquirer'
    counterparty      text   NOT NULL,
    account           text   NOT NULL,  -- card number, ride-code account, QuickPass token
    route             integer NOT NULL,
    at_unix_s         bigint NOT NULL,
    fare_fen          bigint NOT NULL,
    duplicate_of      text,             -- the first claim, terminal/epoch/seq
    tac_failed        boolean NOT NULL,
    capped_fen        bigint NOT NULL,  -- taken off by the caps
    charged_fen       bigint NOT NULL,
    PRIMARY KEY (service_day, terminal, epoch, seq)
);

-- Per pay-after-ride account and day: what the caps took off and on how many rides.
CREATE TABLE caps_applied (
    service_day   date   NOT NULL,
    account       text   NOT NULL,
    rides         bigint NOT NULL,
    fare_fen      bigint NOT NULL,
    charged_fen   bigint NOT NULL,
    capped_fen    bigint NOT NULL,
    rides_capped  bigint NOT NULL,
    PRIMARY KEY (service_day, account)
);

-- Totals per counterparty ('issuer', 'channel', 'acquirer') and per route ('route').
CREATE TABLE settlement (
    service_day  date   NOT NULL,
    kind         text   NOT NULL,
    counterparty text   NOT NULL,
    records      bigint NOT NULL,
    fare_fen     bigint NOT NULL,
    charged_fen  bigint NOT NULL,
    PRIMARY KEY (service_day, kind, counterparty)
);
