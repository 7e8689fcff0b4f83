-- near_duplicates: pairs of images whose embeddings have a cosine similarity of at
-- least the threshold (copies, crops, re-encodings, small edits of one photo), in the
-- newest run of every image. Needs a run made with `labelflow run --embeddings`.
-- Not every pair is compared: the binary codes are cut into bands of `band_bits`
-- bits, only images sharing a band become candidates, and the exact similarity is
-- computed for those. Two images at similarity 0.9 or more share a band of 16 bits
-- in nearly every case; fewer bits find more (and cost more).
-- param: threshold = 0.9 (float)
-- param: band_bits = 16 (int)
-- Columns: uri_a, uri_b, label_a, label_b, similarity, hamming.
WITH items AS (
    SELECT uri, label, embedding, code
    FROM latest
    WHERE embedding IS NOT NULL AND code IS NOT NULL
),
bands AS (
    SELECT uri, unnest(code_bands(code, $band_bits)) AS band
    FROM items
),
candidates AS (
    SELECT DISTINCT a.uri AS uri_a, b.uri AS uri_b
    FROM bands a JOIN bands b ON a.band = b.band AND a.uri < b.uri
),
scored AS (
    SELECT
        c.uri_a,
        c.uri_b,
        a.label AS label_a,
        b.label AS label_b,
        cosine_similarity(a.embedding, b.embedding) AS similarity,
        hamming(a.code, b.code) AS hamming
    FROM candidates c
    JOIN items a ON a.uri = c.uri_a
    JOIN items b ON b.uri = c.uri_b
)
SELECT uri_a, uri_b, label_a, label_b, round(similarity, 4) AS similarity, hamming
FROM scored
WHERE similarity >= $threshold
ORDER BY similarity DESC, uri_a, uri_b;
