//! SQL over the predictions a run wrote, where they lie (a local folder or a bucket).
//!
//! [`open`] gives a DataFusion [`SessionContext`] with
//!
//! - `predictions`: every committed part file (`<data>/run_id=<RUN>/*.parquet`) with
//!   `run_id` as a column taken from the folder name. Only names ending in `.parquet`
//!   are data, so parts still being written (`*.parquet#1`) and run summaries are never
//!   read;
//! - `latest`: per `uri`, the row from the newest run (run ids sort by time).
//!
//! [`register_table`] adds more tables (Parquet, CSV, JSON lines), e.g. human labels.
//! Every context has the [`vector`] functions `cosine_similarity`, `l2_distance` and
//! `hamming`.
//! The named queries of `sql/` are built into the binary ([`NamedQuery`]); their
//! parameters are bound as typed placeholders. Every result is a stream of record
//! batches ([`sql`], [`named`], [`Statements`]); [`write_text`] and [`write_parquet`]
//! write a stream as it arrives. Nothing here prints or reads a terminal: that is the
//! command line's job.

mod named;
mod parquet_file;
mod text;
pub mod vector;

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{
    CsvReadOptions, DataFrame, JsonReadOptions, ParquetReadOptions, SessionConfig, SessionContext,
};
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::{DFParserBuilder, Statement};
use futures::{StreamExt, TryStreamExt};
use url::Url;

pub use named::{
    bind, declared_params, infer_params, parse_param_arg, NamedQuery, ParamSpec, ParamType,
};
pub use parquet_file::write_parquet;
pub use text::{write_text, TextFormat};

use crate::error::{Error, Result};
use crate::schema;
use crate::store::{Access, Location, RetryPolicy};

/// The table of every prediction row.
pub const PREDICTIONS: &str = "predictions";
/// The view of the newest row per `uri`.
pub const LATEST: &str = "latest";

/// An extra table's name as SQL will see it (lower case), or why it cannot be one:
/// letters, digits and `_`, not starting with a digit, and not a name the predictions
/// dataset takes.
pub fn table_name(name: &str) -> std::result::Result<String, String> {
    let name = name.trim().to_ascii_lowercase();
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "table name {name:?} must be letters, digits and _ (not starting with a digit)"
        ));
    }
    if name == PREDICTIONS || name == LATEST {
        return Err(format!(
            "table name {name:?} is taken by the predictions dataset"
        ));
    }
    Ok(name)
}

fn df_err(e: DataFusionError) -> Error {
    Error::DataFusion(Box::new(e))
}

fn new_context() -> SessionContext {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
    for f in vector::functions() {
        ctx.register_udf(f);
    }
    for f in vector::aggregates() {
        ctx.register_udaf(f);
    }
    ctx
}

/// The URL DataFusion lists for a location, ending in `/` when `dir` is set.
fn location_url(location: &Location, dir: bool) -> Result<Url> {
    // Stores built by hand print their root as `scheme:`; DataFusion needs `scheme://`.
    let root = if location.root.ends_with(':') {
        format!("{}//", location.root)
    } else {
        location.root.clone()
    };
    let mut text = if location.prefix.as_ref().is_empty() {
        format!("{root}/")
    } else {
        format!("{root}/{}", location.prefix)
    };
    if dir && !text.ends_with('/') {
        text.push('/');
    }
    Url::parse(&text).map_err(|e| Error::InvalidLocation {
        location: text.clone(),
        reason: e.to_string(),
    })
}

/// A context over the predictions dataset at `data` (a path or URL), with the tables
/// `predictions` and `latest`.
pub async fn open(data: &str) -> Result<SessionContext> {
    let location = Location::parse(data, Access::Read, RetryPolicy::default())?;
    open_location(&location).await
}

/// [`open`] for a location already parsed (or a store built by hand).
pub async fn open_location(data: &Location) -> Result<SessionContext> {
    let ctx = new_context();
    register_predictions(&ctx, data).await?;
    Ok(ctx)
}

/// Register the dataset at `data` as `predictions` and the view `latest` in `ctx`.
pub async fn register_predictions(ctx: &SessionContext, data: &Location) -> Result<()> {
    let url = location_url(data, true)?;
    ctx.register_object_store(&url, data.store.clone());
    ensure_committed_parts(data, &url).await?;

    let table_url = ListingTableUrl::parse(url.as_str()).map_err(df_err)?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![(schema::RUN_ID.to_string(), DataType::Utf8)]);
    // The columns every part has, and the embedding columns when a run wrote them
    // (rows of runs without them read as NULL there).
    let runs = run_ids(data).await?;
    let table_schema =
        schema::predictions_with(crate::dataset::embedding_columns(data, &runs).await?);
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .with_schema(table_schema.clone());
    let table = ListingTable::try_new(config).map_err(df_err)?;
    ctx.register_table(PREDICTIONS, Arc::new(table))
        .map_err(df_err)?;
    ctx.sql(&latest_view_sql(&table_schema, &runs))
        .await
        .map_err(df_err)?;
    Ok(())
}

/// The `run_id=` folders directly under the dataset (one listing call), newest first.
async fn run_ids(data: &Location) -> Result<Vec<String>> {
    dataset_run_ids(data).await.map_err(|e| {
        Error::Input(format!(
            "cannot list the predictions dataset at {data}: {e}"
        ))
    })
}

/// [`run_ids`] with the store's own error (a rerun reads the same listing).
pub(crate) async fn dataset_run_ids(
    data: &Location,
) -> std::result::Result<Vec<String>, object_store::Error> {
    let prefix = (!data.prefix.as_ref().is_empty()).then_some(&data.prefix);
    let listing = data.store.list_with_delimiter(prefix).await?;
    let mut runs: Vec<String> = listing
        .common_prefixes
        .iter()
        .filter_map(|p| {
            p.filename()?
                .strip_prefix(&format!("{}=", schema::RUN_ID))
                .map(str::to_string)
        })
        .collect();
    runs.sort_unstable_by(|a, b| b.cmp(a));
    Ok(runs)
}

/// Up to this many runs, `latest` is one branch per run (see [`latest_view_sql`]);
/// beyond, each older run would re-read more newer ones than an aggregate costs.
const LATEST_BRANCHES_MAX: usize = 8;

/// `latest`: per uri, the row of the newest run (run ids sort by time). A run writes
/// each uri once (a resumed run skips what it already wrote), so:
/// - with a single run, `latest` is the whole table;
/// - with a few, it is the newest run's rows, then each older run's rows whose uri no
///   newer run has (an anti-join per run, reading only the runs it needs);
/// - with many, each uri's newest run comes from an aggregate over two narrow
///   columns, joined back to the rows.
///
/// None sorts the rows with all their columns the way a `row_number()` window does.
fn latest_view_sql(table: &arrow::datatypes::Schema, runs_newest_first: &[String]) -> String {
    let columns = |alias: &str| -> String {
        let mut names: Vec<String> = table
            .fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        names.push(schema::RUN_ID.to_string());
        names
            .iter()
            .map(|n| format!("{alias}\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (uri, run) = (schema::URI, schema::RUN_ID);
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    match runs_newest_first {
        [] | [_] => format!(
            "CREATE VIEW {LATEST} AS SELECT {} FROM {PREDICTIONS}",
            columns("")
        ),
        runs if runs.len() <= LATEST_BRANCHES_MAX => {
            let cols = columns("p.");
            let branches: Vec<String> = runs
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    let this = format!(
                        "SELECT {cols} FROM {PREDICTIONS} p WHERE p.\"{run}\" = {}",
                        literal(id)
                    );
                    if i == 0 {
                        this
                    } else {
                        format!(
                            "{this} AND NOT EXISTS (SELECT 1 FROM {PREDICTIONS} q \
                               WHERE q.\"{run}\" > {} AND q.\"{uri}\" = p.\"{uri}\")",
                            literal(id)
                        )
                    }
                })
                .collect();
            format!("CREATE VIEW {LATEST} AS {}", branches.join(" UNION ALL "))
        }
        _ => format!(
            "CREATE VIEW {LATEST} AS SELECT {cols} FROM {PREDICTIONS} p \
               JOIN (SELECT \"{uri}\" AS labelflow_uri, max(\"{run}\") AS labelflow_newest \
                     FROM {PREDICTIONS} GROUP BY \"{uri}\") n \
               ON p.\"{uri}\" = n.labelflow_uri AND p.\"{run}\" = n.labelflow_newest",
            cols = columns("p."),
        ),
    }
}

/// Fail with a clear message when the dataset holds no committed part file. Stops at
/// the first one found, so a large dataset costs one listing page.
async fn ensure_committed_parts(data: &Location, url: &Url) -> Result<()> {
    let prefix = data.prefix.clone();
    let mut parts = data
        .store
        .list(Some(&prefix))
        .try_filter(|meta| {
            let rel = data.relative(&meta.location);
            let committed = rel.ends_with(".parquet")
                && rel.split('/').any(|segment| segment.starts_with("run_id="));
            futures::future::ready(committed)
        })
        .boxed();
    match parts.next().await {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(Error::Input(format!(
            "cannot read the predictions dataset at {url}: {e}"
        ))),
        None => Err(Error::Input(format!(
            "the predictions dataset at {url} is empty: no committed part files \
             ({url}run_id=<RUN>/*.parquet); is this the output folder of `labelflow run`?"
        ))),
    }
}

/// Register `url` (a path or URL) as table `name`: a `.parquet`, `.csv`, `.tsv` or
/// `.json`/`.jsonl`/`.ndjson` file, or a folder of `.parquet` files.
pub async fn register_table(ctx: &SessionContext, name: &str, url: &str) -> Result<()> {
    let name = table_name(name).map_err(Error::Config)?;
    let location = Location::parse(url, Access::Read, RetryPolicy::default())?;
    let lower = url.trim_end_matches('/').to_ascii_lowercase();
    let ext = lower
        .rsplit('/')
        .next()
        .and_then(|file| file.rsplit_once('.'))
        .map(|(_, e)| e.to_string())
        .unwrap_or_default();
    let is_file = matches!(
        ext.as_str(),
        "parquet" | "csv" | "tsv" | "json" | "jsonl" | "ndjson"
    );
    register_located(ctx, &name, &location, &ext, !is_file)
        .await
        .map_err(|e| Error::Input(format!("--table {name}={url}: {e}")))
}

async fn register_located(
    ctx: &SessionContext,
    name: &str,
    location: &Location,
    ext: &str,
    folder: bool,
) -> std::result::Result<(), String> {
    let table_url = location_url(location, folder).map_err(|e| e.to_string())?;
    ctx.register_object_store(&table_url, location.store.clone());
    // The file's own extension, in its own case: DataFusion lists a single file by its
    // suffix. (A folder is read as Parquet, which does not use it.)
    let file_ext = location
        .prefix
        .filename()
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, e)| format!(".{e}"))
        .unwrap_or_default();
    let u = table_url.as_str();
    let result = match ext {
        "csv" => {
            ctx.register_csv(name, u, CsvReadOptions::new().file_extension(&file_ext))
                .await
        }
        "tsv" => {
            ctx.register_csv(
                name,
                u,
                CsvReadOptions::new()
                    .delimiter(b'\t')
                    .file_extension(&file_ext),
            )
            .await
        }
        "json" | "jsonl" | "ndjson" => {
            ctx.register_json(
                name,
                u,
                JsonReadOptions::default().file_extension(&file_ext),
            )
            .await
        }
        _ => {
            // A .parquet file, or a folder of them.
            ctx.register_parquet(name, u, ParquetReadOptions::default())
                .await
        }
    };
    result.map_err(|e| e.strip_backtrace())
}

/// Parse `sql` into statements.
fn statements(sql: &str) -> Result<Vec<Statement>> {
    let mut parser = DFParserBuilder::new(sql).build().map_err(df_err)?;
    Ok(parser
        .parse_statements()
        .map_err(df_err)?
        .into_iter()
        .collect())
}

/// Plan one statement and bind the parameters. DDL (e.g. `CREATE VIEW`) takes effect
/// here.
async fn plan(
    ctx: &SessionContext,
    statement: Statement,
    params: &[(String, ScalarValue)],
) -> Result<DataFrame> {
    let state = ctx.state();
    let logical = state.statement_to_plan(statement).await.map_err(df_err)?;
    let df = ctx.execute_logical_plan(logical).await.map_err(df_err)?;
    if params.is_empty() {
        Ok(df)
    } else {
        df.with_param_values(params.to_vec()).map_err(df_err)
    }
}

/// One SQL statement as a lazy [`DataFrame`], with `params` bound to its `$name`
/// placeholders.
pub async fn sql(
    ctx: &SessionContext,
    sql: &str,
    params: &[(String, ScalarValue)],
) -> Result<DataFrame> {
    let mut all = statements(sql)?;
    if all.len() != 1 {
        return Err(Error::Query(format!(
            "expected one SQL statement, found {}",
            all.len()
        )));
    }
    let statement = all.remove(0);
    plan(ctx, statement, params).await
}

/// A named query as a lazy [`DataFrame`], its parameters from `given` (`NAME=VALUE`
/// text, parsed into the declared types) or their defaults.
pub async fn named(
    ctx: &SessionContext,
    query: &NamedQuery,
    given: &[(String, String)],
) -> Result<DataFrame> {
    let params = named_params(ctx, query, given).await?;
    sql(ctx, &query.sql, &params)
        .await
        .map_err(|e| Error::Query(format!("named query {}: {e}", query.name)))
}

/// The values a named query runs with on `ctx`: `given` bound to the declared types,
/// the defaults, and the computed parameters evaluated; first checks the dataset has
/// what the query reads ([`check_named`]).
pub async fn named_params(
    ctx: &SessionContext,
    query: &NamedQuery,
    given: &[(String, String)],
) -> Result<Vec<(String, ScalarValue)>> {
    let mut params = query.bind(given)?;
    check_named(ctx, query).await?;
    let what = format!("named query {}", query.name);
    compute_params(ctx, &what, &query.params, &mut params).await?;
    Ok(params)
}

/// Evaluates the `computed` parameters of `specs` (each a scalar SQL expression, which
/// may use the parameters bound so far) and adds their values to `params`.
async fn compute_params(
    ctx: &SessionContext,
    what: &str,
    specs: &[ParamSpec],
    params: &mut Vec<(String, ScalarValue)>,
) -> Result<()> {
    for spec in specs.iter().filter(|p| p.kind == ParamType::Computed) {
        let fail = |reason: String| {
            Error::Query(format!(
                "{what}: computing parameter {} ({}): {reason}",
                spec.name, spec.default
            ))
        };
        let batches = sql(ctx, &format!("SELECT {} AS value", spec.default), params)
            .await
            .map_err(|e| fail(e.to_string()))?
            .collect()
            .await
            .map_err(|e| fail(e.strip_backtrace()))?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let Some(batch) = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .filter(|_| rows == 1)
        else {
            return Err(fail(format!("expected one value, got {rows} rows")));
        };
        let value = ScalarValue::try_from_array(batch.column(0), 0)
            .map_err(|e| fail(e.strip_backtrace()))?;
        params.push((spec.name.clone(), value));
    }
    Ok(())
}

/// Checks a named query can run on `ctx`: one that reads embeddings needs a dataset
/// that has them, and the error says how to get them.
async fn check_named(ctx: &SessionContext, query: &NamedQuery) -> Result<()> {
    if query.needs_embeddings() && !has_embeddings(ctx).await {
        return Err(Error::Query(format!(
            "named query {} needs the {} column, which this dataset has not got: label the images with `labelflow run --embeddings` (a rerun with the flag starts a new run beside the old one)",
            query.name,
            schema::EMBEDDING
        )));
    }
    Ok(())
}

/// Whether the `predictions` table has the embedding columns.
async fn has_embeddings(ctx: &SessionContext) -> bool {
    match ctx.table_provider(PREDICTIONS).await {
        Ok(table) => schema::EmbeddingColumns::of(&table.schema()).is_some(),
        Err(_) => false,
    }
}

/// The statements of a SQL text, run one after another: each [`Statements::next`]
/// plans the next statement (so a `CREATE VIEW` takes effect before the statements
/// after it are planned) and returns its result as a stream. Read each stream before
/// asking for the next.
pub struct Statements {
    ctx: SessionContext,
    pending: VecDeque<Statement>,
    params: Vec<(String, ScalarValue)>,
}

impl Statements {
    /// Parses `sql` (one or more statements separated by `;`), `params` bound to the
    /// `$name` placeholders of each.
    pub fn new(ctx: &SessionContext, sql: &str, params: &[(String, ScalarValue)]) -> Result<Self> {
        Ok(Statements {
            ctx: ctx.clone(),
            pending: statements(sql)?.into(),
            params: params.to_vec(),
        })
    }

    /// Statements not yet run.
    pub fn remaining(&self) -> usize {
        self.pending.len()
    }

    /// The next statement's result, or `None` after the last.
    pub async fn next(&mut self) -> Option<Result<SendableRecordBatchStream>> {
        let statement = self.pending.pop_front()?;
        Some(self.stream(statement).await)
    }

    async fn stream(&self, statement: Statement) -> Result<SendableRecordBatchStream> {
        let df = plan(&self.ctx, statement, &self.params).await?;
        df.execute_stream().await.map_err(df_err)
    }
}

/// Run every statement of `sql`; the result of the last one goes to a Parquet file at
/// `out` (a path or bucket URL). Returns the rows written and the file's URL.
pub async fn to_parquet(
    ctx: &SessionContext,
    sql: &str,
    params: &[(String, ScalarValue)],
    out: &str,
) -> Result<(u64, String)> {
    let mut all = Statements::new(ctx, sql, params)?;
    if all.remaining() == 0 {
        return Err(Error::Query("no SQL statement to run".into()));
    }
    while let Some(stream) = all.next().await {
        let stream = stream?;
        if all.remaining() == 0 {
            return write_parquet(stream, out).await;
        }
        // Earlier statements run for their effect (e.g. a view); their rows are dropped.
        stream
            .try_for_each(|_| futures::future::ready(Ok(())))
            .await
            .map_err(df_err)?;
    }
    Err(Error::Query("no SQL statement to run".into()))
}

/// Parameters for SQL that may declare them in its header (`-- param: ...`): typed when
/// declared, inferred from the text otherwise.
pub async fn params_for(
    ctx: &SessionContext,
    what: &str,
    sql: &str,
    given: &[(String, String)],
) -> Result<Vec<(String, ScalarValue)>> {
    let declared = declared_params(sql).map_err(|r| Error::Query(format!("{what}: {r}")))?;
    if declared.is_empty() {
        Ok(infer_params(given))
    } else {
        let mut params = bind(what, &declared, given)?;
        compute_params(ctx, what, &declared, &mut params).await?;
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_identifiers_and_not_reserved() {
        assert_eq!(table_name("Truth").unwrap(), "truth");
        assert_eq!(table_name("_x1").unwrap(), "_x1");
        for bad in ["predictions", "latest", "1x", "a-b", ""] {
            assert!(table_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hand_built_stores_get_a_listable_url() {
        let loc = Location::memory();
        assert_eq!(location_url(&loc, true).unwrap().as_str(), "memory:///");
        let loc = Location::from_store(loc.store, "s3://bucket", "preds");
        assert_eq!(
            location_url(&loc, true).unwrap().as_str(),
            "s3://bucket/preds/"
        );
        assert_eq!(
            location_url(&loc, false).unwrap().as_str(),
            "s3://bucket/preds"
        );
    }

    #[test]
    fn several_statements_are_split() {
        assert_eq!(statements("SELECT 1; SELECT 2;").unwrap().len(), 2);
        let err = statements("SELEC 1").unwrap_err().report();
        assert!(err.contains("SELEC"), "{err}");
    }
}
