//! `labelflow query`: flags, choosing where results go (a terminal table, CSV or JSON
//! on stdout, or a Parquet file), SQL from an argument, a file, stdin or the
//! interactive prompt. The SQL itself runs in `labelflow::query`.

mod prompt;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::Context;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use labelflow::query::{self, NamedQuery, Statements, TextFormat};
use labelflow::Error;

#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// The predictions dataset: a folder or URL (s3://, gs://, az://, http(s)://, file://)
    /// holding `run_id=<RUN>/*.parquet`, as written by `labelflow run`.
    #[arg(long, value_name = "URL")]
    pub data: String,

    /// The SQL to run. Without it, --name or --file: an interactive prompt on a
    /// terminal, else SQL read from stdin.
    #[arg(value_name = "SQL", conflicts_with_all = ["name", "file"])]
    pub sql: Option<String>,

    /// Run a named query (see --list), e.g. class_counts, low_confidence, confusion.
    #[arg(long, value_name = "NAME", conflicts_with = "file")]
    pub name: Option<String>,

    /// Run the SQL in a file.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// A query parameter, NAME=VALUE, bound to the placeholder $NAME (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = query::parse_param_arg)]
    pub params: Vec<(String, String)>,

    /// An extra table, NAME=URL (repeatable): a .parquet, .csv, .tsv or .json/.jsonl
    /// file, or a folder of .parquet files.
    #[arg(long = "table", value_name = "NAME=URL", value_parser = parse_table_arg)]
    pub tables: Vec<(String, String)>,

    /// Output format [default: table on a terminal, else csv; parquet with --out].
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,

    /// Where Parquet output goes: a file path or URL such as s3://bucket/reports/x.parquet.
    #[arg(long, value_name = "URL")]
    pub out: Option<String>,

    /// Take named queries from this folder of .sql files instead of the built-in ones.
    #[arg(long, value_name = "DIR")]
    pub sql_dir: Option<PathBuf>,

    /// List the named queries and their parameters, then exit.
    #[arg(long, conflicts_with_all = ["sql", "name", "file"])]
    pub list: bool,
}

/// How results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// An aligned table for people (the default on a terminal).
    Table,
    /// CSV with a header row (the default when stdout is not a terminal).
    Csv,
    /// One JSON object per line.
    Json,
    /// A Parquet file written to `--out`.
    Parquet,
}

/// Split a `--table NAME=URL` argument.
fn parse_table_arg(s: &str) -> Result<(String, String), String> {
    let (name, url) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=URL, got {s:?}"))?;
    let name = query::table_name(name)?;
    if url.trim().is_empty() {
        return Err(format!("expected NAME=URL, got {s:?}"));
    }
    Ok((name, url.trim().to_string()))
}

/// Where results go once the flags are read.
enum Sink {
    Text(TextFormat),
    Parquet(String),
}

fn sink(args: &QueryArgs) -> anyhow::Result<Sink> {
    Ok(match (args.format, &args.out) {
        (Some(OutputFormat::Parquet), None) => anyhow::bail!(Error::Config(
            "--format parquet writes a file: pass --out PATH or URL (e.g. s3://bucket/reports/x.parquet)"
                .into(),
        )),
        (Some(f), Some(_)) if f != OutputFormat::Parquet => anyhow::bail!(Error::Config(
            "--out is for Parquet output; for CSV or JSON redirect stdout".into(),
        )),
        (_, Some(out)) => Sink::Parquet(out.clone()),
        (Some(OutputFormat::Table), None) => Sink::Text(TextFormat::Table),
        (Some(OutputFormat::Csv), None) => Sink::Text(TextFormat::Csv),
        (Some(OutputFormat::Json), None) => Sink::Text(TextFormat::Json),
        (None, None) if std::io::stdout().is_terminal() => Sink::Text(TextFormat::Table),
        (None, None) => Sink::Text(TextFormat::Csv),
    })
}

/// `labelflow query`: exit code 0, or an error.
pub async fn run(args: QueryArgs) -> anyhow::Result<u8> {
    if args.list {
        let all = match &args.sql_dir {
            Some(dir) => NamedQuery::from_dir(dir)?,
            None => NamedQuery::builtins()?,
        };
        for q in all {
            print!("{}", q.usage());
        }
        return Ok(0);
    }
    let sink = sink(&args)?;

    let ctx = query::open(&args.data).await?;
    for (name, url) in &args.tables {
        query::register_table(&ctx, name, url).await?;
    }

    let (text, params) = if let Some(name) = &args.name {
        let query = NamedQuery::find(name, args.sql_dir.as_deref())?;
        let params = query::named_params(&ctx, &query, &args.params).await?;
        (query.sql, params)
    } else if let Some(path) = &args.file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read SQL file {}", path.display()))?;
        let params =
            query::params_for(&ctx, &path.display().to_string(), &text, &args.params).await?;
        (text, params)
    } else if let Some(text) = &args.sql {
        (text.clone(), query::infer_params(&args.params))
    } else if std::io::stdin().is_terminal() {
        let Sink::Text(format) = sink else {
            anyhow::bail!(Error::Config(
                "the interactive prompt prints results; give SQL, --name or --file with --out"
                    .into(),
            ));
        };
        prompt::run(&ctx, format).await?;
        return Ok(0);
    } else {
        let text = read_stdin().await?;
        let params = query::params_for(&ctx, "SQL from stdin", &text, &args.params).await?;
        (text, params)
    };

    let outcome = match &sink {
        Sink::Parquet(out) => query::to_parquet(&ctx, &text, &params, out)
            .await
            .map(|(rows, url)| eprintln!("wrote {rows} rows to {url}")),
        Sink::Text(format) => print_statements(&ctx, &text, &params, *format)
            .await
            .map(|_| ()),
    };
    outcome.map_err(|e| match (&args.name, e) {
        (Some(name), e @ (Error::Query(_) | Error::DataFusion(_))) => {
            Error::Query(format!("named query {name}: {}", e.report()))
        }
        (_, e) => e,
    })?;
    Ok(0)
}

/// Run every statement of `sql` in turn, printing each result on stdout; returns the
/// rows printed.
async fn print_statements(
    ctx: &SessionContext,
    sql: &str,
    params: &[(String, ScalarValue)],
    format: TextFormat,
) -> labelflow::Result<u64> {
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut rows = 0;
    let mut all = Statements::new(ctx, sql, params)?;
    while let Some(stream) = all.next().await {
        rows += query::write_text(stream?, format, &mut out).await?;
    }
    Ok(rows)
}

async fn read_stdin() -> anyhow::Result<String> {
    let text = tokio::task::spawn_blocking(|| {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map(|_| text)
    })
    .await?
    .context("reading SQL from stdin")?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_args_are_name_equals_url() {
        assert_eq!(
            parse_table_arg("Truth=./t.csv").unwrap(),
            ("truth".into(), "./t.csv".into())
        );
        assert!(parse_table_arg("predictions=x.csv").is_err());
        assert!(parse_table_arg("1x=x.csv").is_err());
        assert!(parse_table_arg("truth").is_err());
        assert!(parse_table_arg("truth= ").is_err());
    }
}
