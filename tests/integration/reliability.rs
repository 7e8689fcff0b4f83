//! The job survives what stops other jobs: signals, kill -9, empty or mistyped input,
//! models that disagree with their metadata, credentials in the environment.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use labelflow::onnx::writer::{
    attr_int, attr_ints, model_proto, write_model_file, Dim, GraphBuilder,
};

use super::common::*;

/// `n` small JPEGs of distinct colours in `dir` (keys `img-0000.jpg`, …).
pub(super) fn make_images(dir: &Path, n: usize) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let mut keys = Vec::new();
    for i in 0..n {
        let key = format!("img-{i:04}.jpg");
        let img = image::RgbImage::from_fn(48, 40, |x, y| {
            image::Rgb([(i * 7 % 256) as u8, (x * 5) as u8, (y * 6 + i as u32) as u8])
        });
        img.save(dir.join(&key)).unwrap();
        keys.push(key);
    }
    keys
}

pub(super) fn run_args(input: &Path, output: &Path) -> Vec<String> {
    [
        "run",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--model",
        small_model().to_str().unwrap(),
        // Ten views an image: slow enough that signals land mid-run.
        "--tta",
        "10crop",
        "--batch-size",
        "20",
        "--decode-threads",
        "1",
        "--fetch-concurrency",
        "4",
        "--intra-threads",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The keys of every row in the output (all runs), as a multiset check: each key
/// once, the set equal to `want`.
pub(super) fn assert_exactly_once(out: &Path, want: &[String]) {
    let rows = preds(&read_parts(out));
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let unique: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(keys.len(), unique.len(), "an object was written twice");
    let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(unique, want, "every object exactly once");
}

/// Files a reader could mistake for data: anything under a run folder that is not a
/// complete `.parquet` part.
fn partial_files(out: &Path) -> Vec<PathBuf> {
    if !out.exists() {
        return Vec::new();
    }
    files_under(out)
        .into_iter()
        .filter(|p| {
            let rel = p.strip_prefix(out).unwrap().to_string_lossy().to_string();
            rel.starts_with("run_id=") && !rel.ends_with(".parquet")
        })
        .collect()
}

/// A running `labelflow run` whose stderr is read as it comes: how many objects it
/// has labelled so far (from its debug log) and everything it printed.
pub(super) struct Watched {
    pub(super) child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub(super) stderr: String,
    labelled: u64,
}

impl Watched {
    pub(super) fn start(args: &[String]) -> Self {
        let mut child = spawn(args, &[]);
        let err = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            stderr: String::new(),
            labelled: 0,
        }
    }

    fn take(&mut self, line: String) {
        self.labelled = self.labelled.max(last_labelled(&line));
        self.stderr.push_str(&line);
        self.stderr.push('\n');
    }

    /// Wait until it has labelled at least `n` objects; false if it exited first.
    pub(super) fn wait_labelled(&mut self, n: u64) -> bool {
        while self.labelled < n {
            match self.lines.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => self.take(line),
                Err(_) => return false,
            }
        }
        true
    }

    /// Wait for the exit; returns the code (None: killed by a signal).
    pub(super) fn finish(mut self) -> (Option<i32>, String, u64) {
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.take(line);
        }
        (status.code(), self.stderr, self.labelled)
    }
}

fn spawn(args: &[String], env: &[(&str, &str)]) -> Child {
    let mut c = labelflow();
    c.args(args)
        .env("LABELFLOW_LOG", "labelflow=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// The last "batch written" count a killed process logged: how many objects it had
/// labelled before it died.
fn last_labelled(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter(|l| l.contains("batch written"))
        .filter_map(|l| {
            let at = l.find("labelled=")? + "labelled=".len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .next_back()
        .unwrap_or(0)
}

fn committed_rows(out: &Path) -> usize {
    read_parts(out).iter().map(|b| b.num_rows()).sum()
}

/// kill -9 at random points, then the same command again, until it finishes: every
/// object exactly once, nothing partial visible, and the work redone after each kill
/// reported.
#[test]
fn kill_9_at_random_points_then_rerun_labels_each_object_once() {
    let dir = scratch("kill9");
    let input = dir.join("in");
    let keys = make_images(&input, 400);
    let out = dir.join("out");
    let mut args = run_args(&input, &out);
    args.extend(["--rows-per-part".into(), "10".into()]);
    let mut rng = labelflow::stable::SplitMix64::new(0x005e_edf1_abe1);
    let mut report = Vec::new();
    for round in 0..5 {
        let before = committed_rows(&out);
        let mut run = Watched::start(&args);
        // Even rounds die at a random moment of start-up (model loading, listing,
        // the first batches); odd rounds after a random amount of labelling, mid-batch
        // or while a part is being published.
        let when = if round % 2 == 0 {
            let wait = 0.05 + rng.unit() * 0.8;
            std::thread::sleep(Duration::from_secs_f64(wait));
            format!("after {wait:.2}s")
        } else {
            let n = 6 + (rng.unit() * 40.0) as u64;
            assert!(
                run.wait_labelled(n),
                "round {round} ended before labelling {n}: {}",
                run.stderr
            );
            format!("after labelling {n}")
        };
        let _ = run.child.kill();
        let (code, err, labelled) = run.finish();
        assert_eq!(
            code, None,
            "round {round} finished before the kill; the input is too small: {err}"
        );
        let after = committed_rows(&out);
        let published = after - before;
        let redo = (labelled as usize).saturating_sub(published);
        report.push(format!(
            "round {round}: kill -9 {when}: labelled {labelled}, published {published}, to redo {redo}"
        ));
        assert!(
            partial_files(&out)
                .iter()
                .all(|p| p.to_string_lossy().contains(".parquet#")),
            "only invisible staging files may remain: {:?}",
            partial_files(&out)
        );
    }
    let o = labelflow().args(&args).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    eprintln!("kill -9 rounds:\n  {}", report.join("\n  "));
    assert_exactly_once(&out, &keys);
    assert!(partial_files(&out).is_empty(), "{:?}", partial_files(&out));
    // A rerun after the finish starts a new run, not an append to the finished one.
    let runs: BTreeSet<String> = preds(&read_parts(&out))
        .iter()
        .map(|r| r.uri.clone())
        .collect();
    assert_eq!(runs.len(), keys.len());
}

fn send_signal(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} failed");
}

/// SIGTERM mid-run: the run publishes what it labelled, exits with code 3 within the
/// grace period, and the same command then finishes the rest with no duplicate.
#[test]
fn sigterm_publishes_progress_and_the_rerun_continues() {
    let dir = scratch("sigterm");
    let input = dir.join("in");
    let keys = make_images(&input, 400);
    let out = dir.join("out");
    let mut args = run_args(&input, &out);
    // Parts are big and old enough not to be published before the signal on their own.
    args.extend([
        "--rows-per-part".into(),
        "100000".into(),
        "--stop-grace".into(),
        "5".into(),
    ]);
    let mut run = Watched::start(&args);
    // Wait until some batches are labelled.
    let started = Instant::now();
    assert!(
        run.wait_labelled(40),
        "the run ended before labelling 40: {}",
        run.stderr
    );
    let signalled = Instant::now();
    send_signal(&run.child, "TERM");
    let (code, err, _) = run.finish();
    let stopped_after = signalled.elapsed();
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("SIGTERM"), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    // The grace (5 s) bounds the drain; the rest is publishing one small part.
    assert!(
        stopped_after < Duration::from_secs(20),
        "took {stopped_after:?}"
    );
    let published = committed_rows(&out);
    assert!(published > 0, "nothing published after SIGTERM: {err}");
    assert!(
        published < keys.len(),
        "the run finished before the signal ({:?})",
        started.elapsed()
    );
    assert!(partial_files(&out).is_empty(), "{:?}", partial_files(&out));
    let record: Vec<PathBuf> = files_under(&out.join("_runs"));
    let text = std::fs::read_to_string(&record[0]).unwrap();
    assert!(text.contains("\"interrupted\""), "{text}");

    // The same command again continues the interrupted run.
    let o = labelflow().args(&args).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("continuing unfinished run"), "{err}");
    assert_exactly_once(&out, &keys);
    let rows = preds(&read_parts(&out));
    let run_ids: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("run_id="))
        .collect();
    assert_eq!(run_ids.len(), 1, "one run, continued: {run_ids:?}");
    eprintln!(
        "SIGTERM after {:.1}s: {published} of {} published; exit after {:.2}s; the rerun labelled the other {}",
        signalled.duration_since(started).as_secs_f64(),
        keys.len(),
        stopped_after.as_secs_f64(),
        rows.len() - published
    );

    // A finished run is never appended to.
    let id = text
        .split("\"run_id\": \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let mut again = args.clone();
    again.extend(["--run-id".into(), id.to_string()]);
    let o = labelflow().args(&again).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("already finished"), "{}", stderr(&o));
}

/// An input under which nothing is selected is one message naming what was listed
/// and which filter removed it, exit 2; `--allow-empty` accepts it.
#[test]
fn nothing_to_label_is_said_and_exits_2() {
    let dir = scratch("empty-input");
    let input = dir.join("in");
    make_images(&input, 3);
    std::fs::write(input.join("notes.txt"), "not an image").unwrap();
    let out = dir.join("out");
    let mut args = run_args(&input, &out);
    args.extend(["--extensions".into(), "png".into()]);
    let o = labelflow().args(&args).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("4 objects listed"), "{err}");
    // The hint names the settings as flags on the command line.
    assert!(
        err.contains("removed 4 by extension (reading png; --extensions)"),
        "{err}"
    );
    assert!(
        err.contains("; pass --allow-empty to accept an empty selection"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{err}"
    );
    args.push("--allow-empty".into());
    let o = labelflow().args(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // A prefix with nothing under it at all.
    let empty = dir.join("nothing-here");
    std::fs::create_dir_all(&empty).unwrap();
    let o = labelflow().args(run_args(&empty, &out)).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no objects under"), "{err}");
}

/// A model whose class dimension is dynamic and whose output disagrees with the
/// class names in its metadata: refused (exit 2) with both numbers, at the first batch.
#[test]
fn a_dynamic_class_dimension_that_disagrees_with_the_metadata_is_refused() {
    let dir = scratch("dynamic-classes");
    let path = dir.join("dyn.onnx");
    // Scores = 3 channels × (H/4) × (W/4) max-pooled values: with dynamic H and W
    // nothing before the first batch can tell how many there are.
    let mut g = GraphBuilder::new("dyn");
    g.input_f32(
        "pixels",
        &[
            Dim::Param("batch".into()),
            Dim::Fixed(3),
            Dim::Param("h".into()),
            Dim::Param("w".into()),
        ],
    )
    .output_f32(
        "scores",
        &[Dim::Param("batch".into()), Dim::Param("classes".into())],
    )
    .node(
        "MaxPool",
        "pool",
        &["pixels"],
        &["pooled"],
        vec![
            attr_ints("kernel_shape", &[4, 4]),
            attr_ints("strides", &[4, 4]),
        ],
    )
    .node(
        "Flatten",
        "flat",
        &["pooled"],
        &["scores"],
        vec![attr_int("axis", 1)],
    );
    // Twelve scores at crop 8, four names.
    let meta = vec![(
        "labelflow.classes".to_string(),
        r#"["red","green","blue","other"]"#.to_string(),
    )];
    write_model_file(&model_proto(g.build(), &meta), &path).unwrap();
    let out = dir.join("out");
    let o = run_cli(&[
        "run",
        "--input",
        data("photos").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--model",
        path.to_str().unwrap(),
        "--resize",
        "8",
        "--crop",
        "8",
        "--batch-size",
        "2",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("disagrees with its metadata"), "{err}");
    assert!(
        err.contains("returned 24 values for a batch of 2, expected 8"),
        "{err}"
    );
    assert!(err.contains("4 class names"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{err}"
    );
}

/// Planted secrets never reach logs (at the most verbose level), error messages,
/// `doctor`, run records or Parquet metadata.
#[test]
fn secrets_never_appear_in_logs_errors_or_output() {
    const AWS_SECRET: &str = "plantedAwsSecret0123456789abcdefXYZ";
    const SAS: &str =
        "sv=2022-11-02&ss=b&srt=co&sp=rl&se=2030-01-01T00:00:00Z&sig=plantedSasSignature0123456789";
    let dir = scratch("secrets");
    let input = dir.join("in");
    make_images(&input, 3);
    std::fs::write(input.join("broken.jpg"), b"\xff\xd8\xff\xe0 not really").unwrap();
    let out = dir.join("out");
    let env = [
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
        ("AZURE_STORAGE_SAS_KEY", SAS),
        ("AZURE_STORAGE_ACCOUNT_NAME", "plantedaccount"),
        ("LABELFLOW_LOG", "trace"),
    ];
    let mut everything = String::new();
    let run = |args: &[String], extra: &[(&str, &str)], everything: &mut String| {
        let mut c = labelflow();
        c.args(args);
        for (k, v) in env.iter().chain(extra) {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        everything.push_str(&String::from_utf8_lossy(&o.stdout));
        everything.push_str(&String::from_utf8_lossy(&o.stderr));
        o.status.code()
    };
    // A local run (with an error row), -vv and --json.
    let mut args = run_args(&input, &out);
    args.extend(["-vv".into(), "--json".into()]);
    assert_eq!(run(&args, &[], &mut everything), Some(1), "{everything}");
    // An Azure input whose requests fail (nothing listens): the error carries URLs.
    let mut az = run_args(&input, &out);
    az[2] = "az://container/prefix".into();
    az.extend([
        "-vv".into(),
        "--retries".into(),
        "0".into(),
        "--request-timeout".into(),
        "2".into(),
    ]);
    let emulator = [
        ("AZURE_STORAGE_USE_EMULATOR", "true"),
        ("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:9"),
    ];
    assert_eq!(
        run(&az, &emulator, &mut everything),
        Some(2),
        "{everything}"
    );
    assert!(run(&["doctor".to_string()], &[], &mut everything).is_some());
    for f in files_under(&out) {
        everything.push_str(&String::from_utf8_lossy(&std::fs::read(&f).unwrap()));
    }
    assert!(!everything.contains(AWS_SECRET), "AWS secret leaked");
    assert!(
        !everything.contains("plantedSasSignature"),
        "SAS signature leaked"
    );
    assert!(
        everything.contains("batch written"),
        "the trace-level log was not captured"
    );
}

/// An S3 URL with no credentials anywhere: one message saying which variables to set,
/// the underlying failure said once (not once per retry layer).
#[test]
fn missing_aws_credentials_are_one_message_naming_the_variables() {
    let dir = scratch("no-credentials");
    let out = dir.join("out");
    let o = RunCmd::new("s3://some-bucket/photos/", &out)
        .args([
            "--retries",
            "1",
            "--retry-timeout",
            "5",
            "--request-timeout",
            "2",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT")
        // Where the instance metadata service would be: nothing listens.
        .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
        .output();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{err}"
    );
    assert!(err.contains("no credentials found"), "{err}");
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    assert!(err.contains("s3://some-bucket/photos"), "{err}");
    assert!(
        err.matches("127.0.0.1:9").count() <= 1,
        "the cause is said once: {err}"
    );
}
