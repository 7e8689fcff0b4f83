//! The image's build stage copies everything `cargo build` reads: no Docker engine runs
//! in CI, so this reads docker/Dockerfile and checks its `COPY` set against what the
//! crate needs — the manifest, lock file and build script, `src/`, every file the
//! sources embed with `include_str!`/`include_bytes!`, and the bench and example
//! targets Cargo.toml names.

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
