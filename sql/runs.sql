-- runs: every run in the dataset, oldest first: its model, how many images it
-- labelled, how many failed, and when it started and finished labelling.
-- Columns: run_id, model, images, errors, first_labelled_at, last_labelled_at.
SELECT
    run_id,
    string_agg(DISTINCT model, ',') AS model,
    count(*) AS images,
    count(error) AS errors,
    min(labelled_at) AS first_labelled_at,
    max(labelled_at) AS last_labelled_at
FROM predictions
GROUP BY run_id
ORDER BY run_id;
