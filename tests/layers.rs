//! The library's import graph: no module imports one in a higher layer, and no circle
//! of imports, between top-level modules or between the files of one module. The
//! layers are the order data flows in (ARCHITECTURE.md); a new top-level module has
//! to be placed in one here.
//!
//! Imports are read from the source: `crate::` and `super::` paths, and a `mod.rs`'s
//! paths into its own submodules. Comments and `#[cfg(test)]` modules do not count.

// A failed step is a failed test: helpers may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Low to high: a module may import its own layer (without circles) and lower ones.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &[
            "error", "stable", "redact", "runtime", "cpu_pool", "stages", "schema", "batch",
        ],
    ),
    ("storage", &["store"]),
    ("reaching stores", &["link", "hosts"]),
    (
        "input and model files",
        &["source", "lease", "preprocess", "decode", "nvjpeg", "onnx"],
    ),
    ("model and dataset layout", &["infer", "dataset"]),
    (
        "reading and writing datasets",
        &["runs", "query", "rerun", "sink", "manifest"],
    ),
    ("plans", &["config"]),
    ("jobs", &["pipeline", "report", "train"]),
];

/// One library file: its module path (`infer::pool`) and its source without comments
/// and test modules.
struct File {
    module: String,
    is_dir_module: bool,
    text: String,
}

fn library_files() -> Vec<File> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    walk(&src, &mut paths);
    let mut files = Vec::new();
    for path in paths {
        let rel = path.strip_prefix(&src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        // The binary (main.rs, src/cli/) is not the library; test files are tests.
        if parts[0] == "main" || parts[0] == "cli" || parts.last().unwrap() == "tests" {
            continue;
        }
        let last = parts.last().unwrap().clone();
        let is_dir_module = last == "mod" || last == "lib";
        if is_dir_module {
            parts.pop();
        }
        let text = strip(&std::fs::read_to_string(&path).unwrap());
        files.push(File {
            module: parts.join("::"),
            is_dir_module,
            text,
        });
    }
    files
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without `//` comments (doc comments included: their links are not
/// imports) and `#[cfg(test)]` items.
fn strip(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    // `#[cfg(test)] mod name { ... }` and `#[cfg(test)] mod name;`
    while let Some(start) = out.find("#[cfg(test)]") {
        let rest = &out[start..];
        let end = match (rest.find('{'), rest.find(';')) {
            (Some(open), semi) if semi.is_none_or(|s| open < s) => {
                let mut depth = 0usize;
                let mut end = rest.len();
                for (i, c) in rest[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (_, Some(semi)) => semi + 1,
            _ => rest.len(),
        };
        out.replace_range(start..start + end, "");
    }
    out
}

/// The paths after each `prefix` in `text`, `{a, b::{c}}` groups expanded.
fn paths_after(text: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find(prefix) {
        let at = from + i;
        from = at + prefix.len();
        // A whole word: `xsuper::` or `a::crate::` are not this prefix.
        if at > 0
            && (bytes[at - 1].is_ascii_alphanumeric()
                || bytes[at - 1] == b'_'
                || bytes[at - 1] == b':')
        {
            continue;
        }
        expand(&text[from..], Vec::new(), &mut found);
    }
    found
}

/// Expand the path at the start of `text` (after a `::`) onto `base`.
fn expand(text: &str, base: Vec<String>, found: &mut Vec<Vec<String>>) {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 0usize;
        let mut item_start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(&group[item_start..i], base.clone(), found);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&group[item_start..i], base.clone(), found);
                    item_start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let ident: String = text
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() {
        if !base.is_empty() {
            found.push(base);
        }
        return;
    }
    let mut path = base;
    path.push(ident.clone());
    match text[ident.len()..].strip_prefix("::") {
        Some(rest) => expand(rest, path, found),
        None => found.push(path),
    }
}

/// The module (of `modules`) a path names: its longest prefix that is one.
fn resolve(path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// Module → the modules it imports (itself excluded).
fn imports(files: &[File]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = files.iter().map(|f| f.module.clone()).collect();
    let mut graph = BTreeMap::new();
    for f in files {
        let own: Vec<String> = f
            .module
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        // `super::` of `a::b` (file b.rs) is `a`; of `a::b` (b/mod.rs) it is `a` too.
        let parent: Vec<String> = own[..own.len().saturating_sub(1)].to_vec();
        let mut to = BTreeSet::new();
        let mut add = |path: Vec<String>| {
            if let Some(m) = resolve(&path, &modules) {
                if m != f.module {
                    to.insert(m);
                }
            }
        };
        for p in paths_after(&f.text, "crate::") {
            add(p);
        }
        for p in paths_after(&f.text, "super::") {
            add(parent.iter().cloned().chain(p).collect());
        }
        if f.is_dir_module {
            // A folder module's paths into its own submodules (`consume::Consumer`).
            for child in modules.iter().filter_map(|m| {
                let rest = m.strip_prefix(&f.module)?.strip_prefix("::")?;
                (!rest.contains("::")).then(|| rest.to_string())
            }) {
                for p in paths_after(&f.text, &format!("{child}::")) {
                    add(own
                        .iter()
                        .cloned()
                        .chain([child.clone()])
                        .chain(p)
                        .collect());
                }
            }
        }
        graph.insert(f.module.clone(), to);
    }
    graph
}

/// A circle in `graph`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut found = stack[from..].to_vec();
                    found.push(next.clone());
                    return Some(found);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node) {
            if let Some(c) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn no_file_imports_in_a_circle() {
    let graph = imports(&library_files());
    assert!(graph.len() > 50, "only {} library files found", graph.len());
    if let Some(c) = circle(&graph) {
        panic!("files import each other in a circle: {}", c.join(" → "));
    }
}

#[test]
fn top_level_modules_import_only_their_own_layer_or_lower_ones() {
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, ms))| ms.iter().map(move |m| (*m, i)))
        .collect();
    let files = library_files();
    let mut between: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (from, tos) in imports(&files) {
        let a = top(&from).to_string();
        if a.is_empty() {
            continue; // lib.rs
        }
        let Some(&la) = layer_of.get(a.as_str()) else {
            wrong.push(format!("module {a} is in no layer of tests/layers.rs"));
            continue;
        };
        for to in tos {
            let b = top(&to).to_string();
            if b == a || b.is_empty() {
                continue;
            }
            match layer_of.get(b.as_str()) {
                Some(&lb) if lb > la => wrong.push(format!(
                    "{from} ({}) imports {to} ({}), a higher layer",
                    LAYERS[la].0, LAYERS[lb].0
                )),
                _ => {}
            }
            between.entry(a.clone()).or_default().insert(b);
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    if let Some(c) = circle(&between) {
        panic!("modules import each other in a circle: {}", c.join(" → "));
    }
}

#[test]
fn no_library_file_is_over_900_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    walk(&src, &mut paths);
    let long: Vec<String> = paths
        .iter()
        .filter(|p| !p.ends_with("tests.rs"))
        .filter_map(|p| {
            let n = std::fs::read_to_string(p).unwrap().lines().count();
            (n > 900).then(|| format!("{} ({n} lines)", p.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these: {}", long.join(", "));
}

#[test]
fn the_reader_finds_imports_the_way_rust_writes_them() {
    let text = strip(
        "use crate::a::{b, c::{d, e}};\n// crate::comment\nuse super::x;\nlet y = crate::f::g(1);\n#[cfg(test)]\nmod tests { use crate::t; }\n",
    );
    let found = paths_after(&text, "crate::");
    let joined: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["a::b", "a::c::d", "a::c::e", "f::g"]);
    assert_eq!(paths_after(&text, "super::"), [vec!["x".to_string()]]);
    let graph = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert!(circle(&graph).is_some());
}
