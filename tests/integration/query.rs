//! SQL over the predictions fixture in `tests/data/predictions` (written by
//! `tests/data/make_predictions_fixture.py`, whose header lists the rows).
//!
//! Every file in `sql/` runs against the fixture and its CSV output must equal
//! `sql/expected/<name>.csv`. After changing a query or the fixture, regenerate with
//! `LABELFLOW_BLESS=1 cargo test --test integration query::` and review the diff by hand: the
//! expected files are the specification, not a recording.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::prelude::{DataFrame, SessionContext};
use labelflow::query::{self, NamedQuery, TextFormat};
use labelflow::store::Location;
use object_store::{ObjectStore, ObjectStoreExt};

use super::common::{create_bucket, labelflow, parquet_batches, require_s3_endpoint};

const RUN_A: &str = "20261127T213000Z-ab12cd";
const RUN_B: &str = "20261201T090000Z-ef34aa";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> PathBuf {
    root().join("tests/data/predictions")
}

fn truth_csv() -> PathBuf {
    root().join("tests/data/truth.csv")
}

async fn context() -> SessionContext {
    let ctx = query::open(fixture().to_str().unwrap()).await.unwrap();
    query::register_table(&ctx, "truth", truth_csv().to_str().unwrap())
        .await
        .unwrap();
    ctx
}

async fn csv(df: DataFrame) -> String {
    let stream = df.execute_stream().await.unwrap();
    let mut out = Vec::new();
    query::write_text(stream, TextFormat::Csv, &mut out)
        .await
        .unwrap();
    String::from_utf8(out).unwrap()
}

async fn run(ctx: &SessionContext, sql: &str) -> String {
    csv(query::sql(ctx, sql, &[]).await.unwrap()).await
}

async fn run_named(ctx: &SessionContext, name: &str, params: &[(&str, &str)]) -> String {
    let q = NamedQuery::builtin(name).unwrap().unwrap();
    let given: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    csv(query::named(ctx, &q, &given).await.unwrap()).await
}

fn sql_files() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("sql")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("sql") {
            let name = path.file_stem().unwrap().to_str().unwrap().to_string();
            out.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
    out.sort();
    out
}

/// The embeddings fixture: one run written with 8-d embeddings and 64-bit codes by the
/// project's own writer and code projection. By construction:
/// - c01_copy is c01 with small changes (a near duplicate), d01_crop likewise of d01;
/// - c02 is another cat, close to c01 but not a copy (cosine 0.72 about the origin,
///   0.47 about the mean of the seven vectors); d02 and b01 are unlike the rest;
/// - f01 failed (no embedding).
async fn embeddings_context() -> SessionContext {
    use labelflow::infer::Embedder;
    use labelflow::sink::{ModelStamp, PartWriter, Row, SinkOptions};
    use labelflow::source::{ObjectRef, Shard};
    use labelflow::store::{Access, RetryPolicy};

    const ROWS: &[(&str, usize, Option<[f32; 8]>)] = &[
        (
            "cats/c01.jpg",
            0,
            Some([5.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 1.0]),
        ),
        (
            "cats/c01_copy.jpg",
            0,
            Some([5.0, 1.05, 0.0, 0.0, 2.0, 0.0, 0.05, 1.0]),
        ),
        (
            "cats/c02.jpg",
            0,
            Some([3.0, 2.0, 0.0, 2.0, 0.0, 0.0, 1.0, 0.0]),
        ),
        (
            "dogs/d01.jpg",
            1,
            Some([0.0, 0.0, 5.0, 1.0, 0.0, 2.0, 0.0, 0.0]),
        ),
        (
            "dogs/d01_crop.jpg",
            1,
            Some([0.0, 0.1, 5.0, 1.2, 0.0, 2.0, 0.0, 0.0]),
        ),
        (
            "dogs/d02.jpg",
            1,
            Some([0.0, 1.0, 3.0, 0.0, 0.0, 0.0, 3.0, 0.0]),
        ),
        (
            "birds/b01.jpg",
            2,
            Some([0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 6.0]),
        ),
        ("fish/f01.jpg", 3, None),
    ];
    let dir = super::common::scratch("embeddings-fixture");
    let out =
        Location::parse(dir.to_str().unwrap(), Access::Write, RetryPolicy::default()).unwrap();
    let embedder = Embedder::new(8, 64);
    let stamp = ModelStamp {
        name: "alexnet-pets-ft".into(),
        sha256: "0".repeat(64),
        classes: Arc::new(["cat", "dog", "bird", "fish"].map(String::from).to_vec()),
        embedding: Some(labelflow::schema::EmbeddingColumns {
            dim: 8,
            code_bytes: 8,
        }),
    };
    let mut w =
        PartWriter::new(out, RUN_B, Shard::default(), SinkOptions::default(), stamp).unwrap();
    for (key, class, vector) in ROWS {
        let row = Row {
            object: ObjectRef {
                path: (*key).into(),
                key: key.to_string(),
                uri: format!("s3://pets-bucket/{key}"),
                size: 1000,
                etag: None,
                version: None,
                last_modified: chrono::Utc::now(),
                origin: Default::default(),
            },
            width: vector.map(|_| 640),
            height: vector.map(|_| 480),
            top: match vector {
                Some(_) => vec![labelflow::infer::Scored {
                    index: *class,
                    score: 0.9,
                }],
                None => Vec::new(),
            },
            error: vector
                .is_none()
                .then(|| "decode: truncated JPEG data".to_string()),
            labelled_at: chrono::Utc::now(),
            embedding: vector.map(|v| embedder.embed(&v)),
        };
        w.push(&row).await.unwrap();
    }
    w.finish().await.unwrap();
    query::open(dir.to_str().unwrap()).await.unwrap()
}

/// Queries that read embeddings run on their own fixture, with these parameters.
fn embedding_query_params(name: &str) -> &'static [(&'static str, &'static str)] {
    match name {
        "similar" => &[("key", "cats/c01.jpg"), ("k", "4")],
        _ => &[],
    }
}

#[tokio::test]
async fn every_named_query_matches_its_expected_result() {
    let ctx = context().await;
    let with_embeddings = embeddings_context().await;
    let bless = std::env::var_os("LABELFLOW_BLESS").is_some();
    let mut failures = Vec::new();
    for (name, text) in sql_files() {
        let q = NamedQuery::parse(&name, &text).unwrap();
        let actual = if q.needs_embeddings() {
            run_named(&with_embeddings, &name, embedding_query_params(&name)).await
        } else {
            csv(query::named(&ctx, &q, &[]).await.unwrap()).await
        };
        let expected_path = root().join("sql/expected").join(format!("{name}.csv"));
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{name}: result differs from {}\n--- expected\n{expected}--- actual\n{actual}",
                expected_path.display()
            )),
            Err(_) => failures.push(format!(
                "{name}: no expected result {}; write it (LABELFLOW_BLESS=1) and review it\n--- actual\n{actual}",
                expected_path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn queries_of_embeddings_say_how_to_get_them() {
    let ctx = context().await;
    for name in ["similar", "near_duplicates"] {
        let q = NamedQuery::builtin(name).unwrap().unwrap();
        assert!(q.needs_embeddings(), "{name}");
        let e = query::named(&ctx, &q, &[]).await.unwrap_err().report();
        assert!(e.contains("labelflow run --embeddings"), "{name}: {e}");
    }
    // A query by key finds the image by its uri too, and k limits the rows.
    let ctx = embeddings_context().await;
    let by_uri = run_named(
        &ctx,
        "similar",
        &[("key", "s3://pets-bucket/cats/c01.jpg"), ("k", "1")],
    )
    .await;
    assert_eq!(by_uri.lines().count(), 2, "{by_uri}");
    assert!(by_uri.contains("cats/c01_copy.jpg"), "{by_uri}");
}

#[test]
fn built_in_queries_are_exactly_the_sql_folder() {
    let files = sql_files();
    let on_disk: BTreeSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let built_in: BTreeSet<&str> = NamedQuery::builtin_names().into_iter().collect();
    assert_eq!(on_disk, built_in, "add new sql/ files to the built-in list");
    for (name, text) in &files {
        let q = NamedQuery::builtin(name).unwrap().unwrap();
        assert_eq!(&q.sql, text, "{name}");
    }
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(root().join("sql/expected")).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        if !on_disk.contains(stem.as_str()) {
            stale.push(path);
        }
    }
    assert!(
        stale.is_empty(),
        "expected results without a query: {stale:?}"
    );
}

#[tokio::test]
async fn only_committed_parts_are_read_and_runs_are_a_column() {
    let ctx = context().await;
    // 20 rows in run A, 18 in run B; the staging file `part-00002.parquet#1` is not data.
    let counts = run(
        &ctx,
        "SELECT run_id, count(*) AS n FROM predictions GROUP BY run_id ORDER BY run_id",
    )
    .await;
    assert_eq!(counts, format!("run_id,n\n{RUN_A},20\n{RUN_B},18\n"));
}

#[tokio::test]
async fn latest_keeps_the_newest_run_per_image() {
    let ctx = context().await;
    assert_eq!(
        run(&ctx, "SELECT count(*) AS n FROM latest").await,
        "n\n20\n"
    );
    // Seen by both runs: run B's row. Seen only by run A: run A's row.
    let rows = run(
        &ctx,
        "SELECT key, run_id, label FROM latest \
         WHERE key IN ('cats/indoor/c02.jpg', 'fish/f03.jpg', 'cats/outdoor/c05.jpg') ORDER BY key",
    )
    .await;
    assert_eq!(
        rows,
        format!(
            "key,run_id,label\n\
             cats/indoor/c02.jpg,{RUN_B},cat\n\
             cats/outdoor/c05.jpg,{RUN_B},\n\
             fish/f03.jpg,{RUN_A},fish\n"
        )
    );
}

/// `latest` takes one form for a few runs and another for many: both must give every
/// uri's row from the newest run that has it, and nothing else.
#[tokio::test]
async fn latest_is_the_newest_run_per_image_for_few_and_many_runs() {
    for runs in [3, 12] {
        // Copies of the fixture's two runs under new, increasing run ids; each copy of
        // run A drops nothing and each of run B relabels 18 of A's 20 images.
        let dir = super::common::scratch(&format!("latest-{runs}"));
        for i in 0..runs {
            let from = fixture().join(format!("run_id={}", if i % 2 == 0 { RUN_A } else { RUN_B }));
            let to = dir.join(format!("run_id=2026120{}T{:06}Z-copy{i:02}", 1 + i / 10, i));
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(&from).unwrap() {
                let f = f.unwrap().path();
                std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
            }
        }
        let ctx = query::open(dir.to_str().unwrap()).await.unwrap();
        let newest = run(
            &ctx,
            "SELECT uri, max(run_id) AS run_id FROM predictions GROUP BY uri ORDER BY uri",
        )
        .await;
        let latest = run(&ctx, "SELECT uri, run_id FROM latest ORDER BY uri").await;
        assert_eq!(latest, newest, "{runs} runs");
        assert_eq!(latest.lines().count() - 1, 20, "{runs} runs");
        // Whole rows, not only their keys: the label of each uri is its newest run's.
        let labels = run(
            &ctx,
            "SELECT l.uri, l.label FROM latest l JOIN predictions p \
               ON p.uri = l.uri AND p.run_id = l.run_id \
             WHERE l.label IS DISTINCT FROM p.label",
        )
        .await;
        assert_eq!(labels, "uri,label\n", "{runs} runs");
    }
}

#[tokio::test]
async fn parameters_are_typed_and_change_the_result() {
    let ctx = context().await;
    let rows = |s: &str| s.lines().count() - 1;
    // Scores below 0.3 in the newest runs: c03 (0.29), b04 (0.25), f03 (0.21).
    assert_eq!(rows(&run_named(&ctx, "low_confidence", &[]).await), 3);
    // Below 0.5 also d04 0.36, misc02 0.35, b03 0.47, f02 0.49.
    assert_eq!(
        rows(&run_named(&ctx, "low_confidence", &[("threshold", "0.5")]).await),
        7
    );
    assert_eq!(
        rows(&run_named(&ctx, "low_confidence", &[("threshold", "0")]).await),
        0
    );

    let two_levels = run_named(&ctx, "by_prefix", &[("depth", "2")]).await;
    assert!(two_levels.contains("cats/indoor,cat,3\n"), "{two_levels}");
    assert!(
        two_levels.contains("cats/outdoor,(error),1\n"),
        "{two_levels}"
    );

    let q = NamedQuery::builtin("low_confidence").unwrap().unwrap();
    for bad in ["0.3; DROP TABLE x", "0.3 OR 1=1", "'0.3'", ""] {
        let err = query::named(&ctx, &q, &[("threshold".into(), bad.into())])
            .await
            .unwrap_err()
            .report();
        assert!(
            err.contains("threshold") && err.contains("not a number"),
            "{bad:?}: {err}"
        );
    }
    let err = query::named(&ctx, &q, &[("limit".into(), "3".into())])
        .await
        .unwrap_err()
        .report();
    assert!(
        err.contains("\"limit\"") && err.contains("threshold"),
        "{err}"
    );
}

#[tokio::test]
async fn string_parameters_are_values_not_sql() {
    let ctx = context().await;
    let compare = run_named(&ctx, "model_compare", &[("run_a", RUN_B), ("run_b", RUN_B)]).await;
    // A run against itself: all 18 images unchanged.
    assert_eq!(
        compare,
        format!("run_a,run_b,label_a,label_b,images,share\n{RUN_B},{RUN_B},(same),(same),18,1.0\n")
    );
    let q = NamedQuery::builtin("model_compare").unwrap().unwrap();
    let injected = format!("{RUN_A}' OR '1'='1");
    let df = query::named(&ctx, &q, &[("run_a".into(), injected)])
        .await
        .unwrap();
    assert_eq!(csv(df).await, "run_a,run_b,label_a,label_b,images,share\n");

    let ad_hoc = query::sql(
        &ctx,
        "SELECT count(*) AS n FROM latest WHERE label = $label AND score >= $min",
        &query::infer_params(&[("label".into(), "cat".into()), ("min".into(), "0.5".into())]),
    )
    .await
    .unwrap();
    // c01 0.95, c02 0.62 (c03 is 0.29).
    assert_eq!(csv(ad_hoc).await, "n\n2\n");
}

#[tokio::test]
async fn syntax_and_plan_errors_carry_datafusion_messages() {
    let ctx = context().await;
    let err = query::sql(&ctx, "SELEC label FROM predictions", &[])
        .await
        .unwrap_err()
        .report();
    assert!(err.contains("SQL error") && err.contains("SELEC"), "{err}");
    let err = query::sql(&ctx, "SELECT labl FROM predictions", &[])
        .await
        .unwrap_err()
        .report();
    assert!(err.contains("labl"), "{err}");
    let err = query::sql(&ctx, "SELECT * FROM no_such_table", &[])
        .await
        .unwrap_err()
        .report();
    assert!(
        err.contains("no_such_table") && err.contains("not found"),
        "{err}"
    );
}

async fn open_err(data: &str) -> String {
    match query::open(data).await {
        Ok(_) => panic!("{data} opened"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_missing_dataset_names_the_path() {
    let missing = root().join("tests/data/no-such-predictions");
    let err = open_err(missing.to_str().unwrap()).await;
    assert!(
        err.contains("no-such-predictions") && err.contains("does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn an_empty_dataset_is_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    // Only things that are not data: a summary and a part still being written.
    std::fs::create_dir_all(dir.path().join("_runs")).unwrap();
    std::fs::write(dir.path().join("_runs/x.json"), "{}").unwrap();
    std::fs::create_dir_all(dir.path().join("run_id=x")).unwrap();
    std::fs::write(dir.path().join("run_id=x/part-0.parquet#1"), "PAR1").unwrap();
    let err = open_err(dir.path().to_str().unwrap()).await;
    let name = dir.path().file_name().unwrap().to_str().unwrap();
    assert!(err.contains("is empty") && err.contains(name), "{err}");
}

#[tokio::test]
async fn extra_tables_join_the_predictions() {
    let ctx = context().await;
    // Correct top-1 labels among the 19 human-labelled images (see confusion.csv).
    let correct = run(
        &ctx,
        "SELECT count(*) AS n FROM latest l JOIN truth t ON l.uri = t.uri WHERE l.label = t.label",
    )
    .await;
    assert_eq!(correct, "n\n13\n");

    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("reviewed.jsonl");
    std::fs::write(
        &jsonl,
        "{\"uri\": \"s3://pets-bucket/misc02.jpg\", \"ok\": false}\n\
         {\"uri\": \"s3://pets-bucket/dogs/d01.jpg\", \"ok\": true}\n",
    )
    .unwrap();
    query::register_table(&ctx, "reviewed", jsonl.to_str().unwrap())
        .await
        .unwrap();
    let joined = run(
        &ctx,
        "SELECT l.key, l.label, r.ok FROM latest l JOIN reviewed r ON l.uri = r.uri ORDER BY l.key",
    )
    .await;
    assert_eq!(
        joined,
        "key,label,ok\ndogs/d01.jpg,dog,true\nmisc02.jpg,fox,false\n"
    );

    let err = query::register_table(&ctx, "gone", "/no/such/labels.csv")
        .await
        .unwrap_err()
        .report();
    assert!(err.contains("/no/such/labels.csv"), "{err}");
}

/// `labelflow query --data <fixture> ARGS…`: exit code, stdout, stderr.
fn query_command(args: &[&str]) -> (i32, String, String) {
    let out = labelflow()
        .arg("query")
        .arg("--data")
        .arg(fixture())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn parquet_output_streams_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("reports/review.parquet");
    let (code, _, err) = query_command(&[
        "--name",
        "low_confidence",
        "--param",
        "threshold=0.5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("wrote 7 rows") && err.contains("reports/review.parquet"),
        "{err}"
    );

    let rows: usize = parquet_batches("the written file", std::fs::File::open(&out).unwrap())
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 7);
}

#[test]
fn the_command_prints_results_and_reports_bad_names_and_flags() {
    let (code, stdout, err) = query_command(&[
        "--format",
        "csv",
        "SELECT count(*) AS n FROM latest; SELECT 2 AS two",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stdout, "n\n20\ntwo\n2\n");

    let (code, _, err) = query_command(&["--name", "class_count", "--format", "csv"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("class_count") && err.contains("class_counts"),
        "{err}"
    );

    let (code, _, err) = query_command(&["--name", "class_counts", "--format", "parquet"]);
    assert_eq!(code, 2);
    assert!(err.contains("--out"), "{err}");

    let (code, _, err) = query_command(&["--name", "confusion", "--format", "csv"]);
    assert_eq!(code, 2);
    assert!(err.contains("confusion") && err.contains("truth"), "{err}");
}

#[tokio::test]
async fn named_queries_come_from_a_folder_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("big.sql"),
        "-- big: images larger than a size\n-- param: min_bytes = 0 (int)\n\
         SELECT count(*) AS n FROM latest WHERE size_bytes > $min_bytes;\n",
    )
    .unwrap();
    let q = NamedQuery::find("big", Some(dir.path())).unwrap();
    let ctx = context().await;
    let df = query::named(&ctx, &q, &[("min_bytes".into(), "40000".into())])
        .await
        .unwrap();
    // size_bytes = 20000 + 1337 * i for images i = 0..19: i >= 15 is above 40000.
    assert_eq!(csv(df).await, "n\n5\n");
    assert!(NamedQuery::find("class_counts", Some(dir.path())).is_err());
}

async fn upload_fixture(store: &dyn ObjectStore, prefix: &str) {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&fixture(), &mut files);
    for file in files {
        let rel = file.strip_prefix(fixture()).unwrap().to_str().unwrap();
        let key = object_store::path::Path::from(format!("{prefix}/{rel}"));
        let bytes = std::fs::read(&file).unwrap();
        store.put(&key, bytes.into()).await.unwrap();
    }
}

#[tokio::test]
async fn any_object_store_can_hold_the_dataset() {
    let location = Location::memory();
    upload_fixture(location.store.as_ref(), "preds").await;
    let preds = Location::from_store(location.store.clone(), "memory://", "preds");
    let ctx = query::open_location(&preds).await.unwrap();
    let expected = std::fs::read_to_string(root().join("sql/expected/class_counts.csv")).unwrap();
    assert_eq!(run_named(&ctx, "class_counts", &[]).await, expected);
}

#[tokio::test]
async fn a_dataset_in_an_s3_bucket() {
    let Some(endpoint) = require_s3_endpoint() else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let bucket = format!("labelflow-query-{}-{nanos}", std::process::id());
    create_bucket(&endpoint, &bucket);
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_endpoint(&endpoint)
        .with_bucket_name(&bucket)
        .with_allow_http(true)
        .build()
        .unwrap();
    let s3: Arc<dyn ObjectStore> = Arc::new(s3);
    upload_fixture(s3.as_ref(), "preds").await;

    let preds = Location::from_store(s3, format!("s3://{bucket}"), "preds");
    let ctx = query::open_location(&preds).await.unwrap();
    query::register_table(&ctx, "truth", truth_csv().to_str().unwrap())
        .await
        .unwrap();
    for name in ["class_counts", "confusion", "model_compare"] {
        let expected =
            std::fs::read_to_string(root().join(format!("sql/expected/{name}.csv"))).unwrap();
        assert_eq!(run_named(&ctx, name, &[]).await, expected, "{name}");
    }

    // The same through the URL a user types, when the endpoint is in the environment
    // the way the AWS tools read it.
    let env_endpoint = std::env::var("AWS_ENDPOINT")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .unwrap_or_default();
    if env_endpoint.trim_end_matches('/') == endpoint.trim_end_matches('/') {
        let ctx = query::open(&format!("s3://{bucket}/preds/")).await.unwrap();
        let expected =
            std::fs::read_to_string(root().join("sql/expected/class_counts.csv")).unwrap();
        assert_eq!(run_named(&ctx, "class_counts", &[]).await, expected);
    }
}
