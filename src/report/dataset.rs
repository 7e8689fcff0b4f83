//! What the page says about a predictions dataset, asked of DataFusion: the context of
//! [`crate::query`] (tables `predictions`, every run's rows, and `latest`, the newest
//! row per image). Everything is aggregated by the engine; only counts, the rows shown
//! and the error table come back.

use std::collections::BTreeMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::query::{self, LATEST, PREDICTIONS};
use crate::schema::{ERROR, LABEL, LABELLED_AT, RUN_ID, SCORE, URI};

/// Bins of the score histogram over 0..=1 (a score of exactly 1 is in the last).
pub const SCORE_BINS: usize = 20;

/// How much of the dataset the page lists.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Classes drawn in the histogram (the rest are summed in one line).
    pub classes: usize,
    /// Lowest-confidence images listed.
    pub lowest: usize,
    /// Rows of the error table.
    pub errors: usize,
    /// Runs side by side (the newest ones).
    pub runs: usize,
}

/// Totals over `latest` (one row per image, from its newest run).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub images: u64,
    pub errors: u64,
    pub mean_score: Option<f64>,
    pub classes: u64,
}

/// One run's figures, from `predictions`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunStats {
    pub run_id: String,
    pub rows: u64,
    pub errors: u64,
    pub mean_score: Option<f64>,
    pub first_labelled: Option<String>,
    pub last_labelled: Option<String>,
    /// Rows per label in this run.
    pub labels: BTreeMap<String, u64>,
}

/// Everything the page shows about the predictions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetStats {
    pub totals: Totals,
    /// The most frequent classes, most rows first.
    pub classes: Vec<(String, u64)>,
    /// Score histogram over 0..=1, [`SCORE_BINS`] bins.
    pub score_bins: Vec<u64>,
    /// `(uri, label, score)` of the lowest-confidence images, lowest first.
    pub lowest: Vec<(String, String, f64)>,
    /// `(uri, error)` of failed images, by uri; at most [`Limits::errors`].
    pub errors: Vec<(String, String)>,
    /// Runs, oldest first (run ids sort by time); at most [`Limits::runs`], the newest.
    pub runs: Vec<RunStats>,
    /// Runs in the dataset, shown or not.
    pub runs_total: u64,
}

/// A column cast to `ty` (DataFusion may hand strings back as views, counts as any
/// integer type).
fn column(batch: &RecordBatch, i: usize, ty: &DataType) -> Result<ArrayRef> {
    let col = batch.columns().get(i).ok_or_else(|| {
        Error::Query(format!(
            "report query returned {} columns, expected more",
            batch.num_columns()
        ))
    })?;
    Ok(arrow::compute::cast(col, ty)?)
}

fn strings(batches: &[RecordBatch], i: usize) -> Result<Vec<Option<String>>> {
    let mut out = Vec::new();
    for b in batches {
        let col = column(b, i, &DataType::Utf8)?;
        let a = col.as_string::<i32>();
        out.extend((0..a.len()).map(|r| (!a.is_null(r)).then(|| a.value(r).to_string())));
    }
    Ok(out)
}

fn ints(batches: &[RecordBatch], i: usize) -> Result<Vec<Option<i64>>> {
    let mut out = Vec::new();
    for b in batches {
        let col = column(b, i, &DataType::Int64)?;
        let a = col.as_primitive::<Int64Type>();
        out.extend((0..a.len()).map(|r| (!a.is_null(r)).then(|| a.value(r))));
    }
    Ok(out)
}

fn floats(batches: &[RecordBatch], i: usize) -> Result<Vec<Option<f64>>> {
    let mut out = Vec::new();
    for b in batches {
        let col = column(b, i, &DataType::Float64)?;
        let a = col.as_primitive::<Float64Type>();
        out.extend((0..a.len()).map(|r| (!a.is_null(r)).then(|| a.value(r))));
    }
    Ok(out)
}

fn count(v: Option<i64>) -> u64 {
    v.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

/// An RFC 3339 time to the second: `2024-05-01T10:00:00.123456Z` → `2024-05-01 10:00:00Z`.
fn to_seconds(time: String) -> String {
    let (date_time, zone) = match time.find(['Z', '+']) {
        Some(i) if i > 10 => time.split_at(i),
        _ => (time.as_str(), ""),
    };
    let whole = date_time.split('.').next().unwrap_or(date_time);
    format!("{}{zone}", whole.replacen('T', " ", 1))
}

async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let df = query::sql(ctx, sql, &[]).await?;
    df.collect()
        .await
        .map_err(|e| Error::Query(format!("report query failed: {}", e.strip_backtrace())))
}

/// The SQL of the score histogram: the bin of each score, clamped into the range.
fn score_bins_sql() -> String {
    let last = SCORE_BINS - 1;
    format!(
        "SELECT CASE WHEN \"{SCORE}\" >= 1 THEN {last} WHEN \"{SCORE}\" <= 0 THEN 0 \
                ELSE CAST(floor(\"{SCORE}\" * {SCORE_BINS}) AS BIGINT) END AS bin, count(*) \
         FROM {LATEST} WHERE \"{SCORE}\" IS NOT NULL AND NOT isnan(\"{SCORE}\") GROUP BY bin"
    )
}

/// Ask `ctx` (with `predictions` and `latest`) everything the page shows.
pub async fn gather(ctx: &SessionContext, limits: Limits) -> Result<DatasetStats> {
    let mut stats = DatasetStats::default();

    let t = rows(
        ctx,
        &format!(
            "SELECT count(*), count(\"{ERROR}\"), avg(\"{SCORE}\"), count(DISTINCT \"{LABEL}\") \
             FROM {LATEST}"
        ),
    )
    .await?;
    stats.totals = Totals {
        images: count(ints(&t, 0)?.first().copied().flatten()),
        errors: count(ints(&t, 1)?.first().copied().flatten()),
        mean_score: floats(&t, 2)?.first().copied().flatten(),
        classes: count(ints(&t, 3)?.first().copied().flatten()),
    };

    let c = rows(
        ctx,
        &format!(
            "SELECT \"{LABEL}\", count(*) AS n FROM {LATEST} \
             WHERE \"{ERROR}\" IS NULL AND \"{LABEL}\" IS NOT NULL \
             GROUP BY \"{LABEL}\" ORDER BY n DESC, \"{LABEL}\" LIMIT {}",
            limits.classes
        ),
    )
    .await?;
    stats.classes = strings(&c, 0)?
        .into_iter()
        .zip(ints(&c, 1)?)
        .map(|(l, n)| (l.unwrap_or_default(), count(n)))
        .collect();

    let b = rows(ctx, &score_bins_sql()).await?;
    stats.score_bins = vec![0; SCORE_BINS];
    for (bin, n) in ints(&b, 0)?.into_iter().zip(ints(&b, 1)?) {
        let bin = bin
            .and_then(|b| usize::try_from(b).ok())
            .unwrap_or(0)
            .min(SCORE_BINS - 1);
        stats.score_bins[bin] += count(n);
    }

    let l = rows(
        ctx,
        &format!(
            "SELECT \"{URI}\", \"{LABEL}\", \"{SCORE}\" FROM {LATEST} \
             WHERE \"{ERROR}\" IS NULL AND \"{SCORE}\" IS NOT NULL \
             ORDER BY \"{SCORE}\" ASC, \"{URI}\" LIMIT {}",
            limits.lowest
        ),
    )
    .await?;
    stats.lowest = strings(&l, 0)?
        .into_iter()
        .zip(strings(&l, 1)?)
        .zip(floats(&l, 2)?)
        .map(|((u, lab), s)| {
            (
                u.unwrap_or_default(),
                lab.unwrap_or_default(),
                s.unwrap_or(f64::NAN),
            )
        })
        .collect();

    let e = rows(
        ctx,
        &format!(
            "SELECT \"{URI}\", \"{ERROR}\" FROM {LATEST} WHERE \"{ERROR}\" IS NOT NULL \
             ORDER BY \"{URI}\" LIMIT {}",
            limits.errors
        ),
    )
    .await?;
    stats.errors = strings(&e, 0)?
        .into_iter()
        .zip(strings(&e, 1)?)
        .map(|(u, err)| (u.unwrap_or_default(), err.unwrap_or_default()))
        .collect();

    let r = rows(
        ctx,
        &format!(
            "SELECT \"{RUN_ID}\", count(*), count(\"{ERROR}\"), avg(\"{SCORE}\"), \
                    min(\"{LABELLED_AT}\"), max(\"{LABELLED_AT}\") \
             FROM {PREDICTIONS} GROUP BY \"{RUN_ID}\" ORDER BY \"{RUN_ID}\""
        ),
    )
    .await?;
    let ids = strings(&r, 0)?;
    let (n, errs, mean) = (ints(&r, 1)?, ints(&r, 2)?, floats(&r, 3)?);
    let seconds = |times: Vec<Option<String>>| -> Vec<Option<String>> {
        times.into_iter().map(|t| t.map(to_seconds)).collect()
    };
    let (first, last) = (seconds(strings(&r, 4)?), seconds(strings(&r, 5)?));
    stats.runs_total = ids.len() as u64;
    let skip = ids.len().saturating_sub(limits.runs);
    for (i, id) in ids.into_iter().enumerate().skip(skip) {
        stats.runs.push(RunStats {
            run_id: id.unwrap_or_default(),
            rows: count(n.get(i).copied().flatten()),
            errors: count(errs.get(i).copied().flatten()),
            mean_score: mean.get(i).copied().flatten(),
            first_labelled: first.get(i).cloned().flatten(),
            last_labelled: last.get(i).cloned().flatten(),
            labels: BTreeMap::new(),
        });
    }
    if !stats.runs.is_empty() {
        let shown: Vec<String> = stats
            .runs
            .iter()
            .map(|r| format!("'{}'", r.run_id.replace('\'', "''")))
            .collect();
        let pl = rows(
            ctx,
            &format!(
                "SELECT \"{RUN_ID}\", \"{LABEL}\", count(*) FROM {PREDICTIONS} \
                 WHERE \"{LABEL}\" IS NOT NULL AND \"{ERROR}\" IS NULL \
                   AND \"{RUN_ID}\" IN ({}) \
                 GROUP BY \"{RUN_ID}\", \"{LABEL}\"",
                shown.join(", ")
            ),
        )
        .await?;
        for ((run, label), n) in strings(&pl, 0)?
            .into_iter()
            .zip(strings(&pl, 1)?)
            .zip(ints(&pl, 2)?)
        {
            let (Some(run), Some(label)) = (run, label) else {
                continue;
            };
            if let Some(r) = stats.runs.iter_mut().find(|r| r.run_id == run) {
                *r.labels.entry(label).or_default() += count(n);
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float32Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::datasource::MemTable;

    use super::*;

    /// `(run, uri, label, score, error)`.
    type Row<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<f32>,
        Option<&'a str>,
    );

    /// A context whose `predictions` and `latest` are the given rows.
    fn context(rows: &[Row]) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new(RUN_ID, DataType::Utf8, false),
            Field::new(URI, DataType::Utf8, false),
            Field::new(LABEL, DataType::Utf8, true),
            Field::new(SCORE, DataType::Float32, true),
            Field::new(ERROR, DataType::Utf8, true),
            Field::new(
                LABELLED_AT,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.2))),
                Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.3))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.4))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        (0..rows.len() as i64).map(|i| 1_700_000_000_000_000 + i),
                    )
                    .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();
        let ctx = SessionContext::new();
        for name in [PREDICTIONS, LATEST] {
            let table = MemTable::try_new(schema.clone(), vec![vec![batch.clone()]]).unwrap();
            ctx.register_table(name, Arc::new(table)).unwrap();
        }
        ctx
    }

    const LIMITS: Limits = Limits {
        classes: 2,
        lowest: 2,
        errors: 1,
        runs: 8,
    };

    #[tokio::test]
    async fn counts_bins_lowest_errors_and_runs() {
        let ctx = context(&[
            ("r1", "s3://b/a.jpg", Some("cat"), Some(0.0), None),
            ("r1", "s3://b/b.jpg", Some("cat"), Some(1.0), None),
            ("r1", "s3://b/c.jpg", Some("dog"), Some(0.5), None),
            ("r1", "s3://b/d.jpg", None, None, Some("truncated")),
            ("r2", "s3://b/e.jpg", Some("owl"), Some(0.049), None),
            ("r2", "s3://b/f.jpg", None, None, Some("empty object")),
        ]);
        let s = gather(&ctx, LIMITS).await.unwrap();
        assert_eq!(
            s.totals,
            Totals {
                images: 6,
                errors: 2,
                mean_score: Some((0.0 + 1.0 + 0.5 + 0.049f32 as f64) / 4.0),
                classes: 3,
            }
        );
        assert_eq!(
            s.classes,
            vec![("cat".to_string(), 2), ("dog".to_string(), 1)]
        );
        // 0 and 0.049 in the first bin, 0.5 in the eleventh, 1.0 in the last.
        let mut bins = vec![0; SCORE_BINS];
        bins[0] = 2;
        bins[10] = 1;
        bins[SCORE_BINS - 1] = 1;
        assert_eq!(s.score_bins, bins);
        assert_eq!(s.lowest.len(), 2);
        assert_eq!(s.lowest[0].0, "s3://b/a.jpg");
        assert_eq!(s.lowest[1].1, "owl");
        assert_eq!(
            s.errors,
            vec![("s3://b/d.jpg".to_string(), "truncated".to_string())]
        );
        assert_eq!(s.runs_total, 2);
        let ids: Vec<&str> = s.runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["r1", "r2"]);
        assert_eq!((s.runs[0].rows, s.runs[0].errors), (4, 1));
        assert_eq!(s.runs[0].labels.get("cat"), Some(&2));
        assert_eq!(s.runs[1].labels.len(), 1);
        assert!(s.runs[0]
            .first_labelled
            .as_deref()
            .is_some_and(|t| t.starts_with("2023-11-14 22:13:20")));
    }

    #[test]
    fn times_are_shown_to_the_second() {
        assert_eq!(
            to_seconds("2024-05-01T10:00:00.123456Z".into()),
            "2024-05-01 10:00:00Z"
        );
        assert_eq!(
            to_seconds("2024-05-01T10:00:00+00:00".into()),
            "2024-05-01 10:00:00+00:00"
        );
        assert_eq!(to_seconds("2024-05-01".into()), "2024-05-01");
    }

    #[tokio::test]
    async fn an_empty_table_gives_zeros_not_errors() {
        let ctx = context(&[]);
        let s = gather(&ctx, LIMITS).await.unwrap();
        assert_eq!(s.totals.images, 0);
        assert_eq!(s.totals.mean_score, None);
        assert!(s.classes.is_empty() && s.lowest.is_empty() && s.runs.is_empty());
        assert_eq!(s.score_bins, vec![0; SCORE_BINS]);
    }

    #[tokio::test]
    async fn only_the_newest_runs_are_kept() {
        let ctx = context(&[
            ("r1", "a", Some("x"), Some(0.5), None),
            ("r2", "a", Some("x"), Some(0.5), None),
            ("r3", "a", Some("y"), Some(0.5), None),
        ]);
        let s = gather(&ctx, Limits { runs: 2, ..LIMITS }).await.unwrap();
        let ids: Vec<&str> = s.runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["r2", "r3"]);
        assert_eq!(s.runs_total, 3);
    }
}
