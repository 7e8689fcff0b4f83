-- errors: images that could not be labelled in their newest run, and why.
-- Columns: uri, key, error, size_bytes, run_id.
SELECT uri, key, error, size_bytes, run_id
FROM latest
WHERE error IS NOT NULL
ORDER BY error, uri;
