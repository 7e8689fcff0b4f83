-- low_confidence: images whose top-1 score is below a threshold, least confident first,
-- in the newest run of every image, with the runner-up label for a quick look.
-- param: threshold = 0.3 (float)
-- Columns: uri, key, label, score, second_label, second_score, run_id.
SELECT
    uri,
    key,
    label,
    score,
    top_k[2]['label'] AS second_label,
    top_k[2]['score'] AS second_score,
    run_id
FROM latest
WHERE error IS NULL AND score < $threshold
ORDER BY score, uri;
