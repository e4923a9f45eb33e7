-- The KPI schema. Every statement is safe on an empty database and on one
-- that the Python service (release 2.0) created and filled: tables it made
-- are kept with their rows, and the steps below add what it lacked.

CREATE TABLE IF NOT EXISTS centers (
    id            SERIAL PRIMARY KEY,
    code          VARCHAR(50)  NOT NULL UNIQUE,
    name          VARCHAR(255) NOT NULL,
    api_key       VARCHAR(255),
    country       VARCHAR(100),
    city          VARCHAR(100),
    is_active     INTEGER      NOT NULL DEFAULT 1,
    registered_at TIMESTAMPTZ  NOT NULL DEFAULT now(),
    last_sync_at  TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS daily_metrics (
    id            SERIAL PRIMARY KEY,
    center_id     INTEGER NOT NULL REFERENCES centers (id),
    date          DATE    NOT NULL,
    total_orders  INTEGER NOT NULL DEFAULT 0,
    total_results INTEGER NOT NULL DEFAULT 0,
    total_pets    INTEGER NOT NULL DEFAULT 0,
    total_owners  INTEGER NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS test_summaries (
    id         SERIAL PRIMARY KEY,
    center_id  INTEGER     NOT NULL REFERENCES centers (id),
    date       DATE        NOT NULL,
    test_code  VARCHAR(50) NOT NULL,
    test_name  VARCHAR(255),
    count      INTEGER     NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS species_summaries (
    id        SERIAL PRIMARY KEY,
    center_id INTEGER      NOT NULL REFERENCES centers (id),
    date      DATE         NOT NULL,
    species   VARCHAR(100) NOT NULL,
    count     INTEGER      NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS breed_summaries (
    id        SERIAL PRIMARY KEY,
    center_id INTEGER      NOT NULL REFERENCES centers (id),
    date      DATE         NOT NULL,
    breed     VARCHAR(255) NOT NULL,
    species   VARCHAR(100),
    count     INTEGER      NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS performance_metrics (
    id                        SERIAL PRIMARY KEY,
    center_id                 INTEGER NOT NULL REFERENCES centers (id),
    date                      DATE    NOT NULL,
    avg_order_processing_time INTEGER,
    peak_hour                 INTEGER,
    peak_hour_orders          INTEGER,
    completion_rate           INTEGER,
    same_day_completion       INTEGER,
    morning_orders            INTEGER NOT NULL DEFAULT 0,
    afternoon_orders          INTEGER NOT NULL DEFAULT 0,
    evening_orders            INTEGER NOT NULL DEFAULT 0,
    night_orders              INTEGER NOT NULL DEFAULT 0,
    created_at                TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS module_metrics (
    id               SERIAL PRIMARY KEY,
    center_id        INTEGER      NOT NULL REFERENCES centers (id),
    date             DATE         NOT NULL,
    module_name      VARCHAR(100) NOT NULL,
    operations_count INTEGER      NOT NULL DEFAULT 0,
    active_users     INTEGER      NOT NULL DEFAULT 0,
    total_revenue    INTEGER,
    avg_transaction  INTEGER,
    created_at       TIMESTAMPTZ  NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS system_usage_metrics (
    id                    SERIAL PRIMARY KEY,
    center_id             INTEGER NOT NULL REFERENCES centers (id),
    date                  DATE    NOT NULL,
    total_active_users    INTEGER NOT NULL DEFAULT 0,
    peak_concurrent_users INTEGER NOT NULL DEFAULT 0,
    avg_session_duration  INTEGER,
    web_access_count      INTEGER NOT NULL DEFAULT 0,
    mobile_access_count   INTEGER NOT NULL DEFAULT 0,
    desktop_access_count  INTEGER NOT NULL DEFAULT 0,
    total_workstations    INTEGER NOT NULL DEFAULT 0,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS payment_method_metrics (
    id                SERIAL PRIMARY KEY,
    center_id         INTEGER     NOT NULL REFERENCES centers (id),
    date              DATE        NOT NULL,
    payment_method    VARCHAR(50) NOT NULL,
    transaction_count INTEGER     NOT NULL DEFAULT 0,
    total_amount      INTEGER,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The old service wrote naive timestamps meaning UTC; make them explicit.
DO $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT table_name, column_name FROM information_schema.columns
        WHERE table_schema = current_schema()
          AND data_type = 'timestamp without time zone'
          AND table_name IN ('centers', 'daily_metrics', 'test_summaries', 'species_summaries',
                             'breed_summaries', 'performance_metrics', 'module_metrics',
                             'system_usage_metrics', 'payment_method_metrics')
    LOOP
        EXECUTE format('ALTER TABLE %I ALTER COLUMN %I TYPE timestamptz USING %I AT TIME ZONE ''UTC''',
                       col.table_name, col.column_name, col.column_name);
    END LOOP;
END $$;

-- A boolean is_active (some old deployments) becomes the 0/1 the API returns.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'centers'
                 AND column_name = 'is_active' AND data_type = 'boolean') THEN
        ALTER TABLE centers ALTER COLUMN is_active DROP DEFAULT;
        ALTER TABLE centers ALTER COLUMN is_active TYPE integer USING is_active::integer;
        ALTER TABLE centers ALTER COLUMN is_active SET DEFAULT 1;
    END IF;
END $$;

-- SQLAlchemy applies a model's `default=` in Python and emits no DEFAULT
-- clause, so old tables may lack the DEFAULT and NOT NULL rules declared
-- above. Without them an insert that names only some columns, such as an
-- event's new day row, stores NULL totals. Existing NULL counts become 0 and
-- NULL times become the adoption time.
DO $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT * FROM (VALUES
            ('centers', 'is_active', '1'), ('centers', 'registered_at', 'now()'),
            ('daily_metrics', 'total_orders', '0'), ('daily_metrics', 'total_results', '0'),
            ('daily_metrics', 'total_pets', '0'), ('daily_metrics', 'total_owners', '0'),
            ('daily_metrics', 'created_at', 'now()'),
            ('test_summaries', 'count', '0'), ('species_summaries', 'count', '0'),
            ('breed_summaries', 'count', '0'),
            ('performance_metrics', 'morning_orders', '0'),
            ('performance_metrics', 'afternoon_orders', '0'),
            ('performance_metrics', 'evening_orders', '0'),
            ('performance_metrics', 'night_orders', '0'),
            ('performance_metrics', 'created_at', 'now()'),
            ('module_metrics', 'operations_count', '0'), ('module_metrics', 'active_users', '0'),
            ('module_metrics', 'created_at', 'now()'),
            ('system_usage_metrics', 'total_active_users', '0'),
            ('system_usage_metrics', 'peak_concurrent_users', '0'),
            ('system_usage_metrics', 'web_access_count', '0'),
            ('system_usage_metrics', 'mobile_access_count', '0'),
            ('system_usage_metrics', 'desktop_access_count', '0'),
            ('system_usage_metrics', 'total_workstations', '0'),
            ('system_usage_metrics', 'created_at', 'now()'),
            ('payment_method_metrics', 'transaction_count', '0'),
            ('payment_method_metrics', 'created_at', 'now()')
        ) AS adopted (table_name, column_name, default_value)
    LOOP
        EXECUTE format('UPDATE %I SET %I = %s WHERE %I IS NULL',
                       col.table_name, col.column_name, col.default_value, col.column_name);
        EXECUTE format('ALTER TABLE %I ALTER COLUMN %I SET DEFAULT %s, ALTER COLUMN %I SET NOT NULL',
                       col.table_name, col.column_name, col.default_value, col.column_name);
    END LOOP;
END $$;

-- Merge duplicate rows that the old service could create, adding counts into
-- the oldest row of each key, then make every natural key unique.
UPDATE daily_metrics AS keep
SET total_orders = merged.orders, total_results = merged.results,
    total_pets = merged.pets, total_owners = merged.owners
FROM (SELECT min(id) AS id, sum(total_orders) AS orders, sum(total_results) AS results,
             sum(total_pets) AS pets, sum(total_owners) AS owners
      FROM daily_metrics GROUP BY center_id, date HAVING count(*) > 1) AS merged
WHERE keep.id = merged.id;
DELETE FROM daily_metrics AS extra USING daily_metrics AS keep
WHERE extra.center_id = keep.center_id AND extra.date = keep.date AND extra.id > keep.id;
CREATE UNIQUE INDEX IF NOT EXISTS daily_metrics_center_day ON daily_metrics (center_id, date);

UPDATE test_summaries AS keep SET count = merged.total
FROM (SELECT min(id) AS id, sum(count) AS total FROM test_summaries
      GROUP BY center_id, date, test_code HAVING count(*) > 1) AS merged
WHERE keep.id = merged.id;
DELETE FROM test_summaries AS extra USING test_summaries AS keep
WHERE extra.center_id = keep.center_id AND extra.date = keep.date
  AND extra.test_code = keep.test_code AND extra.id > keep.id;
CREATE UNIQUE INDEX IF NOT EXISTS test_summaries_center_day_code
    ON test_summaries (center_id, date, test_code);

UPDATE species_summaries AS keep SET count = merged.total
FROM (SELECT min(id) AS id, sum(count) AS total FROM species_summaries
      GROUP BY center_id, date, species HAVING count(*) > 1) AS merged
WHERE keep.id = merged.id;
DELETE FROM species_summaries AS extra USING species_summaries AS keep
WHERE extra.center_id = keep.center_id AND extra.date = keep.date
  AND extra.species = keep.species AND extra.id > keep.id;
CREATE UNIQUE INDEX IF NOT EXISTS species_summaries_center_day_species
    ON species_summaries (center_id, date, species);

-- A breed without species is one key: NULL species compare equal here.
UPDATE breed_summaries AS keep SET count = merged.total
FROM (SELECT min(id) AS id, sum(count) AS total FROM breed_summaries
      GROUP BY center_id, date, breed, species HAVING count(*) > 1) AS merged
WHERE keep.id = merged.id;
DELETE FROM breed_summaries AS extra USING breed_summaries AS keep
WHERE extra.center_id = keep.center_id AND extra.date = keep.date AND extra.breed = keep.breed
  AND extra.species IS NOT DISTINCT FROM keep.species AND extra.id > keep.id;
CREATE UNIQUE INDEX IF NOT EXISTS breed_summaries_center_day_breed
    ON breed_summaries (center_id, date, breed, (coalesce(species, '')));

UPDATE module_metrics AS keep
SET operations_count = merged.operations, active_users = merged.users,
    total_revenue = merged.revenue
FROM (SELECT min(id) AS id, sum(operations_count) AS operations, max(active_users) AS users,
             sum(total_revenue) AS revenue
      FROM module_metrics GROUP BY center_id, date, module_name HAVING count(*) > 1) AS merged
WHERE keep.id = merged.id;
DELETE FROM module_metrics AS extra USING module_metrics AS keep
WHERE extra.center_id = keep.center_id AND extra.date = keep.date
  AND extra.module_name = keep.module_name AND extra.id > keep.id;
CREATE UNIQUE INDEX IF NOT EXISTS module_metrics_center_day_module
    ON module_metrics (center_id, date, module_name);

UPDATE payment_method_metrics AS keep
SET transaction_count = merged.transactions, total_amount = merged.amount
FROM (SELECT min(id) AS id, sum(transaction_count) AS transactions, sum(total_amount) AS amount
      FROM payment_method_metrics GROUP BY center_id, date, payment_method HAVING count(*) > 1) AS merged
WHERE keep.id = merged.id;
DELETE FROM payment_method_metrics AS extra USING payment_method_metrics AS keep
WHERE extra.center_id = keep.center_id AND extra.date = keep.date
  AND extra.payment_method = keep.payment_method AND extra.id > keep.id;
CREATE UNIQUE INDEX IF NOT EXISTS payment_method_metrics_center_day_method
    ON payment_method_metrics (center_id, date, payment_method);

-- Performance and system usage describe a whole day, so adding makes no
-- sense: the newest row of a day wins.
DELETE FROM performance_metrics AS older USING performance_metrics AS newer
WHERE older.center_id = newer.center_id AND older.date = newer.date AND older.id < newer.id;
CREATE UNIQUE INDEX IF NOT EXISTS performance_metrics_center_day
    ON performance_metrics (center_id, date);

DELETE FROM system_usage_metrics AS older USING system_usage_metrics AS newer
WHERE older.center_id = newer.center_id AND older.date = newer.date AND older.id < newer.id;
CREATE UNIQUE INDEX IF NOT EXISTS system_usage_metrics_center_day
    ON system_usage_metrics (center_id, date);

-- Keys live here as SHA-256 digests in hex; a center may hold several while
-- a rotated key's grace period runs.
CREATE TABLE center_api_keys (
    id         BIGSERIAL PRIMARY KEY,
    center_id  INTEGER     NOT NULL REFERENCES centers (id) ON DELETE CASCADE,
    key_hash   CHAR(64)    NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ
);
CREATE INDEX center_api_keys_center ON center_api_keys (center_id);

-- Existing plaintext keys keep working as hashes, and the plaintext goes.
INSERT INTO center_api_keys (center_id, key_hash)
SELECT id, encode(sha256(convert_to(api_key, 'UTF8')), 'hex')
FROM centers WHERE api_key IS NOT NULL AND api_key <> '';
ALTER TABLE centers ALTER COLUMN api_key DROP NOT NULL;
UPDATE centers SET api_key = NULL WHERE api_key IS NOT NULL;
