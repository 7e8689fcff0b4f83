//! `labelflow report`: flags, and one line on stderr saying what was written. The page
//! itself is made by `labelflow::report`.

use std::path::PathBuf;

use labelflow::report::{self, ReportOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The predictions dataset: a folder or URL (s3://, gs://, az://, http(s)://, file://)
    /// holding `run_id=<RUN>/*.parquet`, as written by `labelflow run`.
    #[arg(long, value_name = "URL")]
    pub data: String,
    /// The output folder of `labelflow train`: adds its loss and accuracy curves
    /// (metrics.parquet) and the basics of its card.json.
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// Where the page goes (one HTML file; it loads nothing from the network).
    #[arg(long, short = 'o', value_name = "FILE", default_value = "report.html")]
    pub out: PathBuf,
    /// Classes drawn in the histogram (the rest are summed in one line).
    #[arg(long, value_name = "N", default_value_t = ReportOptions::new("").limits.classes)]
    pub classes: usize,
    /// Lowest-confidence images shown as thumbnails.
    #[arg(long, value_name = "N", default_value_t = ReportOptions::new("").limits.lowest)]
    pub lowest: usize,
    /// Failed images shown as thumbnails.
    #[arg(long, value_name = "N", default_value_t = ReportOptions::new("").failed_thumbnails)]
    pub failed: usize,
    /// Rows of the error table (the page gives the total).
    #[arg(long, value_name = "N", default_value_t = ReportOptions::new("").limits.errors)]
    pub errors: usize,
    /// Runs side by side (the newest).
    #[arg(long, value_name = "N", default_value_t = ReportOptions::new("").limits.runs)]
    pub runs: usize,
    /// Longest side of a thumbnail, in pixels.
    #[arg(long, value_name = "PIXELS", default_value_t = ReportOptions::new("").thumbnails.size)]
    pub thumbnail_size: u32,
}

/// `labelflow report`: exit code 0, or an error.
pub async fn run(args: ReportArgs) -> anyhow::Result<u8> {
    let mut options = ReportOptions::new(args.data);
    options.model_dir = args.model_dir;
    options.limits.classes = args.classes;
    options.limits.lowest = args.lowest;
    options.limits.errors = args.errors;
    options.limits.runs = args.runs.max(1);
    options.failed_thumbnails = args.failed;
    options.thumbnails.size = args.thumbnail_size.max(16);
    let report = report::write(&options, &args.out).await?;
    let t = &report.stats.totals;
    eprintln!(
        "wrote {}: {} images, {} failed, {} runs{}",
        args.out.display(),
        t.images,
        t.errors,
        report.stats.runs_total,
        if report.training.is_some() {
            ", training curves"
        } else {
            ""
        }
    );
    Ok(0)
}
