//! The job against a failing object store: a fault-injecting proxy
//! (`tests/tools/s3_fault_proxy.py`) sits between labelflow and the S3 server and
//! answers a seeded share of requests with 503, 500, a reset connection or a stall.
//! Every test reads the output back from the S3 server directly, not through the proxy.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::aws::AmazonS3;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::Value;

use super::common::*;

/// Longest a single labelflow run may take before the test kills it and fails: a hang
/// is a defect, not something to wait out.
const RUN_DEADLINE: Duration = Duration::from_secs(100);

// --- the proxy --------------------------------------------------------------------

/// The fault proxy as a child process, killed when dropped.
struct Proxy {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    port: u16,
    log: std::path::PathBuf,
}

impl Proxy {
    /// Start the proxy in front of `upstream` with extra command-line `args`.
    fn start(python: &str, upstream: &str, name: &str, args: &[&str]) -> Self {
        let log = scratch("fault-proxy-logs").join(format!("{name}.log"));
        let mut child = Command::new(python)
            .arg(root().join("tests/tools/s3_fault_proxy.py"))
            .args(["--upstream", upstream, "--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("LISTENING http://")
            .and_then(|hp| hp.rsplit(':').next())
            .and_then(|p| p.parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the fault proxy did not start (first line {line:?}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Self {
            child,
            _stdout: stdout,
            port,
            log,
        }
    }

    /// The endpoint labelflow is pointed at.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn control(&self, method: &str, path: &str, body: &str) -> Value {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            conn,
            "{method} /__proxy__/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        let (head, json) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "proxy {path}: {reply}");
        serde_json::from_str(json).unwrap()
    }

    /// How many lines of the proxy's log contain every one of `needles` (it logs one
    /// line per fault, naming the class and the request).
    fn log_lines(&self, needles: &[&str]) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    fn stats(&self) -> Value {
        self.control("GET", "stats", "")
    }

    /// Change the proxy's settings (rates, faults, …) while it runs.
    fn configure(&self, settings: &str) {
        self.control("POST", "config", settings);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            eprintln!(
                "fault proxy log (last {} lines):\n{}",
                tail.len(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// `stats.classes.<class>.faults.<kind>` (or `faults_total` when `kind` is `None`).
fn faults(stats: &Value, class: &str, kind: Option<&str>) -> u64 {
    let c = &stats["classes"][class];
    match kind {
        Some(k) => c["faults"][k].as_u64().unwrap(),
        None => c["faults_total"].as_u64().unwrap(),
    }
}

fn requests(stats: &Value, class: &str) -> u64 {
    stats["classes"][class]["requests"].as_u64().unwrap()
}

/// One line per class: requests and faults by kind.
fn describe(stats: &Value) -> String {
    ["get", "list", "upload", "other"]
        .iter()
        .map(|class| {
            let f = &stats["classes"][class]["faults"];
            let kinds: Vec<String> = f
                .as_object()
                .unwrap()
                .iter()
                .filter(|(_, n)| n.as_u64() != Some(0))
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            format!(
                "{class}: {} requests, {} faults [{}]",
                requests(stats, class),
                faults(stats, class, None),
                kinds.join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

// --- the S3 server, directly ----------------------------------------------------------

/// One test's S3 side: the proxy's Python, the server, a fresh bucket on it, and a
/// direct (proxy-free) client of that bucket with a runtime to drive it.
struct S3Test {
    python: String,
    endpoint: String,
    bucket: String,
    rt: tokio::runtime::Runtime,
    store: AmazonS3,
}

fn s3_test(name: &str) -> Option<S3Test> {
    let python = require_python("the standard library (the fault proxy)")?;
    let endpoint = require_s3_endpoint()?;
    let bucket = fresh_bucket(&endpoint, name);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = direct_store(&endpoint, &bucket);
    Some(S3Test {
        python,
        endpoint,
        bucket,
        rt,
        store,
    })
}

/// A bucket of its own for one test and one test process (the S3 server may outlive
/// a run of the suite), created on the S3 server.
fn fresh_bucket(endpoint: &str, name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let bucket = format!(
        "faults-{name}-{:x}-{:x}",
        std::process::id(),
        nanos % (1 << 32)
    );
    create_bucket(endpoint, &bucket);
    bucket
}

fn direct_store(endpoint: &str, bucket: &str) -> AmazonS3 {
    object_store::aws::AmazonS3Builder::from_env()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .build()
        .unwrap()
}

/// A small JPEG that differs from its neighbours.
fn jpeg(i: usize) -> Vec<u8> {
    let img = image::RgbImage::from_fn(48, 40, |x, y| {
        image::Rgb([(i * 7 % 256) as u8, (x * 5) as u8, (y * 6 + i as u32) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// Put `keys` (each a small JPEG) under `in/` in the bucket, directly.
fn upload_images(rt: &tokio::runtime::Runtime, store: &AmazonS3, keys: &[String]) {
    rt.block_on(async {
        for (i, key) in keys.iter().enumerate() {
            let path = object_store::path::Path::from(format!("in/{key}"));
            store.put(&path, PutPayload::from(jpeg(i))).await.unwrap();
        }
    });
}

fn image_keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("img-{i:04}.jpg")).collect()
}

/// Every `.parquet` object under `prefix`, read directly; an object that is not a
/// complete Parquet file fails the test (a reader must never see a partial part).
fn parquet_objects(
    rt: &tokio::runtime::Runtime,
    store: &AmazonS3,
    prefix: &str,
) -> Vec<(String, Vec<arrow::array::RecordBatch>)> {
    rt.block_on(store_parts(store, prefix))
}

/// How many `.parquet` objects the bucket lists under `out/`.
fn part_count(rt: &tokio::runtime::Runtime, store: &AmazonS3) -> usize {
    rt.block_on(async {
        let listed: Vec<_> = futures::TryStreamExt::try_collect(store.list(Some(&"out".into())))
            .await
            .unwrap();
        listed
            .iter()
            .filter(|m| m.location.as_ref().ends_with(".parquet"))
            .count()
    })
}

/// Every row under `out/`, read directly.
fn output_rows(rt: &tokio::runtime::Runtime, store: &AmazonS3) -> Vec<Pred> {
    let batches: Vec<_> = parquet_objects(rt, store, "out")
        .into_iter()
        .flat_map(|(_, b)| b)
        .collect();
    preds(&batches)
}

/// The status in every run record under `out/_runs/`, by record key.
fn run_statuses(rt: &tokio::runtime::Runtime, store: &AmazonS3) -> BTreeMap<String, String> {
    rt.block_on(store_objects(store, "out/_runs", ".json"))
        .into_iter()
        .map(|(key, bytes)| {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            (key, v["status"].as_str().unwrap_or("?").to_string())
        })
        .collect()
}

/// Each key of `want` exactly once in `rows`, and nothing else.
fn assert_exactly_once(rows: &[Pred], want: &[String]) {
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let unique: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(
        keys.len(),
        unique.len(),
        "{} rows for {} objects: an object was written twice",
        keys.len(),
        unique.len()
    );
    let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
    let missing: Vec<_> = want.difference(&unique).collect();
    let extra: Vec<_> = unique.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "every object exactly once: missing {missing:?}, unexpected {extra:?}"
    );
}

// --- labelflow ----------------------------------------------------------------------

/// `labelflow run` from `in/` to `out/` of `bucket`, through `endpoint`, with
/// `extra` flags.
fn run_command(endpoint: &str, bucket: &str, extra: &[&str]) -> Command {
    run_between(
        endpoint,
        &format!("s3://{bucket}/in/"),
        &format!("s3://{bucket}/out/"),
        extra,
    )
}

/// `labelflow run` from `input` to `output`, S3 requests through `endpoint`.
fn run_between(endpoint: &str, input: &str, output: &str, extra: &[&str]) -> Command {
    RunCmd::new(input, output)
        .env("AWS_ENDPOINT", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .args(["--decode-threads", "1", "--intra-threads", "1"])
        .args(extra)
        .command()
}

struct Finished {
    status: ExitStatus,
    stderr: String,
    took: Duration,
}

impl Finished {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect()
    }
}

/// A running labelflow whose stderr is collected on a thread.
struct Running {
    child: Child,
    started: Instant,
    stderr: std::thread::JoinHandle<String>,
}

fn spawn(cmd: &mut Command) -> Running {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    });
    Running {
        child,
        started: Instant::now(),
        stderr,
    }
}

impl Running {
    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Wait for the exit; past [`RUN_DEADLINE`] kill it and fail the test.
    fn wait(mut self) -> Finished {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Finished {
                    status,
                    stderr: self.stderr.join().unwrap(),
                    took: self.started.elapsed(),
                };
            }
            if self.started.elapsed() > RUN_DEADLINE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "labelflow still running after {RUN_DEADLINE:?}; killed. stderr:\n{}",
                    self.stderr.join().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9, then collect what it said.
    fn kill_9(mut self) -> Finished {
        let _ = self.child.kill();
        self.wait()
    }
}

fn run(cmd: &mut Command) -> Finished {
    spawn(cmd).wait()
}

// --- the tests ------------------------------------------------------------------------

/// About a fifth of all lists and uploads and a third of all gets fail (503, 500, a
/// reset mid-body, a stall past the request timeout): the retries absorb them and the
/// job is exact.
#[test]
fn faults_everywhere_and_the_job_is_still_exact() {
    let Some(S3Test {
        python,
        endpoint,
        bucket,
        rt,
        store,
    }) = s3_test("exact")
    else {
        return;
    };
    let keys = image_keys(80);
    upload_images(&rt, &store, &keys);
    // The run starts with requests one at a time (write probe, listing of `_runs/`,
    // run record, listing of the input); with seed 7 the proxy's first draws fault
    // both listings and the run record, whatever the timing. The gets run
    // concurrently, so their faults vary from run to run; at this rate (about 35
    // faults over 4 kinds) every kind shows up.
    let proxy = Proxy::start(
        &python,
        &endpoint,
        "exact",
        &[
            "--seed",
            "7",
            "--rate-get",
            "0.3",
            "--rate-list",
            "0.2",
            "--rate-upload",
            "0.2",
            "--faults",
            "503,500,reset,stall",
            "--stall-seconds",
            "3",
        ],
    );
    let done = run(&mut run_command(
        &proxy.url(),
        &bucket,
        &[
            "--request-timeout",
            "1",
            "--retries",
            "10",
            "--rows-per-part",
            "10",
            "--batch-size",
            "4",
            "--fetch-concurrency",
            "4",
        ],
    ));
    let stats = proxy.stats();
    eprintln!(
        "faults everywhere: exit {:?} after {:.1}s; {}",
        done.code(),
        done.took.as_secs_f64(),
        describe(&stats)
    );
    assert_eq!(done.code(), Some(0), "{}", done.stderr);
    let rows = output_rows(&rt, &store);
    assert_exactly_once(&rows, &keys);
    let errors: Vec<_> = rows.iter().filter(|r| r.error.is_some()).collect();
    assert!(errors.is_empty(), "error rows: {errors:?}");
    assert!(rows.iter().all(|r| r.label.is_some()));
    for kind in ["503", "500", "reset", "stall"] {
        assert!(
            faults(&stats, "get", Some(kind)) > 0,
            "no {kind} fault on a get; the test did not test it: {}",
            describe(&stats)
        );
    }
    for class in ["list", "upload"] {
        assert!(
            faults(&stats, class, None) > 0,
            "no fault on a {class}; the test did not test it (did the order of the \
             first requests change? choose another seed): {}",
            describe(&stats)
        );
    }
}

/// One object whose every fetch fails is an error row; the others are labelled.
#[test]
fn an_object_that_fails_on_every_try_is_an_error_row() {
    let Some(S3Test {
        python,
        endpoint,
        bucket,
        rt,
        store,
    }) = s3_test("bad-key")
    else {
        return;
    };
    let mut keys = image_keys(40);
    keys.push("bad-0001.jpg".into());
    upload_images(&rt, &store, &keys);
    let proxy = Proxy::start(
        &python,
        &endpoint,
        "bad-key",
        &["--fail-always-key", "bad-"],
    );
    let done = run(&mut run_command(
        &proxy.url(),
        &bucket,
        &[
            "--retries",
            "2",
            "--retry-timeout",
            "5",
            "--batch-size",
            "4",
        ],
    ));
    let stats = proxy.stats();
    eprintln!(
        "always failing object: exit {:?} after {:.1}s; {}",
        done.code(),
        done.took.as_secs_f64(),
        describe(&stats)
    );
    assert_eq!(done.code(), Some(1), "{}", done.stderr);
    let rows = output_rows(&rt, &store);
    assert_exactly_once(&rows, &keys);
    for r in &rows {
        if r.key == "bad-0001.jpg" {
            let error = r
                .error
                .as_deref()
                .unwrap_or_else(|| panic!("no error: {r:?}"));
            assert!(r.label.is_none(), "{r:?}");
            eprintln!(
                "error row of {}: {}",
                r.key,
                error.lines().next().unwrap_or("")
            );
        } else {
            assert!(r.error.is_none() && r.label.is_some(), "{r:?}");
        }
    }
    // The object was tried again before it became an error row.
    let tried = faults(&stats, "get", Some("fail_always"));
    assert!(tried >= 2, "the failing object was fetched {tried} times");
}

/// Check a run with refused credentials: exit 2 at once, one `error:` line that says
/// so, and the proxy did refuse them.
fn assert_refused(done: &Finished, proxy: &Proxy, what: &str) {
    let stats = proxy.stats();
    eprintln!(
        "refused credentials on the {what}: exit {:?} after {:.1}s; {}; stderr: {}",
        done.code(),
        done.took.as_secs_f64(),
        describe(&stats),
        done.stderr.trim()
    );
    assert_eq!(done.code(), Some(2), "{}", done.stderr);
    let errors = done.error_lines();
    assert_eq!(errors.len(), 1, "{}", done.stderr);
    assert!(
        errors[0].contains("refused the credentials"),
        "{}",
        done.stderr
    );
    assert!(done.took < Duration::from_secs(60), "took {:?}", done.took);
    assert!(
        stats["totals"]["faults"]["denied"].as_u64().unwrap() > 0,
        "the proxy denied nothing: {}",
        describe(&stats)
    );
}

/// An input whose store refuses the credentials: one clear line, exit 2, at once.
#[test]
fn refused_credentials_on_the_input_are_one_clear_error() {
    let Some(S3Test {
        python,
        endpoint,
        bucket,
        rt,
        store,
    }) = s3_test("creds-in")
    else {
        return;
    };
    upload_images(&rt, &store, &image_keys(4));
    let proxy = Proxy::start(
        &python,
        &endpoint,
        "creds-in",
        &["--require-access-key", "testing"],
    );
    let out = scratch("faults-creds-in-out");
    let done = run(run_between(
        &proxy.url(),
        &format!("s3://{bucket}/in/"),
        out.to_str().unwrap(),
        &[],
    )
    .env("AWS_ACCESS_KEY_ID", "wrong-key"));
    assert_refused(&done, &proxy, "input");
    assert!(read_parts(&out).is_empty());
}

/// An output whose store refuses the credentials: one clear line, exit 2, at once.
#[test]
fn refused_credentials_on_the_output_are_one_clear_error() {
    let Some(S3Test {
        python,
        endpoint,
        bucket,
        rt,
        store,
    }) = s3_test("creds-out")
    else {
        return;
    };
    let input = scratch("faults-creds-out-in");
    for i in 0..4 {
        std::fs::write(input.join(format!("img-{i:04}.jpg")), jpeg(i)).unwrap();
    }
    let proxy = Proxy::start(
        &python,
        &endpoint,
        "creds-out",
        &["--require-access-key", "testing"],
    );
    let done = run(run_between(
        &proxy.url(),
        input.to_str().unwrap(),
        &format!("s3://{bucket}/out/"),
        &[],
    )
    .env("AWS_ACCESS_KEY_ID", "wrong-key"));
    assert_refused(&done, &proxy, "output");
    assert!(output_rows(&rt, &store).is_empty());
}

/// Nothing listens at the endpoint: exit 2 with one line naming the input.
#[test]
fn an_unreachable_store_is_one_clear_error() {
    let closed = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let out = scratch("faults-unreachable-out");
    let input = "s3://faults-unreachable/in/";
    let done = run(run_between(
        &format!("http://127.0.0.1:{closed}"),
        input,
        out.to_str().unwrap(),
        &[
            "--retries",
            "1",
            "--retry-timeout",
            "3",
            "--request-timeout",
            "2",
        ],
    )
    // No S3 server is needed, only credentials to sign with.
    .env("AWS_ACCESS_KEY_ID", "testing")
    .env("AWS_SECRET_ACCESS_KEY", "testing")
    .env("AWS_REGION", "us-east-1"));
    eprintln!(
        "unreachable store: exit {:?} after {:.1}s; stderr: {}",
        done.code(),
        done.took.as_secs_f64(),
        done.stderr.trim()
    );
    assert_eq!(done.code(), Some(2), "{}", done.stderr);
    let errors = done.error_lines();
    assert_eq!(errors.len(), 1, "{}", done.stderr);
    // The location as the user typed it, with or without the trailing slash.
    assert!(
        errors[0].contains(input.trim_end_matches('/')),
        "{}",
        done.stderr
    );
    assert!(done.took < Duration::from_secs(60), "took {:?}", done.took);
    assert!(read_parts(&out).is_empty());
}

/// The store fails every fetch from some point of the run on: the run stops (exit 2),
/// keeps what it published and writes no error row for the fetches it held; the same
/// command on the healed store continues the run and labels each object exactly once.
///
/// The outage covers the second half of the listing (every get of `img-0040.jpg` and
/// later answers 503 SlowDown) rather than starting at a moment: a whole run takes
/// a second or two, so a switch made from here at a moment would race with its end.
#[test]
fn the_store_goes_down_mid_run_and_the_rerun_continues() {
    let Some(S3Test {
        python,
        endpoint,
        bucket,
        rt,
        store,
    }) = s3_test("down")
    else {
        return;
    };
    let keys = image_keys(80);
    upload_images(&rt, &store, &keys);
    let down = ["img-004", "img-005", "img-006", "img-007"];
    let mut proxy_args = Vec::new();
    for key in down {
        proxy_args.extend(["--fail-always-key", key]);
    }
    let proxy = Proxy::start(&python, &endpoint, "down", &proxy_args);
    let flags = [
        "--rows-per-part",
        "8",
        "--max-store-failures",
        "4",
        "--retries",
        "1",
        "--retry-timeout",
        "2",
        "--fetch-concurrency",
        "2",
        "--batch-size",
        "4",
    ];
    let done = run(&mut run_command(&proxy.url(), &bucket, &flags));
    let published = output_rows(&rt, &store);
    let statuses = run_statuses(&rt, &store);
    let stats = proxy.stats();
    eprintln!(
        "store down from the 41st object: exit {:?} after {:.1}s; {} of {} rows published; \
         {} gets refused; records {statuses:?}",
        done.code(),
        done.took.as_secs_f64(),
        published.len(),
        keys.len(),
        faults(&stats, "get", Some("fail_always")),
    );
    assert_eq!(done.code(), Some(2), "{}", done.stderr);
    let errors = done.error_lines();
    assert_eq!(errors.len(), 1, "{}", done.stderr);
    assert!(errors[0].contains("requests in a row"), "{}", done.stderr);
    assert!(
        !published.is_empty(),
        "nothing published before the store went down"
    );
    let written_in_outage: Vec<_> = published
        .iter()
        .filter(|r| down.iter().any(|d| r.key.starts_with(d)) || r.error.is_some())
        .collect();
    assert!(
        written_in_outage.is_empty(),
        "rows of the outage were published: {written_in_outage:?}"
    );
    assert!(
        statuses.values().all(|s| s != "finished" && s != "running"),
        "the stopped run's record: {statuses:?}"
    );

    proxy.configure(r#"{"fail_always_keys": []}"#);
    let again = run(&mut run_command(&proxy.url(), &bucket, &flags));
    let rows = output_rows(&rt, &store);
    eprintln!(
        "healed rerun: exit {:?} after {:.1}s; labelled the other {}",
        again.code(),
        again.took.as_secs_f64(),
        rows.len().saturating_sub(published.len())
    );
    assert_eq!(again.code(), Some(0), "{}", again.stderr);
    assert!(
        again.stderr.contains("continuing unfinished run"),
        "{}",
        again.stderr
    );
    assert_exactly_once(&rows, &keys);
    let held: Vec<_> = rows
        .iter()
        .filter(|r| {
            r.error
                .as_deref()
                .is_some_and(|e| e.contains("503") || e.contains("SlowDown"))
        })
        .collect();
    assert!(
        held.is_empty(),
        "failures of the outage were written: {held:?}"
    );
    assert!(
        rows.iter().all(|r| r.error.is_none()),
        "error rows after the rerun"
    );
    let statuses = run_statuses(&rt, &store);
    assert_eq!(statuses.len(), 1, "one run, continued: {statuses:?}");
    assert!(statuses.values().all(|s| s == "finished"), "{statuses:?}");
}

/// kill -9 while a part upload hangs (half of all uploads stall past the request
/// timeout): no partial part ever shows in the bucket, and the same command on the
/// healed store labels each object exactly once.
///
/// Each round waits until it has published a part and the proxy has stalled a later
/// part's upload, then kills the process a seeded 0.1–1.5 s into that upload (the
/// request timeout is 2 s, so the upload is still in flight).
#[test]
fn kill_9_during_part_uploads_leaves_no_partial_part() {
    let Some(S3Test {
        python,
        endpoint,
        bucket,
        rt,
        store,
    }) = s3_test("kill9")
    else {
        return;
    };
    let keys = image_keys(60);
    upload_images(&rt, &store, &keys);
    let proxy = Proxy::start(
        &python,
        &endpoint,
        "kill9",
        &[
            "--seed",
            "9",
            "--rate-upload",
            "0.5",
            "--faults",
            "stall",
            "--stall-seconds",
            "4",
        ],
    );
    let flags = [
        "--request-timeout",
        "2",
        "--rows-per-part",
        "6",
        "--batch-size",
        "4",
    ];
    let stalled_part = ["fault=stall class=upload", "/part-"];
    let seed = 0x006b_119a_u64;
    let mut rng = labelflow::stable::SplitMix64::new(seed);
    let mut report = Vec::new();
    for round in 0..3 {
        let rows_before = output_rows(&rt, &store).len();
        let parts_before = part_count(&rt, &store);
        let stalls_before = faults(&proxy.stats(), "upload", Some("stall"));
        let offset = 0.1 + rng.unit() * 1.4;
        let mut child = spawn(&mut run_command(&proxy.url(), &bucket, &flags));
        let started = Instant::now();
        let mut mark = None;
        loop {
            assert!(
                !child.exited(),
                "round {round}: the run exited before a part upload stalled; give it more work"
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "round {round}: no part published and a later one stalled within 60 s"
            );
            match mark {
                None if part_count(&rt, &store) > parts_before => {
                    mark = Some(proxy.log_lines(&stalled_part));
                }
                Some(seen) if proxy.log_lines(&stalled_part) > seen => break,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_secs_f64(offset));
        let done = child.kill_9();
        // Every object listed as a part is a whole Parquet file (or this panics).
        let parts = parquet_objects(&rt, &store, "out");
        let rows_after: usize = parts
            .iter()
            .flat_map(|(_, b)| b)
            .map(|b| b.num_rows())
            .sum();
        let stalls = faults(&proxy.stats(), "upload", Some("stall")) - stalls_before;
        report.push(format!(
            "round {round}: killed after {:.2}s, {offset:.2}s into a stalled part upload; \
             published {} rows ({rows_after} in {} parts in all); {stalls} uploads stalled",
            done.took.as_secs_f64(),
            rows_after - rows_before,
            parts.len(),
        ));
        let other: Vec<String> = rt.block_on(async {
            let listed: Vec<_> =
                futures::TryStreamExt::try_collect(store.list(Some(&"out".into())))
                    .await
                    .unwrap();
            listed
                .into_iter()
                .map(|m| m.location.to_string())
                .filter(|k| k.contains("/run_id=") && !k.ends_with(".parquet"))
                .collect()
        });
        assert!(
            other.is_empty(),
            "objects a reader could mistake for parts: {other:?}"
        );
    }
    proxy.configure(r#"{"rate": 0}"#);
    let done = run(&mut run_command(&proxy.url(), &bucket, &flags));
    let parts = parquet_objects(&rt, &store, "out");
    let rows = output_rows(&rt, &store);
    eprintln!(
        "kill -9 during uploads (kill seed {seed:#x}):\n  {}\n  healed rerun: exit {:?} after {:.1}s, labelled the rest; {} parts in all; {}",
        report.join("\n  "),
        done.code(),
        done.took.as_secs_f64(),
        parts.len(),
        describe(&proxy.stats())
    );
    assert_eq!(done.code(), Some(0), "{}", done.stderr);
    assert!(
        done.stderr.contains("continuing unfinished run"),
        "{}",
        done.stderr
    );
    assert_exactly_once(&rows, &keys);
    assert!(rows.iter().all(|r| r.error.is_none()), "error rows");
}
