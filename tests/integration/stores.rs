//! One conformance suite over every store a run reads from and writes to: the same
//! scenario — streamed listing with filters, fetch (a missing object is an error
//! row), part commit, resume, a manifest of URLs, read-back with `labelflow query` —
//! on each backend, one line per backend at the bottom.
//!
//! Memory runs through the library (a memory store lives inside one process); every
//! other backend runs the `labelflow` binary with the variables each cloud's tools
//! read, as a user would. `scripts/with-servers.py` (started by scripts/test.sh)
//! provides the S3, Azure, GCS and WebDAV servers.

use std::path::Path;
use std::sync::Arc;

use futures::TryStreamExt;
use labelflow::pipeline;
use labelflow::store::Location;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::Value;

use super::common::*;

/// Objects of the scenario, relative to the backend's root: every fixture photo,
/// one corrupt JPEG, a text file and a dot-file (both filtered out when listing).
struct Seeded {
    /// Keys (relative to `in/`) of the images selected by default.
    images: Vec<String>,
}

/// How a backend runs the job and queries the result.
enum Runner {
    /// `labelflow` processes with these extra environment variables.
    Cli(Vec<(String, String)>),
    /// The library, over locations made from the backend's store.
    Library,
}

struct Backend {
    name: &'static str,
    /// URL of the suite's folder on this backend (no trailing slash), e.g.
    /// `s3://bucket/suite` or `memory:///suite`.
    url: String,
    /// The same folder through a store built here, to seed and inspect it.
    store: Arc<dyn ObjectStore>,
    /// The folder's path inside `store`.
    base: String,
    runner: Runner,
    /// Where outputs go when the backend is read-only here: a local folder.
    local_output: Option<std::path::PathBuf>,
    /// How objects are put on the backend to seed it (object_store's own client,
    /// or the emulator's upload API where the emulator lacks the one it uses).
    seed: Seeder,
}

enum Seeder {
    Store,
    /// fake-gcs-server's JSON upload API: (endpoint, bucket).
    GcsUpload(String, String),
}

/// Small batches, one decode thread, few fetches and small parts: a run takes many
/// steps, so a stop after its first batch leaves work for the resumed run.
const SMALL_STEPS: [&str; 8] = [
    "--batch-size",
    "2",
    "--decode-threads",
    "1",
    "--fetch-concurrency",
    "2",
    "--rows-per-part",
    "4",
];

/// One run of the job: input and output relative to the backend's folder.
struct Job<'a> {
    input: &'a str,
    output: &'a str,
    run_id: &'a str,
    include: Option<&'a str>,
    /// Stop the run (SIGTERM; the library's stop request) once it has labelled its
    /// first images, as a scheduler evicting the job would.
    interrupt: bool,
}

impl Backend {
    fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url)
    }

    /// URL of an output folder (on this backend, or the local one for read-only
    /// backends).
    fn out_url(&self, rel: &str) -> String {
        match &self.local_output {
            Some(dir) => dir.join(rel).display().to_string(),
            None => self.url(rel),
        }
    }

    /// The object's path in `store`; `rel` is the raw key (nothing encoded).
    fn key(&self, rel: &str) -> ObjPath {
        let rel = rel.trim_matches('/');
        let key = if self.base.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.base)
        };
        ObjPath::parse(&key).unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    fn location(&self, rel: &str) -> Location {
        let root = self.url.split("://").next().unwrap().to_string() + "://";
        Location::from_store(self.store.clone(), root, self.key(rel).as_ref())
    }

    async fn put(&self, rel: &str, bytes: Vec<u8>) {
        match &self.seed {
            Seeder::Store => self
                .store
                .put(&self.key(rel), PutPayload::from(bytes))
                .await
                .map(|_| ())
                .unwrap_or_else(|e| panic!("{}: seeding {rel}: {e}", self.name)),
            Seeder::GcsUpload(endpoint, bucket) => {
                gcs_upload(endpoint, bucket, self.key(rel).as_ref(), &bytes)
            }
        }
    }

    async fn seed(&self) -> Seeded {
        let photos = data("photos");
        let mut images = Vec::new();
        for file in files_under(&photos) {
            let rel = file
                .strip_prefix(&photos)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            self.put(&format!("in/{rel}"), std::fs::read(&file).unwrap())
                .await;
            images.push(rel);
        }
        self.put(
            "in/broken/corrupt.jpg",
            b"\xff\xd8\xff\xe0 not a JPEG".to_vec(),
        )
        .await;
        images.push("broken/corrupt.jpg".to_string());
        // Enough images that a run stopped after its first batch has work left.
        let small = std::fs::read(data("odd/rgba.png")).unwrap();
        for i in 0..40 {
            self.put(&format!("in/many/copy-{i:02}.png"), small.clone())
                .await;
            images.push(format!("many/copy-{i:02}.png"));
        }
        self.put("in/notes.txt", b"not an image".to_vec()).await;
        self.put(
            "in/.hidden.jpg",
            std::fs::read(&files_under(&photos)[0]).unwrap(),
        )
        .await;
        images.sort();
        Seeded { images }
    }

    /// Run the job; its exit code and JSON summary.
    async fn run(&self, job: &Job<'_>) -> (i32, Value) {
        match &self.runner {
            Runner::Cli(env) => {
                let mut run = RunCmd::new(self.url(job.input), self.out_url(job.output))
                    .env("LABELFLOW_LOG", "labelflow=debug")
                    .args(["--run-id", job.run_id, "--retries", "2", "--json"])
                    .args(SMALL_STEPS);
                for (k, v) in env {
                    run = run.env(k, v);
                }
                if let Some(glob) = job.include {
                    run = run.args(["--include", glob]);
                }
                let mut c = run.command();
                let o = if job.interrupt {
                    interrupted(c)
                } else {
                    c.output().unwrap()
                };
                let summary = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
                    panic!("{}: no JSON summary ({e}): {}", self.name, stderr(&o))
                });
                (o.status.code().unwrap(), summary)
            }
            Runner::Library => {
                let mut b = labelflow::config::RunPlan::builder("unused", "unused", small_model())
                    .batch_size(4)
                    .run_id(job.run_id)
                    .ort_lib(ort_lib());
                if let Some(glob) = job.include {
                    b = b.include(glob);
                }
                let plan = b.rows_per_part(4).build().unwrap();
                let model = labelflow::infer::load_model(&plan.model_options()).unwrap();
                let stop = pipeline::Stop::new();
                let progress = Arc::new(StopAfterFirst {
                    stop: stop.clone(),
                    armed: job.interrupt,
                });
                let summary = pipeline::Run::new(&plan)
                    .opened(self.location(job.input), self.location(job.output), model)
                    .progress(progress)
                    .stop(stop)
                    .execute()
                    .await
                    .unwrap_or_else(|e| panic!("{}: run failed: {e}", self.name));
                let code = i32::from(summary.exit_code());
                (code, serde_json::to_value(&summary).unwrap())
            }
        }
    }

    /// Run SQL over the predictions at `output`; the result as CSV text.
    async fn query(&self, output: &str, sql: &str) -> String {
        match &self.runner {
            Runner::Cli(env) => {
                let o = labelflow()
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .args([
                        "query",
                        "--data",
                        &self.out_url(output),
                        "--format",
                        "csv",
                        sql,
                    ])
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{}: query: {}", self.name, stderr(&o));
                String::from_utf8(o.stdout).unwrap()
            }
            Runner::Library => {
                let ctx = labelflow::query::open_location(&self.location(output))
                    .await
                    .unwrap();
                let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
                let mut out = Vec::new();
                {
                    let mut w = arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .build(&mut out);
                    for b in &batches {
                        w.write(b).unwrap();
                    }
                }
                String::from_utf8(out).unwrap()
            }
        }
    }

    /// The objects under an output folder.
    async fn list_output(&self, rel: &str) -> Vec<String> {
        if let Some(dir) = &self.local_output {
            let mut names: Vec<String> = files_under(&dir.join(rel))
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            names.sort();
            return names;
        }
        let prefix = self.key(rel);
        let mut names: Vec<String> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location.as_ref().to_string())
            .try_collect()
            .await
            .unwrap();
        names.sort();
        names
    }
}

/// Run `c` and send it SIGTERM once its log says the first batch is written; its
/// output once it has exited.
fn interrupted(mut c: std::process::Command) -> std::process::Output {
    use std::io::{BufRead, Read};
    use std::process::Stdio;
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).unwrap();
        buf
    });
    let mut err = Vec::new();
    let mut signalled = false;
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if !signalled && line.contains("batch written") {
            signalled = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap()
                .success();
        }
        err.extend_from_slice(line.as_bytes());
        err.push(b'\n');
    }
    let status = child.wait().unwrap();
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err,
    }
}

/// Progress that asks the run to stop once it has labelled something (when armed).
struct StopAfterFirst {
    stop: pipeline::Stop,
    armed: bool,
}

impl pipeline::Progress for StopAfterFirst {
    fn started(&self, _run_id: &str, stats: Arc<pipeline::Stats>) {
        if !self.armed {
            return;
        }
        let stop = self.stop.clone();
        tokio::spawn(async move {
            while stats.labelled.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            stop.request();
        });
    }
}

/// The single data row of a one-row CSV result, split on commas.
fn one_row(csv: &str) -> Vec<String> {
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "expected a header and one row: {csv}");
    lines[1].split(',').map(str::to_string).collect()
}

fn count(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("summary has no {field}: {v}"))
}

/// The scenario every backend passes.
async fn conformance(b: Backend) {
    let name = b.name;
    let seeded = b.seed().await;
    let total = seeded.images.len() as u64;

    // Listing with filters, streamed; a first run is stopped (SIGTERM) after its
    // first batch and publishes what it labelled.
    let first = Job {
        input: "in",
        output: "out",
        run_id: "suite",
        include: None,
        interrupt: true,
    };
    let (code, s) = b.run(&first).await;
    assert_eq!(
        code, 3,
        "{name}: the stopped run exits 3 (interrupted): {s}"
    );
    let published = count(&s, "rows_written");
    assert!(
        published > 0 && published < total,
        "{name}: {published} of {total} published: {s}"
    );

    // Resume: the same run continues and labels only what is left.
    let rest = Job {
        interrupt: false,
        ..first
    };
    let (code, s) = b.run(&rest).await;
    assert!(code == 0 || code == 1, "{name}: exit {code}: {s}");
    assert_eq!(count(&s, "skipped"), published, "{name}: {s}");
    assert_eq!(count(&s, "rows_written"), total - published, "{name}: {s}");
    assert_eq!(
        count(&s, "listed"),
        total + 2,
        "{name}: text and dot-file listed: {s}"
    );
    assert_eq!(count(&s, "selected"), total, "{name}: {s}");
    assert!(s["resumed"].as_bool().unwrap(), "{name}: {s}");

    // Parts are committed objects; nothing half-written is left behind.
    let parts = b.list_output("out/run_id=suite").await;
    assert!(
        parts.iter().any(|p| p.ends_with(".parquet")),
        "{name}: no parts in {parts:?}"
    );
    assert!(
        parts
            .iter()
            .all(|p| p.ends_with(".parquet") || p.ends_with(".json")),
        "{name}: unexpected objects {parts:?}"
    );

    // Read back with SQL: every image once, the corrupt one an error row, URIs that
    // name this backend.
    let row = one_row(
        &b.query(
            "out",
            "SELECT count(*) AS n, count(DISTINCT uri) AS uris, count(error) AS errors, \
             min(uri) AS first FROM predictions",
        )
        .await,
    );
    assert_eq!(row[0], total.to_string(), "{name}: {row:?}");
    assert_eq!(row[1], total.to_string(), "{name}: {row:?}");
    assert_eq!(row[2], "1", "{name}: {row:?}");
    assert!(
        row[3].starts_with(&b.url("in/")),
        "{name}: uri {} does not start with {}",
        row[3],
        b.url("in/")
    );

    // Filters: --include narrows the selection, and the summary says what it removed.
    let pngs = seeded.images.iter().filter(|k| k.ends_with(".png")).count() as u64;
    assert!(pngs > 0, "the fixtures hold PNGs");
    let (code, s) = b
        .run(&Job {
            input: "in",
            output: "out-png",
            run_id: "png",
            include: Some("**.png"),
            interrupt: false,
        })
        .await;
    assert_eq!(code, 0, "{name}: {s}");
    assert_eq!(count(&s, "selected"), pngs, "{name}: {s}");

    // A manifest on the same store: two objects, one missing (an error row, not a
    // crash), one blank row (skipped), extra columns ignored.
    let present = &seeded.images[..2];
    let mut csv = String::from("uri,note\n");
    for k in present {
        csv.push_str(&format!("{},keep\n", b.url(&format!("in/{k}"))));
    }
    csv.push_str(&format!("{},gone\n", b.url("in/missing.jpg")));
    csv.push_str(",blank\n");
    b.put("lists/todo.csv", csv.into_bytes()).await;
    let (code, s) = b
        .run(&Job {
            input: "lists/todo.csv",
            output: "out-list",
            run_id: "list",
            include: None,
            interrupt: false,
        })
        .await;
    assert_eq!(code, 1, "{name}: the missing object is an error row: {s}");
    assert_eq!(count(&s, "rows_written"), 3, "{name}: {s}");
    assert_eq!(count(&s, "failed"), 1, "{name}: {s}");
    let row = one_row(
        &b.query(
            "out-list",
            "SELECT count(*) AS n, count(error) AS errors, max(size_bytes) AS size, \
             sum(CASE WHEN error LIKE '%missing.jpg%' OR uri LIKE '%missing.jpg' THEN 1 ELSE 0 END) AS missing \
             FROM predictions",
        )
        .await,
    );
    assert_eq!(row[0], "3", "{name}: {row:?}");
    assert_eq!(row[1], "1", "{name}: {row:?}");
    assert!(
        row[2].parse::<u64>().unwrap() > 0,
        "{name}: sizes come from the fetch: {row:?}"
    );
    assert_eq!(row[3], "1", "{name}: {row:?}");
}

/// Keys that a URL must percent-encode (or must not decode twice), one in a sub-folder.
const AWKWARD_KEYS: [&str; 8] = [
    "sp ace.jpg",
    "100%.jpg",
    "p%20q.jpg",
    "what?.jpg",
    "x#y.jpg",
    "a+b.jpg",
    "caf\u{e9}-\u{6771}\u{4eac}.jpg",
    "sub folder/deep/z.jpg",
];

/// The relabel loop of docs/stores.md over keys with awkward characters: label a folder, query
/// its `uri` column into a manifest, label the manifest. Every `uri` is a URL that
/// names its object: the second run fetches every one, with no error row, and writes
/// the same `uri`s; `key` keeps the raw key.
async fn uris_round_trip(b: Backend) {
    let name = b.name;
    let Runner::Cli(env) = &b.runner else {
        unreachable!("the round trip runs the binary")
    };
    let photo = files_under(&data("photos"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "jpg"))
        .unwrap();
    let jpeg = std::fs::read(photo).unwrap();
    for k in AWKWARD_KEYS {
        b.put(&format!("rt/{k}"), jpeg.clone()).await;
    }
    let job = |input, output, run_id| Job {
        input,
        output,
        run_id,
        include: None,
        interrupt: false,
    };
    let (code, s) = b.run(&job("rt", "rt-out", "first")).await;
    assert_eq!(code, 0, "{name}: {s}");
    assert_eq!(
        count(&s, "rows_written"),
        AWKWARD_KEYS.len() as u64,
        "{name}: {s}"
    );

    // `key` is raw; `uri` is a URL without a query or fragment, decoding to the key.
    let listed = b
        .query("rt-out", "SELECT key, uri FROM predictions ORDER BY key")
        .await;
    let rows: Vec<(String, String)> = listed
        .lines()
        .skip(1)
        .map(|l| {
            let (k, u) = l.split_once(',').unwrap();
            (k.to_string(), u.to_string())
        })
        .collect();
    let mut want: Vec<&str> = AWKWARD_KEYS.to_vec();
    want.sort();
    let keys: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, want, "{name}: raw keys");
    for (key, uri) in &rows {
        let url = url::Url::parse(uri).unwrap_or_else(|e| panic!("{name}: {uri}: {e}"));
        assert!(
            url.query().is_none() && url.fragment().is_none(),
            "{name}: {key} -> {uri}"
        );
        let path = ObjPath::from_url_path(url.path()).unwrap();
        assert!(
            path.as_ref().ends_with(&format!("rt/{key}")),
            "{name}: {key} -> {uri}"
        );
    }

    // The query's output is the manifest of the next run.
    let manifest = scratch(&format!("round-trip-{name}")).join("uris.parquet");
    let o = labelflow()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["query", "--data", &b.out_url("rt-out"), "--out"])
        .arg(&manifest)
        .arg("SELECT uri FROM predictions")
        .output()
        .unwrap();
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    b.put("lists/uris.parquet", std::fs::read(&manifest).unwrap())
        .await;
    let (code, s) = b.run(&job("lists/uris.parquet", "rt-again", "again")).await;
    assert_eq!(code, 0, "{name}: every uri fetched again: {s}");
    assert_eq!(
        count(&s, "rows_written"),
        AWKWARD_KEYS.len() as u64,
        "{name}: {s}"
    );
    assert_eq!(count(&s, "failed"), 0, "{name}: {s}");
    let again = b
        .query(
            "rt-again",
            "SELECT uri, count(error) AS errors FROM predictions GROUP BY uri ORDER BY uri",
        )
        .await;
    let mut first: Vec<String> = rows.iter().map(|(_, u)| format!("{u},0")).collect();
    first.sort();
    let second: Vec<String> = again.lines().skip(1).map(str::to_string).collect();
    assert_eq!(second, first, "{name}: the same uris, no error");
}

#[test]
fn uris_round_trip_local() {
    block_on(uris_round_trip(local(&scratch("round-trip-local-store"))));
}

#[test]
fn uris_round_trip_s3() {
    let Some(e) = require_s3_endpoint() else {
        return;
    };
    block_on(uris_round_trip(s3(&e, "round-trip")));
}

#[test]
fn uris_round_trip_azure() {
    let Some(e) = endpoint("LABELFLOW_TEST_AZURE_ENDPOINT", "an Azure Blob emulator") else {
        return;
    };
    block_on(uris_round_trip(azure(&e, "suite", "az")));
}

/// A pre-signed S3 URL in a manifest is fetched as written (the run has no AWS
/// credentials of its own); one for a missing object is an error row; the signature
/// appears in neither the error column nor the log.
#[test]
fn a_presigned_s3_url_in_a_manifest_is_labelled() {
    use object_store::signer::Signer;
    let Some(endpoint) = require_s3_endpoint() else {
        return;
    };
    create_bucket(&endpoint, "presigned");
    let store = object_store::aws::AmazonS3Builder::from_env()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_bucket_name("presigned")
        .build()
        .unwrap();
    let photo = files_under(&data("photos"))[0].clone();
    let key = ObjPath::parse("signed/cat photo#1.jpg").unwrap();
    let (links, signatures) = block_on_value(async {
        store
            .put(&key, PutPayload::from(std::fs::read(&photo).unwrap()))
            .await
            .unwrap();
        let ttl = std::time::Duration::from_secs(900);
        let good = store
            .signed_url(http::Method::GET, &key, ttl)
            .await
            .unwrap();
        let gone = store
            .signed_url(http::Method::GET, &ObjPath::from("signed/gone.jpg"), ttl)
            .await
            .unwrap();
        let sig = |u: &url::Url| {
            u.query_pairs()
                .find(|(k, _)| k == "X-Amz-Signature")
                .map(|(_, v)| v.to_string())
                .unwrap()
        };
        let signatures = vec![sig(&good), sig(&gone)];
        (vec![good.to_string(), gone.to_string()], signatures)
    });
    assert!(links[0].contains("X-Amz-Signature="), "{}", links[0]);
    let dir = scratch("presigned");
    let manifest = dir.join("links.csv");
    std::fs::write(&manifest, format!("uri\n{}\n{}\n", links[0], links[1])).unwrap();
    let out = dir.join("out");
    let o = RunCmd::new(&manifest, &out)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("LABELFLOW_LOG", "labelflow=debug")
        .args(["--retries", "1", "--json"])
        .output();
    let s: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no JSON summary ({e}): {}", stderr(&o)));
    assert_eq!(
        o.status.code(),
        Some(1),
        "the missing object fails its row: {s}"
    );
    assert_eq!(count(&s, "rows_written"), 2, "{s}");
    assert_eq!(count(&s, "failed"), 1, "{s}");
    let rows = preds(&read_parts(&out));
    let good = rows.iter().find(|r| r.uri == links[0]).unwrap();
    assert!(good.error.is_none(), "{:?}", good.error);
    let gone = rows.iter().find(|r| r.uri == links[1]).unwrap();
    let error = gone.error.as_deref().unwrap();
    assert!(error.contains("404"), "{error}");
    let log = stderr(&o);
    for sig in &signatures {
        assert!(
            !error.contains(sig.as_str()),
            "signature in the error column: {error}"
        );
        assert!(!log.contains(sig.as_str()), "signature in the log: {log}");
    }
}

fn block_on_value<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

// --- the backends -------------------------------------------------------------------

fn memory() -> Backend {
    Backend {
        name: "memory",
        url: "memory:///suite".into(),
        store: Arc::new(object_store::memory::InMemory::new()),
        base: "suite".into(),
        runner: Runner::Library,
        local_output: None,
        seed: Seeder::Store,
    }
}

fn local(dir: &Path) -> Backend {
    let dir = std::fs::canonicalize(dir).unwrap();
    Backend {
        name: "local",
        url: format!("file://{}", dir.display()),
        store: Arc::new(object_store::local::LocalFileSystem::new()),
        base: dir.to_string_lossy().trim_start_matches('/').to_string(),
        runner: Runner::Cli(Vec::new()),
        local_output: None,
        seed: Seeder::Store,
    }
}

fn s3(endpoint: &str, bucket: &str) -> Backend {
    create_bucket(endpoint, bucket);
    let store = object_store::aws::AmazonS3Builder::from_env()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .build()
        .unwrap();
    Backend {
        name: "s3",
        url: format!("s3://{bucket}/suite"),
        store: Arc::new(store),
        base: "suite".into(),
        runner: Runner::Cli(vec![
            ("AWS_ENDPOINT".into(), endpoint.into()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ]),
        local_output: None,
        seed: Seeder::Store,
    }
}

/// The variables that point object_store's Azure client at the emulator.
pub fn azure_env(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
        ("AZURITE_BLOB_STORAGE_URL".into(), endpoint.into()),
    ]
}

/// `container` is one of those scripts/with-servers.py creates on the emulator.
fn azure(endpoint: &str, container: &str, url_style: &str) -> Backend {
    // The store built here reads the emulator's address from the same variable.
    std::env::set_var("AZURITE_BLOB_STORAGE_URL", endpoint);
    let store = object_store::azure::MicrosoftAzureBuilder::new()
        .with_use_emulator(true)
        .with_container_name(container)
        .build()
        .unwrap();
    let url = match url_style {
        "abfss" => format!("abfss://{container}@devstoreaccount1.dfs.core.windows.net/suite"),
        _ => format!("az://{container}/suite"),
    };
    Backend {
        name: "azure",
        url,
        store: Arc::new(store),
        base: "suite".into(),
        runner: Runner::Cli(azure_env(endpoint)),
        local_output: None,
        seed: Seeder::Store,
    }
}

/// The variables that point object_store's GCS client at the emulator: its base URL,
/// and a service-account key with OAuth turned off (no token is fetched).
pub fn gcs_env(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("GOOGLE_BASE_URL".into(), endpoint.into()),
        (
            "GOOGLE_SERVICE_ACCOUNT_KEY".into(),
            r#"{"private_key":"unused","private_key_id":"unused","client_email":"test@example.com","disable_oauth":true}"#.into(),
        ),
    ]
}

fn gcs(endpoint: &str, bucket: &str) -> Backend {
    create_gcs_bucket(endpoint, bucket);
    let env = gcs_env(endpoint);
    let store = object_store::gcp::GoogleCloudStorageBuilder::new()
        .with_bucket_name(bucket)
        .with_base_url(endpoint)
        .with_service_account_key(&env[1].1)
        .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
        .build()
        .unwrap();
    Backend {
        name: "gcs",
        url: format!("gs://{bucket}/suite"),
        store: Arc::new(store),
        base: "suite".into(),
        runner: Runner::Cli(env),
        // The emulator (fake-gcs-server) lacks the XML API upload object_store
        // writes with, so outputs go to a local folder: GCS reads are tested for
        // real, GCS writes are not.
        local_output: Some(scratch("suite-gcs-out")),
        seed: Seeder::GcsUpload(endpoint.to_string(), bucket.to_string()),
    }
}

/// Put an object through fake-gcs-server's JSON upload API.
fn gcs_upload(endpoint: &str, bucket: &str, name: &str, bytes: &[u8]) {
    use std::io::{Read, Write};
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let name = url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>();
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    write!(
        conn,
        "POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name={name} HTTP/1.1\r\n\
         Host: {host}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        bytes.len()
    )
    .unwrap();
    conn.write_all(bytes).unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "uploading {name}: {reply}"
    );
}

fn create_gcs_bucket(endpoint: &str, bucket: &str) {
    use std::io::{Read, Write};
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let body = format!(r#"{{"name":"{bucket}"}}"#);
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    write!(
        conn,
        "POST /storage/v1/b HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.1 409"),
        "creating bucket {bucket}: {reply}"
    );
}

#[track_caller]
fn endpoint(var: &str, what: &str) -> Option<String> {
    require(
        &format!("{what} ({var})"),
        std::env::var(var).ok().filter(|e| !e.trim().is_empty()),
        "scripts/test.sh starts it through scripts/with-servers.py",
    )
}

fn block_on(f: impl std::future::Future<Output = ()>) {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

#[test]
fn conformance_memory() {
    block_on(conformance(memory()));
}

#[test]
fn conformance_local() {
    block_on(conformance(local(&scratch("suite-local"))));
}

#[test]
fn conformance_s3() {
    let Some(e) = require_s3_endpoint() else {
        return;
    };
    block_on(conformance(s3(&e, "suite")));
}

#[test]
fn conformance_azure() {
    let Some(e) = endpoint("LABELFLOW_TEST_AZURE_ENDPOINT", "an Azure Blob emulator") else {
        return;
    };
    block_on(conformance(azure(&e, "suite", "az")));
}

#[test]
fn conformance_azure_abfss_urls() {
    let Some(e) = endpoint("LABELFLOW_TEST_AZURE_ENDPOINT", "an Azure Blob emulator") else {
        return;
    };
    block_on(conformance(azure(&e, "suite-abfss", "abfss")));
}

#[test]
fn conformance_gcs() {
    let Some(e) = endpoint("LABELFLOW_TEST_GCS_ENDPOINT", "a GCS emulator") else {
        return;
    };
    block_on(conformance(gcs(&e, "suite")));
}

// --- HTTP(S), WebDAV and manifests across stores ------------------------------------

/// The WebDAV server's URL and the folder it serves.
fn webdav() -> Option<(String, std::path::PathBuf)> {
    let url = endpoint("LABELFLOW_TEST_WEBDAV_URL", "a WebDAV server")?;
    let dir = std::env::var("LABELFLOW_TEST_WEBDAV_DIR").expect("LABELFLOW_TEST_WEBDAV_DIR");
    Some((url, dir.into()))
}

fn run_to_local(env: &[(String, String)], input: &str, out: &Path, extra: &[&str]) -> (i32, Value) {
    let mut cmd = RunCmd::new(input, out).batch(4).args(extra);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    cmd.summary()
}

/// A folder over HTTP is listed with WebDAV's PROPFIND; a single object is fetched by
/// its URL.
#[test]
fn http_folder_from_webdav_and_a_single_url() {
    let Some((url, dir)) = webdav() else { return };
    copy_tree(&data("photos"), &dir.join("web-photos"));
    let images = files_under(&data("photos")).len();
    let out = scratch("webdav-folder-out");
    let (code, s) = run_to_local(&[], &format!("{url}/web-photos/"), &out, &[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(count(&s, "rows_written"), images as u64, "{s}");
    let rows = preds(&read_parts(&out));
    assert!(rows
        .iter()
        .all(|r| r.uri.starts_with(&format!("{url}/web-photos/"))));
    assert!(
        rows.iter().all(|r| r.error.is_none()),
        "{:?}",
        rows.iter().map(|r| &r.error).collect::<Vec<_>>()
    );

    let one = files_under(&dir.join("web-photos"))[0]
        .strip_prefix(&dir)
        .unwrap()
        .to_string_lossy()
        .to_string();
    let out = scratch("webdav-one-out");
    let (code, s) = run_to_local(&[], &format!("{url}/{one}"), &out, &[]);
    assert_eq!(code, 0, "{s}");
    let rows = preds(&read_parts(&out));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].uri, format!("{url}/{one}"));
}

/// A manifest on S3 (Parquet) naming objects in an S3 bucket, on a web host and on
/// the local disk, plus rows that cannot be fetched: every row becomes one output row,
/// the unfetchable ones error rows, and the run finishes (exit 1). The output of a
/// named query is itself a manifest: "relabel exactly these" is one more run.
#[test]
fn manifest_across_stores_and_hosts() {
    let Some(s3_endpoint) = require_s3_endpoint() else {
        return;
    };
    let Some((web, web_dir)) = webdav() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = s3(&s3_endpoint, "manifests");
    let photos = files_under(&data("photos"));
    rt.block_on(async {
        for (i, f) in photos.iter().take(3).enumerate() {
            bucket
                .put(&format!("imgs/{i}.jpg"), std::fs::read(f).unwrap())
                .await;
        }
    });
    copy_tree(&data("photos"), &web_dir.join("mixed"));
    let web_files = files_under(&web_dir.join("mixed"));
    let local = std::fs::canonicalize(&photos[0]).unwrap();
    let mut uris: Vec<String> = (0..3)
        .map(|i| bucket.url(&format!("imgs/{i}.jpg")))
        .collect();
    for f in web_files.iter().take(2) {
        let rel = f
            .strip_prefix(&web_dir)
            .unwrap()
            .to_string_lossy()
            .to_string();
        uris.push(format!("{web}/{rel}"));
    }
    uris.push(local.to_string_lossy().to_string());
    uris.push(format!("file://{}", local.display()));
    // A link with a query string is fetched as written (the server ignores `width`).
    let first_web = web_files[0]
        .strip_prefix(&web_dir)
        .unwrap()
        .to_string_lossy()
        .to_string();
    uris.push(format!("{web}/{first_web}?width=200"));
    let good = uris.len();
    // Nothing listens on port 9 (discard): connection refused, after the retries.
    uris.push("http://127.0.0.1:9/gone.jpg".to_string());
    uris.push(format!("{web}/mixed/nothing-here.jpg"));
    uris.push(format!("{web}/mixed/x.jpg?width=200"));
    uris.push("photos/relative.jpg".to_string());
    let bad = uris.len() - good;

    // The manifest is a Parquet file in the bucket, with an extra column.
    let batch = arrow::array::RecordBatch::try_from_iter([
        (
            "uri",
            Arc::new(arrow::array::StringArray::from(uris.clone())) as arrow::array::ArrayRef,
        ),
        (
            "source",
            Arc::new(arrow::array::StringArray::from(vec!["test"; uris.len()])) as _,
        ),
    ])
    .unwrap();
    let mut bytes = Vec::new();
    {
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    rt.block_on(bucket.put("lists/mixed.parquet", bytes));
    let env = match &bucket.runner {
        Runner::Cli(env) => env.clone(),
        Runner::Library => unreachable!(),
    };
    let out = scratch("manifest-mixed-out");
    let (code, s) = run_to_local(
        &env,
        &bucket.url("lists/mixed.parquet"),
        &out,
        &[
            "--retries",
            "1",
            "--request-timeout",
            "5",
            "--retry-timeout",
            "10",
            "--per-host-concurrency",
            "2",
        ],
    );
    assert_eq!(code, 1, "{s}");
    assert_eq!(count(&s, "rows_written"), uris.len() as u64, "{s}");
    assert_eq!(count(&s, "failed"), bad as u64, "{s}");
    let rows = preds(&read_parts(&out));
    let mut got: Vec<&str> = rows.iter().map(|r| r.uri.as_str()).collect();
    got.sort();
    let mut want: Vec<&str> = uris.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(got, want, "one row per manifest row, URIs as written");
    for r in &rows {
        let should_fail = uris.iter().position(|u| u == &r.uri).unwrap() >= good;
        assert_eq!(r.error.is_some(), should_fail, "{}: {:?}", r.uri, r.error);
    }
    let missing_link = rows
        .iter()
        .find(|r| r.uri.ends_with("x.jpg?width=200"))
        .unwrap();
    assert!(
        missing_link.error.as_deref().unwrap().contains("404"),
        "{:?}",
        missing_link.error
    );

    // A named query's output is a manifest: relabel exactly those images.
    let todo = scratch("manifest-mixed").join("todo.parquet");
    let q = labelflow()
        .args([
            "query",
            "--data",
            out.to_str().unwrap(),
            "--name",
            "relabel_candidates",
        ])
        .args(["--param", "threshold=1.1", "--out", todo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", stderr(&q));
    let again = scratch("manifest-relabel-out");
    let (code, s) = run_to_local(&env, todo.to_str().unwrap(), &again, &[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(count(&s, "rows_written"), good as u64, "{s}");
}

/// A manifest without a `uri` column is refused with a message naming the columns it
/// has; a CSV and a JSON-lines manifest are read the same way as Parquet.
#[test]
fn manifest_formats_and_a_missing_uri_column() {
    let dir = scratch("manifest-formats");
    let photos: Vec<String> = files_under(&data("photos"))
        .iter()
        .take(2)
        .map(|p| std::fs::canonicalize(p).unwrap().display().to_string())
        .collect();
    let wrong = dir.join("wrong.csv");
    std::fs::write(&wrong, format!("path,label\n{},cat\n", photos[0])).unwrap();
    let (code, s) = {
        let o = labelflow()
            .args(["run", "--input", wrong.to_str().unwrap(), "--output"])
            .arg(dir.join("out-wrong"))
            .args(["--model", small_model().to_str().unwrap()])
            .output()
            .unwrap();
        (o.status.code().unwrap(), stderr(&o))
    };
    assert_eq!(code, 2, "{s}");
    assert!(
        s.contains("no `uri` column") && s.contains("path, label"),
        "{s}"
    );

    let jsonl = dir.join("list.jsonl");
    let lines: Vec<String> = photos
        .iter()
        .map(|p| format!("{{\"uri\": \"file://{p}\", \"label\": \"x\"}}"))
        .collect();
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let out = dir.join("out-jsonl");
    let (code, s) = run_to_local(&[], jsonl.to_str().unwrap(), &out, &[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(count(&s, "rows_written"), 2, "{s}");

    // Sharding a manifest: the shards' rows together are the manifest, once each.
    let csv = dir.join("list.csv");
    let all: Vec<String> = files_under(&data("photos"))
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap().display().to_string())
        .collect();
    std::fs::write(&csv, format!("uri\n{}\n", all.join("\n"))).unwrap();
    let mut seen = Vec::new();
    for shard in ["0/2", "1/2"] {
        let out = dir.join(format!("out-shard-{}", &shard[..1]));
        let (code, s) = run_to_local(&[], csv.to_str().unwrap(), &out, &["--shard", shard]);
        assert_eq!(code, 0, "{s}");
        seen.extend(preds(&read_parts(&out)).into_iter().map(|r| r.uri));
    }
    seen.sort();
    let mut want = all.clone();
    want.sort();
    assert_eq!(seen, want);
}

/// A memory store that counts GETs in flight (each held for a few milliseconds), to
/// check the per-host bound.
#[derive(Debug)]
struct CountingStore {
    inner: object_store::memory::InMemory,
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Display for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CountingStore")
    }
}

#[async_trait::async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &ObjPath,
        payload: PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjPath,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjPath,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        use std::sync::atomic::Ordering::SeqCst;
        // Only whole-object reads of images count (the manifest itself is read in ranges).
        let counted = location.as_ref().ends_with(".png");
        if counted {
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        }
        let got = self.inner.get_opts(location, options).await;
        if counted {
            self.in_flight.fetch_sub(1, SeqCst);
        }
        got
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<ObjPath>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<ObjPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjPath>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjPath>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjPath,
        to: &ObjPath,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// `--per-host-concurrency` bounds the requests in flight to one store, below the
/// overall `--fetch-concurrency`.
#[test]
fn a_manifest_keeps_to_the_per_host_bound() {
    block_on(async {
        let png = std::fs::read(data("odd/rgba.png")).unwrap();
        for per_host in [2usize, 5] {
            let store = Arc::new(CountingStore {
                inner: object_store::memory::InMemory::new(),
                in_flight: Default::default(),
                most: Default::default(),
            });
            let mut csv = String::from("uri\n");
            for i in 0..30 {
                let key = format!("img/{i:02}.png");
                store
                    .put(&ObjPath::from(key.as_str()), PutPayload::from(png.clone()))
                    .await
                    .unwrap();
                csv.push_str(&format!("memory:///{key}\n"));
            }
            store
                .put(
                    &ObjPath::from("list.csv"),
                    PutPayload::from(csv.into_bytes()),
                )
                .await
                .unwrap();
            let tuning = labelflow::config::Tuning {
                fetch_concurrency: 16,
                per_host_concurrency: per_host,
                ..Default::default()
            };
            let plan = labelflow::config::RunPlan::builder("unused", "unused", small_model())
                .batch_size(4)
                .tuning(tuning)
                .ort_lib(ort_lib())
                .build()
                .unwrap();
            let model = labelflow::infer::load_model(&plan.model_options()).unwrap();
            let shared: Arc<dyn ObjectStore> = store.clone();
            let input = Location::from_store(shared.clone(), "memory://", "list.csv");
            let output = Location::from_store(shared, "memory://", "out");
            let summary = pipeline::Run::new(&plan)
                .opened(input.clone(), output.clone(), model)
                .execute()
                .await
                .unwrap();
            assert_eq!(summary.rows_written, 30);
            assert_eq!(summary.failed, 0);
            let most = store.most.load(std::sync::atomic::Ordering::SeqCst);
            assert!(
                most <= per_host && most >= 2,
                "per-host bound {per_host}: {most} GETs were in flight at once"
            );
        }
    });
}

/// A manifest run stopped by SIGTERM continues where it stopped, as a prefix run does.
#[test]
fn a_stopped_manifest_run_resumes() {
    let dir = scratch("manifest-resume");
    let src = std::fs::read(data("odd/rgba.png")).unwrap();
    let mut csv = String::from("uri\n");
    for i in 0..60 {
        let p = dir.join(format!("img-{i:02}.png"));
        std::fs::write(&p, &src).unwrap();
        csv.push_str(&format!("{}\n", p.display()));
    }
    let list = dir.join("list.csv");
    std::fs::write(&list, csv).unwrap();
    let out = dir.join("out");
    let args = |c: &mut std::process::Command| {
        c.args([
            "run",
            "--input",
            list.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
        .args([
            "--model",
            small_model().to_str().unwrap(),
            "--json",
            "--run-id",
            "m",
        ])
        .args(SMALL_STEPS);
    };
    let mut c = labelflow();
    c.env("LABELFLOW_LOG", "labelflow=debug");
    args(&mut c);
    let o = interrupted(c);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let first: Value = serde_json::from_slice(&o.stdout).unwrap();
    let published = count(&first, "rows_written");
    assert!(published > 0 && published < 60, "{first}");
    let mut c = labelflow();
    args(&mut c);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let second: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(count(&second, "skipped"), published, "{second}");
    assert_eq!(count(&second, "rows_written"), 60 - published, "{second}");
    let rows = preds(&read_parts(&out));
    let mut uris: Vec<&str> = rows.iter().map(|r| r.uri.as_str()).collect();
    uris.sort();
    uris.dedup();
    assert_eq!(uris.len(), 60, "every row once");
    assert_eq!(rows.len(), 60, "no duplicates");
}
