-- One rating per answer and rater: a new rating from the same user (or, without a user_id, the
-- anonymous rater) replaces the old one, so 500 thumbs-down from one user count once. Duplicates
-- from before keep their newest row. judge_jobs.agreement_counted marks an answer already counted
-- in lqo_judge_human_agreement_total, so the metric counts each answer once, whichever process
-- compares it first.
DELETE FROM feedback f USING feedback g
WHERE f.request_id = g.request_id
  AND COALESCE(f.user_id, '') = COALESCE(g.user_id, '')
  AND f.id < g.id;
CREATE UNIQUE INDEX IF NOT EXISTS feedback_one_per_rater_idx
    ON feedback (request_id, (COALESCE(user_id, '')));
ALTER TABLE judge_jobs ADD COLUMN IF NOT EXISTS agreement_counted BOOLEAN NOT NULL DEFAULT false;
