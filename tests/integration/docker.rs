//! The image's build stage copies everything `cargo build` reads: no Docker engine runs
//! in CI, so this reads docker/Dockerfile and checks its `COPY` set against what the
//! crate needs — the manifest, lock file and build script, `src/`, every file the
//! sources embed with `include_str!`/`include_bytes!`, and the bench and example
//! targets Cargo.toml names. (It used to also type-check a copy of those files in a
//! target folder of its own: a second build of the whole tree, three to five minutes,
//! for what this reading already proves.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Source paths of the `COPY` lines of the stage named `stage` (`FROM … AS stage`),
/// without `--from` copies.
fn copied(dockerfile: &str, stage: &str) -> Vec<String> {
    let mut in_stage = false;
    let mut out = Vec::new();
    for line in dockerfile.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().map(|w| w.to_ascii_uppercase()) {
            Some(w) if w == "FROM" => {
                in_stage = words.len() >= 4
                    && words[words.len() - 2].eq_ignore_ascii_case("AS")
                    && words[words.len() - 1] == stage;
            }
            Some(w) if w == "COPY" && in_stage => {
                let args: Vec<&str> = words[1..]
                    .iter()
                    .copied()
                    .filter(|a| !a.starts_with("--"))
                    .collect();
                if words[1..].iter().any(|a| a.starts_with("--from")) {
                    continue;
                }
                // The last argument is the destination.
                out.extend(args[..args.len() - 1].iter().map(|s| s.to_string()));
            }
            _ => {}
        }
    }
    out
}

/// Files the crate's build reads, relative to the repository root.
fn needed() -> BTreeSet<String> {
    let root = root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let mut need: BTreeSet<String> = ["Cargo.toml", "Cargo.lock"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut section = String::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
        }
        let value = |key: &str| {
            line.strip_prefix(key)
                .map(|rest| rest.trim_start())
                .and_then(|rest| rest.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
        };
        if section == "[package]" {
            if let Some(b) = value("build") {
                need.insert(b);
            }
        }
        if let Some(name) = value("name") {
            match section.as_str() {
                "[[bench]]" => {
                    need.insert(format!("benches/{name}.rs"));
                }
                "[[example]]" => {
                    need.insert(format!("examples/{name}.rs"));
                }
                _ => {}
            }
        }
    }
    // Every source file, and what it embeds.
    let mut stack = vec![root.join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            need.insert(rel(&root, &path));
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for macro_name in ["include_str!(\"", "include_bytes!(\""] {
                for (at, _) in text.match_indices(macro_name) {
                    let rest = &text[at + macro_name.len()..];
                    let Some(end) = rest.find('"') else { continue };
                    let target = path.parent().unwrap().join(&rest[..end]);
                    let target = target.canonicalize().unwrap_or_else(|e| {
                        panic!("{} embeds {}: {e}", path.display(), target.display())
                    });
                    need.insert(rel(&root, &target));
                }
            }
        }
    }
    need
}

fn rel(root: &Path, path: &Path) -> String {
    let root = root.canonicalize().unwrap();
    let path = path.canonicalize().unwrap();
    path.strip_prefix(&root)
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/")
}

#[test]
fn the_image_build_stage_copies_everything_the_build_reads() {
    let dockerfile = std::fs::read_to_string(root().join("docker/Dockerfile")).unwrap();
    let copies = copied(&dockerfile, "build");
    assert!(!copies.is_empty(), "no COPY in the build stage");
    let covered = |file: &str| {
        copies.iter().any(|c| {
            let c = c.trim_end_matches('/');
            c == "." || file == c || file.starts_with(&format!("{c}/"))
        })
    };
    let need = needed();
    // The embedded files are found, not only the sources.
    assert!(need.contains("sql/class_counts.sql"), "{need:?}");
    assert!(need.contains("benches/baseline.py"), "{need:?}");
    assert!(need.contains("build.rs"), "{need:?}");
    let missing: Vec<&String> = need.iter().filter(|f| !covered(f)).collect();
    assert!(
        missing.is_empty(),
        "docker/Dockerfile's build stage does not copy {missing:?} (it copies {copies:?}); `cargo build` in the image would fail"
    );
}

#[test]
fn the_copy_parser_reads_stages_and_skips_other_stages() {
    let text = "FROM rust AS build\nCOPY a b ./\nCOPY --chown=1 src src\nFROM debian\nCOPY --from=build /x /y\nCOPY docs docs\n";
    assert_eq!(copied(text, "build"), vec!["a", "b", "src"]);
}

/// The Kubernetes Indexed Job parses, and has what a sharded run needs: indexed
/// completions matching `--shards`, a per-index retry limit, a GPU per worker,
/// credentials from a Secret, the pipeline from a ConfigMap mounted where the
/// arguments look for it — and that pipeline is one `labelflow run` accepts.
#[test]
fn the_kubernetes_job_has_the_fields_a_sharded_run_needs() {
    let Some(py) = super::common::require_python("pyyaml") else {
        return;
    };
    let path = root().join("docker/k8s/indexed-job.yaml");
    let o = std::process::Command::new(py)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let docs: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let of_kind = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {}", path.display()))
    };
    let job = of_kind("Job");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let completions = spec["completions"].as_u64().unwrap();
    assert!(spec["parallelism"].as_u64().unwrap() <= completions);
    assert!(spec["backoffLimitPerIndex"].as_u64().unwrap() >= 1);
    assert_eq!(
        spec["podReplacementPolicy"], "Failed",
        "never two pods of one index"
    );
    // The exit codes: 2 fails the index, 4 (the shard's lease is held) is retried
    // without counting.
    let action_for = |code: u64| {
        spec["podFailurePolicy"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["onExitCodes"]["values"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|c| c.as_u64() == Some(code)))
            })
            .map(|r| r["action"].as_str().unwrap().to_string())
    };
    assert_eq!(action_for(2).as_deref(), Some("FailIndex"));
    assert_eq!(
        action_for(u64::from(labelflow::pipeline::EXIT_LEASE_HELD)).as_deref(),
        Some("Ignore")
    );
    assert_eq!(
        action_for(u64::from(labelflow::pipeline::EXIT_INTERRUPTED)).as_deref(),
        Some("Ignore")
    );
    assert!(
        spec["podFailurePolicy"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "Ignore"
                && r["onPodConditions"][0]["type"] == "DisruptionTarget"),
        "an eviction or preemption is retried without counting"
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "run");
    assert!(
        args.contains(&format!("--shards={completions}").as_str()),
        "--shards must equal completions ({completions}): {args:?}"
    );
    assert!(
        args.iter().any(|a| a.starts_with("--run-id=")),
        "a fixed run id lets retried workers resume: {args:?}"
    );
    for flag in ["--wait", "--allow-error-rows"] {
        assert!(
            args.contains(&flag),
            "{flag} (see the Job's comments): {args:?}"
        );
    }
    let grace = args
        .iter()
        .find_map(|a| a.strip_prefix("--stop-grace="))
        .map_or(15, |g| g.parse::<u64>().unwrap());
    assert!(
        pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30) > grace,
        "the pod's termination grace must outlast --stop-grace"
    );
    let gpus = &container["resources"]["limits"]["nvidia.com/gpu"];
    assert!(gpus.as_u64().unwrap_or(0) >= 1, "a GPU per worker: {gpus}");
    let secret = container["envFrom"]
        .as_array()
        .and_then(|e| e.iter().find_map(|s| s["secretRef"]["name"].as_str()))
        .expect("credentials from a Secret (envFrom secretRef)");
    assert!(!secret.is_empty());

    // The pipeline file named in the arguments comes from the ConfigMap's mount.
    let pipeline = std::path::Path::new(args[1]);
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| pipeline.starts_with(m["mountPath"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("nothing is mounted where {} is read", pipeline.display()));
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let config_map = volume["configMap"]["name"]
        .as_str()
        .expect("the pipeline from a ConfigMap");
    let cm = of_kind("ConfigMap");
    assert_eq!(cm["metadata"]["name"], config_map);
    let file = pipeline.file_name().unwrap().to_str().unwrap();
    let toml = cm["data"][file]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap has no {file}"));
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join(file);
    std::fs::write(&local, toml).unwrap();
    let config = labelflow::config::JobConfig::load(&local).unwrap();
    let url = config.input.and_then(|i| i.url).unwrap_or_default();
    assert!(url.starts_with("s3://"), "{url}");
}

/// The image's entry point runs outside Docker too: pointed at a Python environment
/// with the onnxruntime wheel (the suite's .venv), it finds the library there and
/// `labelflow doctor` loads it.
#[test]
fn the_entry_point_finds_onnx_runtime_in_the_python_environment() {
    let Some(py) = super::common::require_python("onnxruntime") else {
        return;
    };
    let o = std::process::Command::new("bash")
        .arg(root().join("docker/entrypoint.sh"))
        .arg("doctor")
        .env_remove("ORT_DYLIB_PATH")
        .env("LABELFLOW_PYTHON", &py)
        .env("LABELFLOW_BIN", env!("CARGO_BIN_EXE_labelflow"))
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("onnxruntime/capi/libonnxruntime.so"),
        "doctor should report the library the entry point found: {out}"
    );
}

/// Every manifest under docker/k8s/ validates against the Kubernetes 1.33 schemas, with
/// no field the API server would reject (`kubernetes-validate --strict`, offline).
#[test]
fn every_kubernetes_manifest_validates_against_kubernetes_1_33() {
    let Some(py) = super::common::require_python("kubernetes-validate") else {
        return;
    };
    let tool = std::path::Path::new(&py).with_file_name("kubernetes-validate");
    let tool = super::common::require(
        "kubernetes-validate",
        tool.exists().then_some(tool),
        "scripts/requirements-test.txt has it (scripts/test.sh installs it into .venv)",
    );
    let Some(tool) = tool else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("docker/k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let o = std::process::Command::new(tool)
        .args(["--strict", "-k", "1.33.0"])
        .args(&files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    assert!(text.contains("passed for resource job/"), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
}

/// The build context is only what the Dockerfile copies: .dockerignore shuts out
/// everything (the target folder, the test tools) and lets each COPY source back in.
#[test]
fn the_build_context_lets_in_every_copy_source() {
    let root = root();
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    let lines: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(lines.first(), Some(&"*"), "everything is shut out first");
    let allowed: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix('!')).collect();
    let dockerfile = std::fs::read_to_string(root.join("docker/Dockerfile")).unwrap();
    for stage in ["build", "runtime", "cpu", "cuda"] {
        for src in copied(&dockerfile, stage) {
            let src = src.trim_end_matches('/');
            assert!(
                allowed
                    .iter()
                    .any(|a| src == *a || src.starts_with(&format!("{a}/"))),
                "COPY {src} (stage {stage}) is not let in by .dockerignore: {allowed:?}"
            );
        }
    }
}

/// The AWS Batch job definition is a valid RegisterJobDefinition request (botocore's
/// own API model, offline), and its retry strategy knows the exit codes.
#[test]
fn the_aws_batch_job_definition_validates_and_knows_the_exit_codes() {
    let Some(py) = super::common::require_python("boto3") else {
        return;
    };
    let path = root().join("docker/aws-batch/job-definition.json");
    let o = std::process::Command::new(py)
        .args([
            "-c",
            "import json, sys, botocore.session\n\
from botocore.validate import ParamValidator\n\
op = botocore.session.get_session().get_service_model('batch').operation_model('RegisterJobDefinition')\n\
r = ParamValidator().validate(json.load(open(sys.argv[1])), op.input_shape)\n\
sys.exit(r.generate_report() if r.has_errors() else 0)",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let def: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let rules = def["retryStrategy"]["evaluateOnExit"].as_array().unwrap();
    let action = |code: &str| {
        rules
            .iter()
            .find(|r| r["onExitCode"] == code)
            .map(|r| r["action"].as_str().unwrap().to_string())
    };
    assert_eq!(action("2").as_deref(), Some("EXIT"), "fatal: not retried");
    assert_eq!(
        action("3").as_deref(),
        Some("RETRY"),
        "interrupted: retried"
    );
    assert_eq!(action("4").as_deref(), Some("RETRY"), "lease held: retried");
    assert!(
        rules
            .iter()
            .any(|r| r["onStatusReason"] == "Host EC2*" && r["action"] == "RETRY"),
        "a reclaimed Spot host is retried"
    );
    let command: Vec<&str> = def["containerProperties"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(command[0], "run");
    assert!(command.contains(&"--shards"), "{command:?}");
}
