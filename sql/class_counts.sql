-- class_counts: how many images carry each label, in the newest run of every image.
-- Images that failed (an `error`) are left out; see `errors`.
-- Columns: label, images, share (of the labelled images), mean_score.
SELECT
    label,
    count(*) AS images,
    round(CAST(count(*) AS DOUBLE) / sum(count(*)) OVER (), 4) AS share,
    round(avg(score), 4) AS mean_score
FROM latest
WHERE error IS NULL
GROUP BY label
ORDER BY images DESC, label;
