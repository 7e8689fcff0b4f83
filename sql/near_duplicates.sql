-- near_duplicates: pairs of images whose embeddings are closer than the threshold
-- (copies, crops, re-encodings, small edits of one photo), in the newest run of every
-- image. Needs a run made with `labelflow run --embeddings`; with `--tta flip` as well,
-- mirror images count as copies.
-- The similarity is the cosine about the collection's mean embedding
-- (cosine_similarity(a, b, $centre), the mean computed once before the query, a pass
-- over the embeddings): a network's features share a large
-- common part, so about the origin every pair of photos looks alike (0.93-0.97 for
-- distinct photos with untrained weights), while about the mean distinct photos fall
-- to about 0.5 or below and copies stay above 0.7 (tests/integration/embeddings.rs).
-- It needs a collection, not a handful: about the mean of two images, they point
-- opposite ways.
-- Not every pair is compared. The binary codes are cut into bands of `band_bits`
-- bits and only images that share a band are candidates (an equality join); of those,
-- pairs whose codes differ in more than `max_hamming` bits are dropped; the exact
-- similarity is computed for the rest. Near copies share a band and differ in few
-- bits: on the fixture photos copies of one photo, mirror images (with --tta flip) and
-- crops included, differed in at most 35 of 256. Fewer band bits or a larger
-- max_hamming find more, at a higher cost.
-- param: threshold = 0.7 (float)
-- param: band_bits = 16 (int)
-- param: max_hamming = 48 (int)
-- param: centre = (SELECT embedding_mean(embedding) FROM latest) (computed)
-- Columns: uri_a, uri_b, label_a, label_b, similarity, hamming.
WITH codes AS (
    -- Only the narrow columns here: the embeddings are read for the pairs that remain.
    SELECT uri, code FROM latest WHERE code IS NOT NULL
),
items AS (
    SELECT uri, label, embedding FROM latest WHERE embedding IS NOT NULL
),
bands AS (
    SELECT uri, unnest(code_bands(code, $band_bits)) AS band
    FROM codes
),
candidates AS (
    SELECT DISTINCT a.uri AS uri_a, b.uri AS uri_b
    FROM bands a JOIN bands b ON a.band = b.band AND a.uri < b.uri
),
close AS (
    SELECT c.uri_a, c.uri_b, hamming(x.code, y.code) AS hamming
    FROM candidates c
    JOIN codes x ON x.uri = c.uri_a
    JOIN codes y ON y.uri = c.uri_b
    WHERE hamming(x.code, y.code) <= $max_hamming
),
scored AS (
    SELECT
        c.uri_a,
        c.uri_b,
        a.label AS label_a,
        b.label AS label_b,
        cosine_similarity(a.embedding, b.embedding, $centre) AS similarity,
        c.hamming
    FROM close c
    JOIN items a ON a.uri = c.uri_a
    JOIN items b ON b.uri = c.uri_b
)
SELECT uri_a, uri_b, label_a, label_b, round(similarity, 4) AS similarity, hamming
FROM scored
WHERE similarity >= $threshold
ORDER BY similarity DESC, uri_a, uri_b;
