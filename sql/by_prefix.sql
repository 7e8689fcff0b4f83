-- by_prefix: how many images of each label per folder of `key`, in the newest run of
-- every image. A folder is the first `depth` path segments of the key; images at a
-- shallower level count under their own folder, and '.' is the top level. Failed
-- images count under the label '(error)'.
-- param: depth = 1 (int)
-- Columns: folder, label, images.
WITH parts AS (
    SELECT
        string_to_array(key, '/') AS segments,
        CASE WHEN error IS NULL THEN label ELSE '(error)' END AS label
    FROM latest
),
folders AS (
    SELECT
        array_to_string(
            array_slice(segments, 1, least(CAST($depth AS BIGINT), CAST(array_length(segments) AS BIGINT) - 1)),
            '/'
        ) AS folder,
        label
    FROM parts
)
SELECT
    CASE WHEN folder = '' THEN '.' ELSE folder END AS folder,
    label,
    count(*) AS images
FROM folders
GROUP BY 1, 2
ORDER BY folder, images DESC, label;
