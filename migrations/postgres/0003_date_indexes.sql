-- The dashboard, the summary and the export read every center's rows of a
-- period, and every other index starts with center_id, so they scanned whole
-- tables. An index on the date lets them read only the period.
CREATE INDEX IF NOT EXISTS daily_metrics_date ON daily_metrics (date);
CREATE INDEX IF NOT EXISTS test_summaries_date ON test_summaries (date);
CREATE INDEX IF NOT EXISTS species_summaries_date ON species_summaries (date);
CREATE INDEX IF NOT EXISTS breed_summaries_date ON breed_summaries (date);
