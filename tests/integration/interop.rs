//! The Parquet written by `labelflow run` is read by DuckDB, pyarrow and polars with
//! the documented column names and types, and they count what `labelflow query` counts.

use std::collections::BTreeMap;

use super::common::*;

/// Column → (DuckDB type, pyarrow type, polars type), as the README documents them.
const COLUMNS: &[(&str, &str, &str, &str)] = &[
    ("uri", "VARCHAR", "string", "String"),
    ("key", "VARCHAR", "string", "String"),
    ("etag", "VARCHAR", "string", "String"),
    ("version", "VARCHAR", "string", "String"),
    ("size_bytes", "BIGINT", "int64", "Int64"),
    ("last_modified", "TIMESTAMP WITH TIME ZONE", "timestamp[us, tz=UTC]", "Datetime(time_unit='us', time_zone='UTC')"),
    ("width", "INTEGER", "int32", "Int32"),
    ("height", "INTEGER", "int32", "Int32"),
    ("label", "VARCHAR", "string", "String"),
    ("label_index", "INTEGER", "int32", "Int32"),
    ("score", "FLOAT", "float", "Float32"),
    (
        "top_k",
        "STRUCT(\"label\" VARCHAR, \"index\" INTEGER, score FLOAT)[]",
        "list<item: struct<label: string not null, index: int32 not null, score: float not null> not null>",
        "List(Struct({'label': String, 'index': Int32, 'score': Float32}))",
    ),
    ("model", "VARCHAR", "string", "String"),
    ("model_sha256", "VARCHAR", "string", "String"),
    ("labelled_at", "TIMESTAMP WITH TIME ZONE", "timestamp[us, tz=UTC]", "Datetime(time_unit='us', time_zone='UTC')"),
    ("error", "VARCHAR", "string", "String"),
];

#[test]
fn duckdb_pyarrow_and_polars_read_what_run_wrote() {
    let Some(py) = require_python("duckdb, pyarrow and polars") else {
        return;
    };
    let input = mixed_input("interop-in");
    let out = scratch("interop-out");
    let o = RunCmd::new(&input, &out)
        .args(["--run-id", "interop"])
        .output();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    // labelflow's own view: class counts and errors.
    let q = run_cli(&[
        "query",
        "--data",
        out.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT label, count(*) AS n FROM predictions WHERE error IS NULL GROUP BY label",
    ]);
    assert!(q.status.success(), "{}", stderr(&q));
    let mut ours: BTreeMap<String, u64> = BTreeMap::new();
    for line in String::from_utf8_lossy(&q.stdout).lines().skip(1) {
        let (label, n) = line.rsplit_once(',').unwrap();
        ours.insert(label.to_string(), n.parse().unwrap());
    }
    let total_rows = files_under(&input).len() as u64;
    // One run: `latest` is every row (each object is written once per run).
    let l = run_cli(&[
        "query",
        "--data",
        out.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT count(*) AS n FROM latest",
    ]);
    assert!(l.status.success(), "{}", stderr(&l));
    assert_eq!(
        String::from_utf8_lossy(&l.stdout).lines().nth(1),
        Some(total_rows.to_string().as_str())
    );
    let errors = odd_expectations().iter().filter(|e| !e.1).count() as u64;
    assert_eq!(ours.values().sum::<u64>(), total_rows - errors);

    let c = std::process::Command::new(&py)
        .arg(data("check_interop.py"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
    for (reader, col) in [("duckdb", 1), ("pyarrow", 2), ("polars", 3)] {
        let r = &seen[reader];
        assert_eq!(r["rows"].as_u64(), Some(total_rows), "{reader} row count");
        assert_eq!(r["errors"].as_u64(), Some(errors), "{reader} error rows");
        let labels: BTreeMap<String, u64> = r["labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        assert_eq!(labels, ours, "{reader} per-class counts");
        let columns = r["columns"].as_object().unwrap();
        for row in COLUMNS {
            let want = [row.1, row.2, row.3][col - 1];
            let got = columns.get(row.0).and_then(|v| v.as_str());
            assert_eq!(got, Some(want), "{reader}: column {}", row.0);
        }
        assert!(
            columns.contains_key("run_id"),
            "{reader} exposes run_id from the folder"
        );
        assert_eq!(columns.len(), COLUMNS.len() + 1, "{reader}: {columns:?}");
    }
}
