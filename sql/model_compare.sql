-- model_compare: two runs side by side (e.g. two models over the same images): how
-- many images kept their label and how labels changed. Only images present in both
-- runs count. The first row, labels '(same)', holds the images whose label did not
-- change, so its `share` is the agreement rate; every other row is one change from
-- label_a to label_b. A failed image has the label '(error)'. `share` is the fraction
-- of the images in both runs.
-- param: run_a = '' (string): the older run; empty means the second newest run
-- param: run_b = '' (string): the newer run; empty means the newest run
-- Columns: run_a, run_b, label_a, label_b, images, share.
WITH runs AS (
    SELECT DISTINCT run_id FROM predictions
),
chosen AS (
    SELECT
        coalesce(nullif(CAST($run_a AS VARCHAR), ''),
                 (SELECT run_id FROM runs ORDER BY run_id DESC LIMIT 1 OFFSET 1)) AS run_a,
        coalesce(nullif(CAST($run_b AS VARCHAR), ''),
                 (SELECT max(run_id) FROM runs)) AS run_b
),
a AS (
    SELECT p.uri, coalesce(p.label, '(error)') AS label
    FROM predictions p, chosen c WHERE p.run_id = c.run_a
),
b AS (
    SELECT p.uri, coalesce(p.label, '(error)') AS label
    FROM predictions p, chosen c WHERE p.run_id = c.run_b
),
pairs AS (
    SELECT
        CASE WHEN a.label = b.label THEN '(same)' ELSE a.label END AS label_a,
        CASE WHEN a.label = b.label THEN '(same)' ELSE b.label END AS label_b
    FROM a JOIN b ON a.uri = b.uri
),
counted AS (
    SELECT label_a, label_b, count(*) AS images FROM pairs GROUP BY label_a, label_b
)
SELECT
    c.run_a,
    c.run_b,
    n.label_a,
    n.label_b,
    n.images,
    round(CAST(n.images AS DOUBLE) / sum(n.images) OVER (), 4) AS share
FROM counted n, chosen c
ORDER BY n.label_a <> '(same)', n.images DESC, n.label_a, n.label_b;
