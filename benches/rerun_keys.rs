//! What skipping unchanged objects costs on a rerun over a large dataset: writes a
//! predictions dataset of N rows (default 1 000 000; `RERUN_KEYS=N` to change) in a
//! temporary folder with the library's own writer, then loads the skip set a rerun
//! builds and prints the time, the set's bytes per key and the process's peak RSS.
//!
//! Run: `cargo bench --bench rerun_keys`. Built and run by the test suite too (without
//! `--bench`): then it checks 10 000 keys, as a smoke test.

use std::sync::Arc;
use std::time::Instant;

use labelflow::rerun::Unchanged;
use labelflow::sink::{ModelStamp, PartWriter, Row, SinkOptions};
use labelflow::source::{ObjectRef, Shard};
use labelflow::store::{Access, Location, RetryPolicy};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // A test runner listing the binary's tests: there are none to list.
    if args.iter().any(|a| a == "--list") {
        return Ok(());
    }
    let full = args.iter().any(|a| a == "--bench");
    let n: usize = std::env::var("RERUN_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 10_000 });
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let out = Location::parse(
            dir.path().to_str().unwrap_or("."),
            Access::Write,
            RetryPolicy::default(),
        )?;
        let run_id = "20260101T000000Z-000001";
        let stamp = ModelStamp {
            name: "bench".into(),
            sha256: "0".repeat(64),
            classes: Arc::new((0..10).map(|i| format!("c{i}")).collect()),
            embedding: None,
        };
        let opts = SinkOptions {
            rows_per_part: 250_000,
            ..SinkOptions::default()
        };
        let written = Instant::now();
        let mut writer = PartWriter::new(out.clone(), run_id, Shard::default(), opts, stamp)?;
        let now = chrono::Utc::now();
        for i in 0..n {
            let key = format!("photos/2026/{:02}/img-{i:08}.jpg", i % 12);
            let row = Row {
                object: ObjectRef {
                    path: object_store::path::Path::from(key.as_str()),
                    uri: format!("s3://bucket/{key}"),
                    key,
                    size: 100_000 + i as u64,
                    etag: Some(format!("\"{:032x}\"", labelflow::stable::uri_digest(&i.to_string()))),
                    version: None,
                    last_modified: now,
                    origin: Default::default(),
                },
                width: Some(640),
                height: Some(480),
                top: Vec::new(),
                error: None,
                labelled_at: now,
                embedding: None,
            };
            writer.push(&row).await?;
        }
        writer.finish().await?;
        let record = serde_json::json!({
            "run_id": run_id, "status": "finished", "labels_fingerprint": "bench",
        });
        labelflow::runs::write_record(&out, run_id, Shard::default(), &record).await?;
        let write_s = written.elapsed().as_secs_f64();

        let rss_before = labelflow::pipeline::peak_rss_bytes().unwrap_or(0);
        let loaded = Instant::now();
        let owns = |_: &str, _: &str| true;
        let set = Unchanged::load(&out, "bench", "another-run", &owns).await?;
        let load_s = loaded.elapsed().as_secs_f64();
        let rss_after = labelflow::pipeline::peak_rss_bytes().unwrap_or(0);
        anyhow::ensure!(set.len() == n, "loaded {} of {n} keys", set.len());
        println!("| keys | write dataset (s) | load skip set (s) | set bytes | bytes/key | peak RSS before → after load (MB) |");
        println!("|---|---|---|---|---|---|");
        println!(
            "| {n} | {write_s:.1} | {load_s:.2} | {} | {:.1} | {:.0} → {:.0} |",
            set.heap_bytes(),
            set.heap_bytes() as f64 / n as f64,
            rss_before as f64 / 1e6,
            rss_after as f64 / 1e6
        );
        Ok::<(), anyhow::Error>(())
    })
}
