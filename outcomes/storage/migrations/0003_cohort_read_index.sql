CREATE INDEX assessments_cohort ON assessments (domain, patient_ref, assessed_on, t_score, superseded_by) WHERE superseded_by IS NULL
;
