//! What resuming a large run costs: write N committed rows (in a child process), then
//! load them the way a resumed run does and report the time, the set's bytes per key
//! and the process's peak resident memory.
//!
//! ```sh
//! cargo run --release --example resume_memory -- 1000000 out/resume-memory
//! ```

use std::sync::Arc;
use std::time::Instant;

use labelflow::pipeline::peak_rss_bytes;
use labelflow::sink::{CommittedKeys, ModelStamp, PartWriter, Row, SinkOptions};
use labelflow::source::{ObjectRef, Shard};
use labelflow::store::{Access, Location, RetryPolicy};

const RUN_ID: &str = "resume-memory";

fn rss_now() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn mib(b: Option<u64>) -> String {
    b.map_or("n/a".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    })
}

async fn write(dir: &str, n: u64) -> anyhow::Result<()> {
    let out = Location::parse(dir, Access::Write, RetryPolicy::default())?;
    let stamp = ModelStamp {
        name: "alexnet".into(),
        sha256: "0".repeat(64),
        classes: Arc::new(vec!["a".into(), "b".into()]),
        embedding: None,
    };
    let opts = SinkOptions {
        rows_per_part: 100_000,
        ..SinkOptions::default()
    };
    let mut w = PartWriter::new(out, RUN_ID, Shard::default(), opts, stamp)?;
    for i in 0..n {
        // Keys shaped like a camera roll in a dated bucket layout (~60 bytes a URI).
        let key = format!(
            "photos/2026/{:02}/{:02}/IMG_{i:08}.jpg",
            i % 12 + 1,
            i % 28 + 1
        );
        let row = Row {
            object: ObjectRef {
                path: key.as_str().into(),
                uri: format!("s3://example-bucket/{key}"),
                key,
                size: 1_000_000,
                etag: None,
                version: None,
                last_modified: chrono::Utc::now(),
                origin: Default::default(),
            },
            width: Some(4000),
            height: Some(3000),
            embedding: None,
            top: Vec::new(),
            error: None,
            labelled_at: chrono::Utc::now(),
        };
        w.push(&row).await?;
    }
    w.finish().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let first = args.next().unwrap_or_else(|| "1000000".into());
    if first == "--write" {
        let dir = args.next().unwrap_or_default();
        let n: u64 = args.next().unwrap_or_default().parse()?;
        return write(&dir, n).await;
    }
    let n: u64 = first.parse()?;
    let dir = args.next().unwrap_or_else(|| "out/resume-memory".into());
    let dir = format!("{dir}/{n}");
    if !std::path::Path::new(&dir)
        .join(format!("run_id={RUN_ID}"))
        .exists()
    {
        eprintln!("writing {n} committed rows to {dir} (once)…");
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(["--write", &dir, &n.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "writing the rows failed");
    }
    let out = Location::parse(&dir, Access::Read, RetryPolicy::default())?;
    let before = rss_now();
    let started = Instant::now();
    let keys = CommittedKeys::load(&out, RUN_ID, Shard::default()).await?;
    let seconds = started.elapsed().as_secs_f64();
    let after = rss_now();
    println!("committed keys:      {}", keys.len());
    println!(
        "load time:           {seconds:.2} s ({:.0} keys/s)",
        keys.len() as f64 / seconds
    );
    println!(
        "set size:            {} ({} bytes per key)",
        mib(Some(keys.heap_bytes() as u64)),
        keys.heap_bytes() / keys.len().max(1)
    );
    println!("RSS before / after:  {} / {}", mib(before), mib(after));
    println!("peak RSS (process):  {}", mib(peak_rss_bytes()));
    anyhow::ensure!(keys.len() as u64 == n, "expected {n} keys");
    anyhow::ensure!(keys.contains("s3://example-bucket/photos/2026/01/01/IMG_00000000.jpg"));
    Ok(())
}
