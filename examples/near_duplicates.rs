//! What `near_duplicates` and `similar` cost on a large dataset: write N rows with
//! synthetic AlexNet-like embeddings (once), then time the two named queries and report
//! the Parquet bytes per row with and without the embedding columns.
//!
//! ```sh
//! cargo run --release --example near_duplicates -- 100000 out/near-duplicates
//! ```
//!
//! The rows: `clusters` groups of images (default N / 100), each a sparse non-negative
//! centre, as fc7 after its ReLU is; every image is its centre plus noise, through a
//! ReLU. One image in a hundred is a planted near duplicate of another (the same vector
//! with 5 % noise), and the report says how many of those the query found.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use labelflow::infer::{Embedder, Scored};
use labelflow::query::{self, NamedQuery};
use labelflow::schema::EmbeddingColumns;
use labelflow::sink::{ModelStamp, PartWriter, Row, SinkOptions};
use labelflow::source::{ObjectRef, Shard};
use labelflow::stable::SplitMix64;
use labelflow::store::{Access, Location, RetryPolicy};

const RUN_ID: &str = "20261130T000000Z-synthetic";
const PLANT_EVERY: u64 = 100;

fn key(i: u64) -> String {
    format!("photos/{:03}/IMG_{i:08}.jpg", i % 997)
}

/// Rows `0..n` with `dim`-d embeddings when `embeddings`, else without; a planted
/// duplicate `i` (every `PLANT_EVERY`-th) copies image `i - 1`.
async fn write(dir: &str, n: u64, dim: usize, embeddings: bool) -> anyhow::Result<()> {
    let out = Location::parse(dir, Access::Write, RetryPolicy::default())?;
    let embedder = Embedder::new(dim, 256);
    let stamp = ModelStamp {
        name: "alexnet".into(),
        sha256: "0".repeat(64),
        classes: Arc::new((0..1000).map(|c| format!("class_{c}")).collect()),
        embedding: embeddings.then_some(EmbeddingColumns {
            dim,
            code_bytes: 32,
        }),
    };
    let opts = SinkOptions {
        rows_per_part: 20_000,
        ..SinkOptions::default()
    };
    let mut w = PartWriter::new(out, RUN_ID, Shard::default(), opts, stamp)?;
    let clusters = (n / 100).max(1);
    let centre = |c: u64| -> Vec<f32> {
        let mut rng = SplitMix64::derive(1, c);
        (0..dim)
            .map(|_| {
                let v = rng.normal() as f32;
                if rng.below(4) == 0 {
                    v.abs() * 2.0
                } else {
                    0.0
                }
            })
            .collect()
    };
    let mut previous: Vec<f32> = Vec::new();
    for i in 0..n {
        let mut rng = SplitMix64::derive(2, i);
        let raw: Vec<f32> = if i % PLANT_EVERY == PLANT_EVERY - 1 && !previous.is_empty() {
            previous
                .iter()
                .map(|v| (v * (1.0 + 0.05 * rng.normal() as f32)).max(0.0))
                .collect()
        } else {
            centre(rng.below(clusters as usize) as u64)
                .iter()
                .map(|c| (c + 0.7 * rng.normal() as f32).max(0.0))
                .collect()
        };
        let k = key(i);
        let row = Row {
            object: ObjectRef {
                path: k.as_str().into(),
                uri: format!("s3://example-bucket/{k}"),
                key: k,
                size: 200_000,
                etag: None,
                version: None,
                last_modified: chrono::Utc::now(),
                origin: Default::default(),
            },
            width: Some(640),
            height: Some(480),
            top: vec![Scored {
                index: (i % 1000) as usize,
                score: 0.5,
            }],
            error: None,
            labelled_at: chrono::Utc::now(),
            embedding: embeddings.then(|| embedder.embed(&raw)),
        };
        w.push(&row).await?;
        previous = raw;
    }
    w.finish().await?;
    Ok(())
}

fn parquet_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            total += parquet_bytes(&p);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            total += p.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    total
}

async fn rows_of(
    ctx: &datafusion::prelude::SessionContext,
    q: &NamedQuery,
    params: &[(String, String)],
) -> anyhow::Result<Vec<arrow::array::RecordBatch>> {
    Ok(query::named(ctx, q, params).await?.collect().await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().unwrap_or_else(|| "100000".into()).parse()?;
    let dir = args.next().unwrap_or_else(|| "out/near-duplicates".into());
    let dim: usize = args.next().unwrap_or_else(|| "4096".into()).parse()?;
    let with = format!("{dir}/{n}x{dim}/with");
    let without = format!("{dir}/{n}x{dim}/without");
    for (path, embeddings) in [(&with, true), (&without, false)] {
        if !std::path::Path::new(path)
            .join(format!("run_id={RUN_ID}"))
            .exists()
        {
            eprintln!("writing {n} rows to {path} (once)…");
            let t = Instant::now();
            write(path, n, dim, embeddings).await?;
            eprintln!("  {:.1} s", t.elapsed().as_secs_f64());
        }
    }
    let (bytes_with, bytes_without) = (
        parquet_bytes(std::path::Path::new(&with)),
        parquet_bytes(std::path::Path::new(&without)),
    );
    println!("rows:                     {n} ({dim}-d embeddings, 256-bit codes)");
    println!(
        "bytes per row:            {} without embeddings, {} with ({} more)",
        bytes_without / n,
        bytes_with / n,
        (bytes_with - bytes_without.min(bytes_with)) / n
    );

    let ctx = query::open(&with).await?;
    let near =
        NamedQuery::builtin("near_duplicates").ok_or_else(|| anyhow::anyhow!("no query"))??;
    let planted: BTreeSet<(String, String)> = (1..n)
        .filter(|i| i % PLANT_EVERY == PLANT_EVERY - 1)
        .map(|i| {
            let (a, b) = (
                format!("s3://example-bucket/{}", key(i - 1)),
                format!("s3://example-bucket/{}", key(i)),
            );
            if a < b {
                (a, b)
            } else {
                (b, a)
            }
        })
        .collect();
    // At the default threshold, then at 0.8: rows drawn from one cluster centre with
    // independent noise are "alike" without being copies, and some score 0.7-0.8.
    for threshold in [None, Some("0.8")] {
        let params: Vec<(String, String)> = threshold
            .map(|t| ("threshold".to_string(), t.to_string()))
            .into_iter()
            .collect();
        let t = Instant::now();
        let batches = rows_of(&ctx, &near, &params).await?;
        let seconds = t.elapsed().as_secs_f64();
        let mut pairs = BTreeSet::new();
        for b in &batches {
            let (a, c) = (b.column(0), b.column(1));
            for r in 0..b.num_rows() {
                pairs.insert((
                    arrow::util::display::array_value_to_string(a, r)?,
                    arrow::util::display::array_value_to_string(c, r)?,
                ));
            }
        }
        let found = pairs.intersection(&planted).count();
        println!(
            "near_duplicates (threshold {}): {seconds:.2} s, {} pairs; planted pairs found {found}/{}, other pairs {}",
            threshold.unwrap_or("default"),
            pairs.len(),
            planted.len(),
            pairs.len() - found
        );
    }

    // How much the codes pruned: pairs sharing a band, and of those within 48 bits.
    let t = Instant::now();
    let counts = query::sql(
        &ctx,
        "WITH codes AS (SELECT uri, code FROM latest WHERE code IS NOT NULL), \
         bands AS (SELECT uri, unnest(code_bands(code, 16)) AS band FROM codes), \
         c AS (SELECT DISTINCT a.uri AS ua, b.uri AS ub FROM bands a JOIN bands b \
               ON a.band = b.band AND a.uri < b.uri) \
         SELECT count(*) AS candidates, \
                sum(CASE WHEN hamming(x.code, y.code) <= 48 THEN 1 ELSE 0 END) AS close \
         FROM c JOIN codes x ON x.uri = c.ua JOIN codes y ON y.uri = c.ub",
        &[],
    )
    .await?
    .collect()
    .await?;
    let cell = |c: usize| -> anyhow::Result<String> {
        Ok(arrow::util::display::array_value_to_string(
            counts[0].column(c),
            0,
        )?)
    };
    println!(
        "pairs compared:           {} of {} share a 16-bit band, {} of those within 48 bits ({:.1} s to count)",
        cell(0)?,
        n * (n - 1) / 2,
        cell(1)?,
        t.elapsed().as_secs_f64()
    );

    let similar = NamedQuery::builtin("similar").ok_or_else(|| anyhow::anyhow!("no query"))??;
    let t = Instant::now();
    let params = vec![
        ("key".to_string(), key(PLANT_EVERY - 2)),
        ("k".to_string(), "10".to_string()),
    ];
    let batches = rows_of(&ctx, &similar, &params).await?;
    let seconds = t.elapsed().as_secs_f64();
    let first = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| arrow::util::display::array_value_to_string(b.column(2), 0))
        .transpose()?
        .unwrap_or_default();
    println!(
        "similar (k = 10):         {seconds:.2} s; nearest to {} is {first}",
        key(PLANT_EVERY - 2)
    );
    Ok(())
}
