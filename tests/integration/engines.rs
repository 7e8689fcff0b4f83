//! Real engines run the shards: Ray (docker/ray/run.py on a two-node local cluster, the
//! input and output on the S3 server) and Slurm (docker/slurm/labelflow.sbatch as a job
//! array on a one-machine cluster). In each, one worker process is killed mid-shard; the
//! engine retries it, and every object is labelled exactly once.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::common::*;

/// `n` image files in `dir` (the fixture photos under several names), their names.
fn photo_copies(dir: &Path, n: usize) -> Vec<String> {
    let photos: Vec<PathBuf> = files_under(&data("photos"))
        .into_iter()
        .filter(|p| {
            p.extension()
                .is_some_and(|e| ["jpg", "jpeg", "png"].contains(&e.to_str().unwrap()))
        })
        .collect();
    assert!(!photos.is_empty());
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let from = &photos[i % photos.len()];
            let ext = from.extension().unwrap().to_str().unwrap();
            let name = format!("img-{i:04}.{ext}");
            std::fs::copy(from, dir.join(&name)).unwrap();
            name
        })
        .collect()
}

/// The pids of processes whose arguments include every one of `words`.
fn processes_with(words: &[&str]) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("labelflow"))
            && words.iter().all(|w| args.iter().any(|a| a == w))
        {
            out.push(pid);
        }
    }
    out
}

/// A thread that waits for a labelflow process with `words` in its arguments, lets it
/// run `after`, then kills it with SIGKILL (once); it returns whether it killed one.
fn kill_once_when_seen(
    words: Vec<String>,
    after: Duration,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        while !done.load(Ordering::Relaxed) {
            if let Some(&pid) = processes_with(&words).first() {
                std::thread::sleep(after);
                // SAFETY: kill(2) with a pid read from /proc and a valid signal.
                let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
                if rc == 0 {
                    eprintln!("killed labelflow pid {pid} ({words:?})");
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    })
}

/// `labelflow query --format csv` over `data`: the lines after the header.
fn query_rows(data: &str, sql: &str, env: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = labelflow();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd
        .args(["query", "--data", data, "--format", "csv", sql])
        .output()
        .unwrap();
    assert!(o.status.success(), "query {sql}: {}", stderr(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(String::from)
        .collect()
}

/// A Python that imports `module`, through [`require_python`].
fn python_with(module: &str) -> Option<String> {
    let py = require_python(module)?;
    let ok = Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    require(
        &format!("Python's {module}"),
        ok.then_some(py),
        "scripts/requirements-test.txt has it (scripts/test.sh installs it into .venv)",
    )
}

fn out_text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Eight shards over the S3 server on a two-node Ray cluster; shard 3's labelflow is
/// killed mid-shard. Ray retries it, the retry continues its run, and the dataset has
/// every object exactly once, with one finished run record per shard.
#[test]
fn ray_runs_eight_shards_and_retries_a_killed_worker() {
    let Some(endpoint) = require_s3_endpoint() else {
        return;
    };
    let Some(py) = python_with("ray") else {
        return;
    };
    let bucket = "ray-shards";
    create_bucket(&endpoint, bucket);
    let local = scratch("ray-photos");
    let names = photo_copies(&local, 160);
    let store = object_store::aws::AmazonS3Builder::from_env()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .build()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for n in &names {
            let bytes = std::fs::read(local.join(n)).unwrap();
            store
                .put(&format!("photos/{n}").into(), PutPayload::from(bytes))
                .await
                .unwrap();
        }
    });
    let output = format!("s3://{bucket}/preds/");
    let model = small_model();
    let s3_env = [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let done = Arc::new(AtomicBool::new(false));
    let killer = kill_once_when_seen(
        vec!["--shard=3/8".into(), output.clone()],
        Duration::from_millis(300),
        done.clone(),
    );
    let started = Instant::now();
    let o = Command::new(&py)
        .current_dir(root())
        .envs(s3_env)
        .env("ORT_DYLIB_PATH", ort_lib())
        .args([
            "tests/tools/ray_cluster.py",
            "--nodes",
            "2",
            "--cpus-per-node",
            "1",
            "--",
        ])
        .arg(&py)
        .args([
            "docker/ray/run.py",
            "--shards",
            "8",
            "--address",
            "{address}",
            "--bin",
        ])
        .arg(env!("CARGO_BIN_EXE_labelflow"))
        .args([
            "--",
            "--input",
            &format!("s3://{bucket}/photos/"),
            "--output",
            &output,
        ])
        .arg("--model")
        .arg(&model)
        .args(["--batch-size", "2"])
        .output()
        .unwrap();
    done.store(true, Ordering::Relaxed);
    let killed = killer.join().unwrap();
    eprintln!("{}", out_text(&o));
    eprintln!(
        "ray: 8 shards, 160 objects, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(killed, "shard 3's worker was never seen running");
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("8 of 8 shards finished"), "{table}");
    let shard3 = table
        .lines()
        .find(|l| l.trim_start().starts_with("3/8"))
        .unwrap_or_else(|| panic!("no row for shard 3: {table}"));
    let attempts: u32 = shard3.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        attempts >= 2,
        "shard 3 was killed, so Ray ran it again: {shard3}"
    );

    let rows = query_rows(
        &output,
        "SELECT count(*), count(DISTINCT uri), count(error), count(DISTINCT run_id) FROM predictions",
        &s3_env,
    );
    assert_eq!(
        rows,
        vec!["160,160,0,8"],
        "every object once, one run per shard"
    );
    // One finished run record per shard.
    let records: Vec<_> = rt.block_on(async {
        futures::TryStreamExt::try_collect::<Vec<_>>(store.list(Some(&"preds/_runs".into())))
            .await
            .unwrap()
    });
    for i in 0..8 {
        let rec = records
            .iter()
            .find(|m| m.location.as_ref().ends_with(&format!("/s{i}of8.json")))
            .unwrap_or_else(|| panic!("no run record of shard {i}: {records:?}"));
        let bytes = rt.block_on(async {
            store
                .get(&rec.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        });
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["status"], "finished", "shard {i}: {v}");
    }
}

/// A fatal exit (2: here a model that does not exist) is never retried: the launcher,
/// on a local cluster it starts itself, exits 2 and names every failed shard.
#[test]
fn ray_does_not_retry_a_fatal_shard() {
    let Some(py) = python_with("ray") else {
        return;
    };
    let dir = scratch("ray-fatal");
    photo_copies(&dir.join("in"), 4);
    let o = Command::new(&py)
        .current_dir(root())
        .env("ORT_DYLIB_PATH", ort_lib())
        .args(["docker/ray/run.py", "--shards", "2", "--bin"])
        .arg(env!("CARGO_BIN_EXE_labelflow"))
        .args(["--", "--input"])
        .arg(dir.join("in"))
        .arg("--output")
        .arg(dir.join("out"))
        .arg("--model")
        .arg(dir.join("no-such-model.onnx"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out_text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("shards 0/2, 1/2 failed"), "{}", out_text(&o));
    assert!(
        err.contains("no-such-model.onnx"),
        "the cause is shown: {}",
        out_text(&o)
    );
    let table = String::from_utf8_lossy(&o.stdout);
    for i in 0..2 {
        let row = table
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{i}/2")))
            .unwrap_or_else(|| panic!("no row for shard {i}: {table}"));
        assert_eq!(
            row.split_whitespace().nth(1),
            Some("1"),
            "a fatal shard runs once: {row}"
        );
    }
}

/// A one-machine Slurm cluster, stopped when dropped.
struct Slurm {
    dir: PathBuf,
    conf: String,
}

impl Slurm {
    fn start(dir: PathBuf) -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        let root_user = unsafe { libc::geteuid() } == 0;
        require(
            "root (the local Slurm cluster's daemons)",
            root_user.then_some(()),
            "run the suite as root, as CI does",
        )?;
        let o = Command::new(root().join("scripts/slurm-local.sh"))
            .arg("start")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "scripts/slurm-local.sh start: {}",
            out_text(&o)
        );
        let conf = String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("SLURM_CONF=").map(String::from))
            .unwrap();
        Some(Self { dir, conf })
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    fn stdout(&self, program: &str, args: &[&str]) -> String {
        let o = self.cmd(program).args(args).output().unwrap();
        assert!(o.status.success(), "{program} {args:?}: {}", out_text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/slurm-local.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// Four shards as a Slurm job array (docker/slurm/labelflow.sbatch); shard 2's
/// labelflow is killed mid-shard; the script requeues its task, the requeued task
/// continues the shard's run, and every image is labelled exactly once.
#[test]
fn slurm_runs_a_job_array_and_requeues_a_killed_worker() {
    let dir = scratch("slurm");
    let Some(slurm) = Slurm::start(dir.join("cluster")) else {
        return;
    };
    let input = dir.join("in");
    photo_copies(&input, 60);
    let output = dir.join("out");
    let out_s = output.to_str().unwrap().to_string();
    let done = Arc::new(AtomicBool::new(false));
    let killer = kill_once_when_seen(
        vec!["--shard=2/4".into(), out_s.clone()],
        Duration::from_millis(300),
        done.clone(),
    );
    let started = Instant::now();
    let job = slurm.stdout(
        "sbatch",
        &[
            "--parsable",
            "--array=0-3",
            "--cpus-per-task=1",
            &format!("--chdir={}", dir.display()),
            &format!(
                "--export=ALL,LABELFLOW_BIN={},ORT_DYLIB_PATH={}",
                env!("CARGO_BIN_EXE_labelflow"),
                ort_lib().display()
            ),
            root()
                .join("docker/slurm/labelflow.sbatch")
                .to_str()
                .unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            &out_s,
            "--model",
            small_model().to_str().unwrap(),
            "--batch-size",
            "2",
        ],
    );
    let job = job.trim().to_string();
    // Until every task has left the queue. A requeued task waits out the credential
    // lifetime (scripts/slurm-local.sh sets AuthInfo=cred_expire=10; Slurm's default is
    // 120 s); once it is back in the queue it is also asked to start now.
    let mut released = false;
    let mut last = String::new();
    loop {
        let queue = slurm.stdout("squeue", &["-h", "-r", "-j", &job, "-o", "%i %T %r"]);
        if queue != last {
            eprintln!(
                "{:6.1} s  {}",
                started.elapsed().as_secs_f64(),
                queue.trim().replace('\n', "; ")
            );
            last = queue.clone();
        }
        if queue.trim().is_empty() {
            break;
        }
        let requeued = queue
            .lines()
            .find(|l| l.starts_with(&format!("{job}_2 ")) && l.contains("PENDING"));
        if !released && requeued.is_some() && started.elapsed() > Duration::from_secs(2) {
            let _ = slurm
                .cmd("scontrol")
                .args(["update", &format!("JobId={job}_2"), "StartTime=now"])
                .status();
            released = true;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the array did not finish: {queue}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    done.store(true, Ordering::Relaxed);
    let killed = killer.join().unwrap();
    eprintln!(
        "slurm: 4 tasks, 60 images, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let log = |i: u32| {
        std::fs::read_to_string(dir.join(format!("labelflow-{job}_{i}.log"))).unwrap_or_default()
    };
    assert!(
        killed,
        "shard 2's worker was never seen running:\n{}",
        log(2)
    );
    for i in 0..4 {
        let info = slurm.stdout("scontrol", &["show", "job", &format!("{job}_{i}")]);
        assert!(
            info.contains("JobState=COMPLETED") && info.contains("ExitCode=0:0"),
            "task {i}: {info}\n{}",
            log(i)
        );
        if i == 2 {
            assert!(
                info.contains("Restarts=1"),
                "task 2 was requeued once: {info}"
            );
            assert!(
                log(2).contains("requeueing (attempt 2)") && log(2).contains("attempt 2, on"),
                "{}",
                log(2)
            );
        }
    }
    let rows = query_rows(
        &out_s,
        "SELECT count(*), count(DISTINCT uri), count(error), count(DISTINCT run_id) FROM predictions",
        &[],
    );
    assert_eq!(
        rows,
        vec!["60,60,0,4"],
        "every image once, one run per shard"
    );
}
