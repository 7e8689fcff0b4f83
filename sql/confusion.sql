-- confusion: predictions against human labels, per class and overall. Needs a table
-- `truth` with columns uri, label (e.g. `--table truth=labels.csv`); only images in
-- `truth` count, each with its newest prediction. An image that failed or has no
-- prediction counts as wrong. Per class: support (images whose true label it is),
-- predicted (images predicted as it), correct, precision = correct / predicted,
-- recall = correct / support, top5_recall = share of its images whose true label is
-- among the first five `top_k` entries. The last row, class '(all)', sums over all
-- images: its recall is the top-1 accuracy and its top5_recall the top-5 accuracy.
-- Columns: class, support, predicted, correct, precision, recall, top5_recall.
WITH joined AS (
    SELECT t.uri, t.label AS actual, p.label AS predicted, p.top_k
    FROM truth t
    LEFT JOIN (SELECT uri, label, top_k FROM latest WHERE error IS NULL) p ON t.uri = p.uri
),
top5 AS (
    SELECT uri, actual, entry['label'] AS candidate
    FROM (SELECT uri, actual, unnest(array_slice(top_k, 1, 5)) AS entry FROM joined)
),
hits AS (
    SELECT uri, max(CASE WHEN candidate = actual THEN 1 ELSE 0 END) AS in_top5
    FROM top5
    GROUP BY uri
),
scored AS (
    SELECT
        j.actual,
        j.predicted,
        CASE WHEN j.predicted = j.actual THEN 1 ELSE 0 END AS correct,
        coalesce(h.in_top5, 0) AS in_top5
    FROM joined j LEFT JOIN hits h ON j.uri = h.uri
),
by_actual AS (
    SELECT actual AS class, count(*) AS support, sum(correct) AS correct, sum(in_top5) AS top5
    FROM scored
    GROUP BY actual
),
by_predicted AS (
    SELECT predicted AS class, count(*) AS predicted
    FROM scored
    WHERE predicted IS NOT NULL
    GROUP BY predicted
),
per_class AS (
    SELECT
        coalesce(a.class, p.class) AS class,
        coalesce(a.support, 0) AS support,
        coalesce(p.predicted, 0) AS predicted,
        coalesce(a.correct, 0) AS correct,
        coalesce(a.top5, 0) AS top5
    FROM by_actual a FULL OUTER JOIN by_predicted p ON a.class = p.class
),
overall AS (
    SELECT
        '(all)' AS class,
        count(*) AS support,
        count(predicted) AS predicted,
        sum(correct) AS correct,
        sum(in_top5) AS top5
    FROM scored
),
report AS (
    SELECT class, support, predicted, correct, top5, 0 AS position FROM per_class
    UNION ALL
    SELECT class, support, predicted, correct, top5, 1 AS position FROM overall
)
SELECT
    class,
    support,
    predicted,
    correct,
    round(CAST(correct AS DOUBLE) / nullif(predicted, 0), 4) AS precision,
    round(CAST(correct AS DOUBLE) / nullif(support, 0), 4) AS recall,
    round(CAST(top5 AS DOUBLE) / nullif(support, 0), 4) AS top5_recall
FROM report
ORDER BY position, class;
