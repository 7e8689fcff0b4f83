//! The job run the way it is run in production: duplicate workers on one shard (the
//! lease), a holder killed or paused past its lease, and nightly reruns over a grown
//! bucket that label only what changed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::common::*;
use super::reliability::{assert_exactly_once, make_images, run_args, Watched};

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

/// The `--json` summary a run printed on stdout.
fn summary(o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    let start = text
        .find('{')
        .unwrap_or_else(|| panic!("no JSON summary: {text}{}", stderr(o)));
    serde_json::from_str(&text[start..]).unwrap()
}

fn count(s: &serde_json::Value, field: &str) -> u64 {
    s[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {s}"))
}

/// Rows written (all runs) and distinct uris among them.
fn rows_and_unique(out: &Path) -> (usize, usize) {
    let rows = preds(&read_parts(out));
    let unique: BTreeSet<&str> = rows.iter().map(|r| r.uri.as_str()).collect();
    (rows.len(), unique.len())
}

/// A worker started while another one writes the same job and shard writes nothing
/// and exits 4 naming the holder; the first finishes alone; a third run of the same
/// command afterwards labels nothing again.
#[test]
fn a_second_worker_with_the_same_command_writes_nothing() {
    let dir = scratch("lease-local");
    let input = dir.join("in");
    let keys = make_images(&input, 240);
    let out = dir.join("out");
    let args = run_args(&input, &out);
    let mut first = Watched::start(&args);
    assert!(first.wait_labelled(20), "{}", first.stderr);
    let second = labelflow().args(&args).output().unwrap();
    let err = stderr(&second);
    assert_eq!(code(&second), Some(4), "{err}");
    assert!(
        err.contains(&format!("pid {}", first.child.id())) && err.contains("last heartbeat"),
        "the refusal names the holder and its heartbeat: {err}"
    );
    let (first_code, first_err, _) = first.finish();
    assert_eq!(first_code, Some(0), "{first_err}");
    assert_exactly_once(&out, &keys);
    // The same command again: every object is there unchanged.
    let mut again = args.clone();
    again.push("--json".into());
    let third = labelflow().args(&again).output().unwrap();
    assert_eq!(code(&third), Some(0), "{}", stderr(&third));
    let s = summary(&third);
    assert_eq!(count(&s, "skipped_unchanged"), keys.len() as u64, "{s}");
    assert_eq!(count(&s, "rows_written"), 0, "{s}");
    assert_exactly_once(&out, &keys);
}

/// Two workers started at the same instant, many times over: whoever wins the lease
/// writes, the other exits 4 (or, when the winner already finished, finds nothing
/// changed); every object exactly once.
#[test]
fn workers_started_at_the_same_instant_write_each_object_once() {
    let dir = scratch("lease-race");
    let input = dir.join("in");
    let keys = make_images(&input, 40);
    let out = dir.join("out");
    let args = run_args(&input, &out);
    for round in 0..3 {
        let spawn = || {
            labelflow()
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let codes = [code(&a), code(&b)];
        assert!(
            codes.iter().all(|c| matches!(c, Some(0) | Some(4))),
            "round {round}: {codes:?}: {}{}",
            stderr(&a),
            stderr(&b)
        );
        assert_exactly_once(&out, &keys);
        // Start the next round from an empty dataset.
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// The same two-worker case with the dataset (and so the lease) on the S3 server.
#[test]
fn a_second_worker_writes_nothing_on_s3() {
    let Some(endpoint) = require_s3_endpoint() else {
        return;
    };
    create_bucket(&endpoint, "lease");
    let dir = scratch("lease-s3");
    let input = dir.join("in");
    let keys = make_images(&input, 240);
    let url = "s3://lease/preds";
    let s3 = |c: &mut Command| {
        c.env("AWS_ENDPOINT", &endpoint)
            .env("AWS_ALLOW_HTTP", "true");
    };
    let args = run_args(&input, Path::new(url));
    let mut first = {
        // Watched runs the command with the environment of this process.
        std::env::set_var("AWS_ENDPOINT", &endpoint);
        std::env::set_var("AWS_ALLOW_HTTP", "true");
        Watched::start(&args)
    };
    assert!(first.wait_labelled(20), "{}", first.stderr);
    let mut cmd = labelflow();
    s3(&mut cmd);
    let second = cmd.args(&args).output().unwrap();
    assert_eq!(code(&second), Some(4), "{}", stderr(&second));
    let (first_code, first_err, _) = first.finish();
    assert_eq!(first_code, Some(0), "{first_err}");
    let mut cmd = labelflow();
    s3(&mut cmd);
    let q = cmd
        .args([
            "query",
            "--data",
            url,
            "--format",
            "csv",
            "SELECT count(*) AS n, count(DISTINCT uri) AS uris FROM predictions",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&q.stdout);
    assert_eq!(
        text.lines().nth(1),
        Some(format!("{0},{0}", keys.len()).as_str()),
        "{text}{}",
        stderr(&q)
    );
}

/// `labelflow run` with `args` as a process of another host (its own UTS namespace and
/// host name), so that a worker here cannot tell whether it still runs and must wait
/// for its lease to expire.
fn on_another_host(args: &[String]) -> Option<Command> {
    require(
        "unshare with a UTS namespace (util-linux, as root)",
        Command::new("unshare")
            .args(["-u", "true"])
            .status()
            .ok()
            .filter(|s| s.success()),
        "run the tests as root on Linux with util-linux installed",
    )?;
    let mut c = Command::new("unshare");
    c.args([
        "-u",
        "sh",
        "-c",
        "hostname worker-elsewhere && exec \"$0\" \"$@\"",
    ])
    .arg(env!("CARGO_BIN_EXE_labelflow"))
    .arg("--no-progress")
    .args(args)
    .env("ORT_DYLIB_PATH", ort_lib())
    .env("LABELFLOW_LOG", "labelflow=debug");
    Some(c)
}

/// A holder killed with kill -9 on another host: a second worker is refused while the
/// lease is live, takes over once it expired (`--wait`), continues the same run and
/// writes every object exactly once.
#[test]
fn a_killed_holder_is_taken_over_after_the_ttl() {
    let dir = scratch("lease-kill");
    let input = dir.join("in");
    let keys = make_images(&input, 240);
    let out = dir.join("out");
    let mut args = run_args(&input, &out);
    args.extend([
        "--lease-ttl".into(),
        "4".into(),
        "--flush-seconds".into(),
        "1".into(),
    ]);
    let Some(mut holder) = on_another_host(&args) else {
        return;
    };
    let mut child = holder
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it published a part, then kill it outright.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while preds(&read_parts(&out)).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the holder published nothing"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the holder ended too soon"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let published = preds(&read_parts(&out)).len();
    assert!(
        published < keys.len(),
        "the input is too small to kill mid-run"
    );
    // Its lease is still live: refused at once.
    let refused = labelflow().args(&args).output().unwrap();
    let err = stderr(&refused);
    assert_eq!(code(&refused), Some(4), "{err}");
    assert!(err.contains("worker-elsewhere"), "{err}");
    // With --wait: taken over once the TTL has passed, and the run continued.
    let mut waiting = args.clone();
    waiting.extend(["--wait".into(), "--json".into()]);
    let started = std::time::Instant::now();
    let o = labelflow().args(&waiting).output().unwrap();
    let err = stderr(&o);
    assert_eq!(code(&o), Some(0), "{err}");
    assert!(err.contains("taking over shard"), "{err}");
    let s = summary(&o);
    assert_eq!(s["resumed"], true, "{s}");
    assert_eq!(count(&s, "lease_epoch"), 2, "{s}");
    assert!(started.elapsed() < Duration::from_secs(60), "{err}");
    assert_exactly_once(&out, &keys);
}

fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {pid}");
}

/// A holder paused (SIGSTOP) past its TTL loses the shard to a second worker, which
/// finishes the run; woken (SIGCONT), the first notices before it publishes another
/// part and stops with exit 4: every object exactly once.
#[test]
fn a_paused_holder_notices_it_lost_the_lease_and_publishes_nothing() {
    let dir = scratch("lease-pause");
    let input = dir.join("in");
    let keys = make_images(&input, 240);
    let out = dir.join("out");
    let mut args = run_args(&input, &out);
    args.extend([
        "--lease-ttl".into(),
        "2".into(),
        "--flush-seconds".into(),
        "1".into(),
        "--rows-per-part".into(),
        "10".into(),
    ]);
    let mut paused = Watched::start(&args);
    assert!(paused.wait_labelled(30), "{}", paused.stderr);
    let pid = paused.child.id();
    signal(pid, "STOP");
    let before = preds(&read_parts(&out)).len();
    std::thread::sleep(Duration::from_secs(3));
    let mut second = args.clone();
    second.push("--json".into());
    let taker = labelflow().args(&second).output().unwrap();
    let err = stderr(&taker);
    assert_eq!(code(&taker), Some(0), "{err}");
    assert!(err.contains("taking over shard"), "{err}");
    assert_eq!(summary(&taker)["resumed"], true);
    assert!(
        before > 0 && before < keys.len(),
        "paused after {before} rows"
    );
    signal(pid, "CONT");
    let (paused_code, paused_err, _) = paused.finish();
    assert_eq!(paused_code, Some(4), "{paused_err}");
    assert!(paused_err.contains("lost the lease"), "{paused_err}");
    assert_exactly_once(&out, &keys);
    let (rows, unique) = rows_and_unique(&out);
    assert_eq!((rows, unique), (keys.len(), keys.len()));
}

fn rerun_args(input: &Path, out: &Path, model: &Path) -> Vec<String> {
    [
        "run",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--batch-size",
        "16",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The nightly rerun: 200 images and a corrupt file labelled; then 20 added, 1
/// replaced by another picture: the same command labels exactly those 21 (and retries
/// the error row); `latest` has one row per uri, the replaced image's new one; a
/// deleted object does not come back; `--relabel-all` and another model label all.
#[test]
fn a_rerun_labels_only_new_and_changed_objects() {
    let dir = scratch("rerun");
    let input = dir.join("in");
    let mut keys = make_images(&input, 200);
    std::fs::write(input.join("broken.jpg"), b"\xff\xd8\xff not a jpeg").unwrap();
    let out = dir.join("out");
    let model = small_model();
    let args = rerun_args(&input, &out, &model);
    let first = labelflow().args(&args).output().unwrap();
    assert_eq!(code(&first), Some(1), "{}", stderr(&first));
    assert_eq!(count(&summary(&first), "labelled"), 200);

    // 20 new images, and one replaced by a different picture.
    let more = dir.join("more");
    for (i, key) in make_images(&more, 220).into_iter().enumerate().skip(200) {
        std::fs::rename(more.join(&key), input.join(&key)).unwrap();
        keys.push(key);
        assert!(i >= 200);
    }
    let replaced = input.join("img-0007.jpg");
    image::RgbImage::from_pixel(64, 64, image::Rgb([250, 10, 10]))
        .save(&replaced)
        .unwrap();
    let second = labelflow().args(&args).output().unwrap();
    assert_eq!(code(&second), Some(1), "{}", stderr(&second));
    let s = summary(&second);
    assert_eq!(count(&s, "labelled"), 21, "{s}");
    assert_eq!(count(&s, "failed"), 1, "the error row is retried: {s}");
    assert_eq!(count(&s, "skipped_unchanged"), 199, "{s}");
    assert_eq!(count(&s, "rows_written"), 22, "{s}");
    let err = stderr(&second);
    assert!(err.contains("199 skipped unchanged"), "{err}");
    // The run record keeps the count.
    let run_id = s["run_id"].as_str().unwrap();
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join(format!("_runs/{run_id}/s0of1.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(record["skipped_unchanged"], 199);

    // `latest`: one row per uri, the replaced image's from the new run.
    let q = run_cli(&[
        "query",
        "--data",
        out.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT count(*) AS n, count(DISTINCT uri) AS uris, \
         max(CASE WHEN key = 'img-0007.jpg' THEN run_id END) AS replaced_run FROM latest",
    ]);
    let text = String::from_utf8_lossy(&q.stdout);
    assert_eq!(
        text.lines().nth(1),
        Some(format!("221,221,{run_id}").as_str()),
        "{text}{}",
        stderr(&q)
    );

    // A deleted object does not come back; nothing else is labelled again.
    std::fs::remove_file(input.join("img-0100.jpg")).unwrap();
    let third = labelflow().args(&args).output().unwrap();
    let s = summary(&third);
    assert_eq!(count(&s, "labelled"), 0, "{s}");
    assert_eq!(count(&s, "skipped_unchanged"), 219, "{s}");
    let third_run = s["run_id"].as_str().unwrap().to_string();
    let rows = preds(&read_parts(&out.join(format!("run_id={third_run}"))));
    assert!(
        !rows.iter().any(|r| r.key == "img-0100.jpg"),
        "a deleted object is not labelled again"
    );
    assert_eq!(rows.len(), 1, "only the error row is retried: {rows:?}");

    // --relabel-all labels everything.
    let mut all = args.clone();
    all.push("--relabel-all".into());
    let forced = labelflow().args(&all).output().unwrap();
    let s = summary(&forced);
    assert_eq!(count(&s, "labelled"), 219, "{s}");
    assert_eq!(count(&s, "skipped_unchanged"), 0, "{s}");

    // Another model is another job: it labels everything, then its own rerun skips.
    let other = scratch("rerun-model").join("other.onnx");
    let o = run_cli(&[
        "model",
        "init",
        "--out",
        other.to_str().unwrap(),
        "--classes",
        "10",
        "--width",
        "0.25",
        "--seed",
        "8",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let other_args = rerun_args(&input, &out, &other);
    let s = summary(&labelflow().args(&other_args).output().unwrap());
    assert_eq!(count(&s, "labelled"), 219, "{s}");
    assert_eq!(count(&s, "skipped_unchanged"), 0, "{s}");
    let s = summary(&labelflow().args(&other_args).output().unwrap());
    assert_eq!(count(&s, "labelled"), 0, "{s}");
    // Back to the first model: the newest rows are the other model's, so every object
    // is labelled again (`latest` must show this model's labels).
    let s = summary(&labelflow().args(&args).output().unwrap());
    assert_eq!(count(&s, "labelled"), 219, "{s}");
}
