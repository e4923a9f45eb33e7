-- The statements of one POST /kpi/events on PostgreSQL, sent with the master
-- key for a registered center. They are those of commit 24c59ae, the last
-- one that gave each event a transaction of its own (later commits write
-- events in groups): the two look-ups of authentication, then one
-- transaction (record_event in src/store/shared.rs of that commit). The
-- event mix is the load client's: 50% order_created with 1 to 4 tests,
-- species and breed, 30% result_created, 10% pet_created, 10% owner_created.
-- bench/run.sh sets centers (ids 1 to centers, codes BENCH01 and up) and
-- days (events fall on today and the days - 1 days before it).
\set center random(1, :centers)
\set back random(0, :days - 1)
\set kind random(1, 100)
\set species random(1, 3)
\set breed random(1, 4)
\set tests random(1, 4)
\set first random(0, 35)
\set t1 :first + 1
\set t2 (:first + 9) % 36 + 1
\set t3 (:first + 18) % 36 + 1
\set t4 (:first + 27) % 36 + 1
SELECT id, code, name, city, country, is_active, registered_at, last_sync_at FROM centers WHERE code = 'BENCH' || lpad(:center::text, 2, '0');
SELECT id, key_hash, expires_at FROM center_api_keys WHERE center_id = :center;
BEGIN;
\if :kind <= 50
INSERT INTO daily_metrics (center_id, date, total_orders, created_at) VALUES (:center, CURRENT_DATE - :back::int, 1, now()) ON CONFLICT (center_id, date) DO UPDATE SET total_orders = daily_metrics.total_orders + 1;
INSERT INTO test_summaries (center_id, date, test_code, test_name, count) VALUES (:center, CURRENT_DATE - :back::int, 'T' || :t1, 'T' || :t1, 1) ON CONFLICT (center_id, date, test_code) DO UPDATE SET count = test_summaries.count + excluded.count;
\if :tests >= 2
INSERT INTO test_summaries (center_id, date, test_code, test_name, count) VALUES (:center, CURRENT_DATE - :back::int, 'T' || :t2, 'T' || :t2, 1) ON CONFLICT (center_id, date, test_code) DO UPDATE SET count = test_summaries.count + excluded.count;
\endif
\if :tests >= 3
INSERT INTO test_summaries (center_id, date, test_code, test_name, count) VALUES (:center, CURRENT_DATE - :back::int, 'T' || :t3, 'T' || :t3, 1) ON CONFLICT (center_id, date, test_code) DO UPDATE SET count = test_summaries.count + excluded.count;
\endif
\if :tests >= 4
INSERT INTO test_summaries (center_id, date, test_code, test_name, count) VALUES (:center, CURRENT_DATE - :back::int, 'T' || :t4, 'T' || :t4, 1) ON CONFLICT (center_id, date, test_code) DO UPDATE SET count = test_summaries.count + excluded.count;
\endif
\elif :kind <= 80
INSERT INTO daily_metrics (center_id, date, total_results, created_at) VALUES (:center, CURRENT_DATE - :back::int, 1, now()) ON CONFLICT (center_id, date) DO UPDATE SET total_results = daily_metrics.total_results + 1;
\elif :kind <= 90
INSERT INTO daily_metrics (center_id, date, total_pets, created_at) VALUES (:center, CURRENT_DATE - :back::int, 1, now()) ON CONFLICT (center_id, date) DO UPDATE SET total_pets = daily_metrics.total_pets + 1;
\else
INSERT INTO daily_metrics (center_id, date, total_owners, created_at) VALUES (:center, CURRENT_DATE - :back::int, 1, now()) ON CONFLICT (center_id, date) DO UPDATE SET total_owners = daily_metrics.total_owners + 1;
\endif
\if :kind <= 50 or (:kind > 80 and :kind <= 90)
INSERT INTO species_summaries (center_id, date, species, count) VALUES (:center, CURRENT_DATE - :back::int, 'S' || :species, 1) ON CONFLICT (center_id, date, species) DO UPDATE SET count = species_summaries.count + 1;
INSERT INTO breed_summaries (center_id, date, breed, species, count) VALUES (:center, CURRENT_DATE - :back::int, 'B' || :species || '-' || :breed, 'S' || :species, 1) ON CONFLICT (center_id, date, breed, (coalesce(species, ''))) DO UPDATE SET count = breed_summaries.count + 1;
\endif
UPDATE centers SET last_sync_at = now() WHERE id = :center;
COMMIT;
