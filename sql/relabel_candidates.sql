-- relabel_candidates: images to send to human labelling, most uncertain first: in the
-- newest run of every image, those whose top-1 score is below `threshold` or whose
-- top-1 and top-2 scores are less than `margin` apart. Failed images are left out.
-- The first two columns are the layout the training job reads (a CSV of uri,label);
-- `label` is empty for the labeller to fill in. Save it with `--format csv`.
-- param: threshold = 0.5 (float)
-- param: margin = 0.1 (float)
-- Columns: uri, label, predicted_label, score.
SELECT
    uri,
    '' AS label,
    label AS predicted_label,
    score
FROM latest
WHERE error IS NULL
  AND (score < $threshold OR score - top_k[2]['score'] < $margin)
ORDER BY score, uri;
