-- One rating per answer and rater (the user_id, or the anonymous rater without one): a new
-- rating replaces the old. Duplicates from before keep their newest row. judge_jobs.
-- agreement_counted marks an answer already counted in lqo_judge_human_agreement_total.
DELETE FROM feedback WHERE id NOT IN (
    SELECT MAX(id) FROM feedback GROUP BY request_id, COALESCE(user_id, ''));
CREATE UNIQUE INDEX IF NOT EXISTS feedback_one_per_rater_idx
    ON feedback (request_id, COALESCE(user_id, ''));
ALTER TABLE judge_jobs ADD COLUMN agreement_counted INTEGER NOT NULL DEFAULT 0;
