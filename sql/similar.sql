-- similar: the k images most like one image, by the cosine similarity of their
-- embeddings (AlexNet's fc7: alike in content, not only in pixels), in the newest run
-- of every image. Needs a run made with `labelflow run --embeddings`.
-- param: key = '' (string): the image's key or uri
-- param: k = 10 (int)
-- Columns: rank, uri, key, label, score, similarity.
WITH target AS (
    SELECT uri, embedding
    FROM latest
    WHERE (key = $key OR uri = $key) AND embedding IS NOT NULL
    ORDER BY run_id DESC
    LIMIT 1
),
scored AS (
    SELECT
        l.uri,
        l.key,
        l.label,
        l.score,
        cosine_similarity(l.embedding, t.embedding) AS similarity
    FROM latest l CROSS JOIN target t
    WHERE l.embedding IS NOT NULL AND l.uri <> t.uri
),
ranked AS (
    SELECT
        row_number() OVER (ORDER BY similarity DESC, uri) AS rank,
        uri,
        key,
        label,
        score,
        round(similarity, 4) AS similarity
    FROM scored
)
SELECT rank, uri, key, label, score, similarity
FROM ranked
WHERE rank <= $k
ORDER BY rank;
