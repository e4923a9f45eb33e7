-- The statements of one POST /kpi/submit/enhanced on PostgreSQL, sent with
-- the master key for a registered center, as commit 24c59ae ran them: the
-- two look-ups of authentication, then one transaction (save_day in
-- src/store/shared.rs and insert_day_lists in src/store/postgres.rs of that
-- commit). The batch is the size of the load client's: 30 tests, 3 species,
-- 13 breeds, 4 modules, 4 payment methods, performance and system usage.
-- bench/run.sh derives the plain POST /kpi/submit script by dropping the
-- statements of the four enhanced tables. It sets centers (ids 1 to
-- centers, codes BENCH01 and up) and batch_days (a batch falls on one of
-- the batch_days days before today).
\set center random(1, :centers)
\set back random(1, :batch_days)
SELECT id, code, name, city, country, is_active, registered_at, last_sync_at FROM centers WHERE code = 'BENCH' || lpad(:center::text, 2, '0');
SELECT id, key_hash, expires_at FROM center_api_keys WHERE center_id = :center;
BEGIN;
INSERT INTO daily_metrics (center_id, date, total_orders, total_results, total_pets, total_owners, created_at) VALUES (:center, CURRENT_DATE - :back::int, 120, 114, 55, 42, now()) ON CONFLICT (center_id, date) DO UPDATE SET total_orders = excluded.total_orders, total_results = excluded.total_results, total_pets = excluded.total_pets, total_owners = excluded.total_owners;
DELETE FROM test_summaries WHERE center_id = :center AND date = CURRENT_DATE - :back::int;
DELETE FROM species_summaries WHERE center_id = :center AND date = CURRENT_DATE - :back::int;
DELETE FROM breed_summaries WHERE center_id = :center AND date = CURRENT_DATE - :back::int;
DELETE FROM module_metrics WHERE center_id = :center AND date = CURRENT_DATE - :back::int;
DELETE FROM payment_method_metrics WHERE center_id = :center AND date = CURRENT_DATE - :back::int;
INSERT INTO test_summaries (center_id, date, test_code, test_name, count) SELECT :center, CURRENT_DATE - :back::int, * FROM UNNEST('{T1,T2,T3,T4,T5,T6,T7,T8,T9,T10,T11,T12,T13,T14,T15,T16,T17,T18,T19,T20,T21,T22,T23,T24,T25,T26,T27,T28,T29,T30}'::text[], '{"Test 1","Test 2","Test 3","Test 4","Test 5","Test 6","Test 7","Test 8","Test 9","Test 10","Test 11","Test 12","Test 13","Test 14","Test 15","Test 16","Test 17","Test 18","Test 19","Test 20","Test 21","Test 22","Test 23","Test 24","Test 25","Test 26","Test 27","Test 28","Test 29","Test 30"}'::text[], '{8,15,22,29,36,4,11,18,25,32,39,7,14,21,28,35,3,10,17,24,31,38,6,13,20,27,34,2,9,16}'::int[]);
INSERT INTO species_summaries (center_id, date, species, count) SELECT :center, CURRENT_DATE - :back::int, * FROM UNNEST('{S1,S2,S3}'::text[], '{41,23,6}'::int[]);
INSERT INTO breed_summaries (center_id, date, breed, species, count) SELECT :center, CURRENT_DATE - :back::int, * FROM UNNEST('{B1-1,B1-2,B1-3,B1-4,B1-5,B1-6,B2-1,B2-2,B2-3,B2-4,B3-1,B3-2,B3-3}'::text[], '{S1,S1,S1,S1,S1,S1,S2,S2,S2,S2,S3,S3,S3}'::text[], '{1,6,11,2,7,12,3,8,13,4,9,14,5}'::int[]);
INSERT INTO module_metrics (center_id, date, created_at, module_name, operations_count, active_users, total_revenue, avg_transaction) SELECT :center, CURRENT_DATE - :back::int, now(), * FROM UNNEST('{M1,M2,M3,M4}'::text[], '{210,95,160,12}'::int[], '{6,3,4,2}'::int[], '{1250000,480000,930000,210000}'::int[], '{5950,5050,5810,17500}'::int[]);
INSERT INTO payment_method_metrics (center_id, date, created_at, payment_method, transaction_count, total_amount) SELECT :center, CURRENT_DATE - :back::int, now(), * FROM UNNEST('{P1,P2,P3,P4}'::text[], '{64,88,21,9}'::int[], '{820000,1430000,560000,410000}'::int[]);
INSERT INTO performance_metrics (center_id, date, avg_order_processing_time, peak_hour, peak_hour_orders, completion_rate, same_day_completion, morning_orders, afternoon_orders, evening_orders, night_orders, created_at) VALUES (:center, CURRENT_DATE - :back::int, 95, 10, 18, 93, 71, 44, 51, 20, 5, now()) ON CONFLICT (center_id, date) DO UPDATE SET avg_order_processing_time = excluded.avg_order_processing_time, peak_hour = excluded.peak_hour, peak_hour_orders = excluded.peak_hour_orders, completion_rate = excluded.completion_rate, same_day_completion = excluded.same_day_completion, morning_orders = excluded.morning_orders, afternoon_orders = excluded.afternoon_orders, evening_orders = excluded.evening_orders, night_orders = excluded.night_orders;
INSERT INTO system_usage_metrics (center_id, date, total_active_users, peak_concurrent_users, avg_session_duration, web_access_count, mobile_access_count, desktop_access_count, total_workstations, created_at) VALUES (:center, CURRENT_DATE - :back::int, 9, 6, 75, 140, 35, 88, 5, now()) ON CONFLICT (center_id, date) DO UPDATE SET total_active_users = excluded.total_active_users, peak_concurrent_users = excluded.peak_concurrent_users, avg_session_duration = excluded.avg_session_duration, web_access_count = excluded.web_access_count, mobile_access_count = excluded.mobile_access_count, desktop_access_count = excluded.desktop_access_count, total_workstations = excluded.total_workstations;
UPDATE centers SET last_sync_at = now() WHERE id = :center;
COMMIT;
