//! `labelflow report`: one self-contained HTML page over a predictions dataset (and,
//! optionally, the output folder of a training job).
//!
//! [`gather`] asks the dataset (through [`crate::query`]'s context) for the class
//! histogram, the score distribution, the lowest-confidence and failed images, the
//! error table and each run's figures; fetches thumbnails of the images listed
//! ([`thumbnails`]); reads the training curves ([`training`]). [`html::render`] turns
//! that into the page: charts are inline SVG ([`svg`]), pictures `data:` URIs, and the
//! page loads nothing from anywhere. [`write`] does both and writes the file.

pub mod contents;
pub mod dataset;
pub mod html;
pub mod markup;
pub mod svg;
pub mod thumbnails;
pub mod training;

use std::path::{Path, PathBuf};

pub use contents::Report;
pub use dataset::{DatasetStats, Limits};
pub use html::render;
pub use thumbnails::{Thumbnail, ThumbnailOptions};
pub use training::Training;

use crate::error::{Error, Result};
use crate::query;
use crate::store::{Access, Location, RetryPolicy};

/// What to report on, and how much of it.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The predictions dataset: a folder or URL holding `run_id=<RUN>/*.parquet`.
    pub data: String,
    /// The output folder of `labelflow train` (`metrics.parquet`, `card.json`).
    pub model_dir: Option<PathBuf>,
    /// How many classes, lowest-confidence images, error rows and runs are listed.
    pub limits: Limits,
    /// Failed images shown as thumbnails (the first of the error table).
    pub failed_thumbnails: usize,
    pub thumbnails: ThumbnailOptions,
}

impl ReportOptions {
    /// The defaults for the dataset at `data`: 30 classes, 24 lowest-confidence and 12
    /// failed images, 200 error rows, the 8 newest runs, 128-pixel thumbnails.
    pub fn new(data: impl Into<String>) -> Self {
        Self {
            data: data.into(),
            model_dir: None,
            limits: Limits {
                classes: 30,
                lowest: 24,
                errors: 200,
                runs: 8,
            },
            failed_thumbnails: 12,
            thumbnails: ThumbnailOptions::default(),
        }
    }
}

/// Gather the report's contents for `options`.
pub async fn gather(options: &ReportOptions) -> Result<Report> {
    // The training folder is checked first: a wrong --model-dir fails before the
    // dataset is read.
    let training = options
        .model_dir
        .as_deref()
        .map(training::read)
        .transpose()?;
    let location = Location::parse(&options.data, Access::Read, RetryPolicy::default())?;
    let ctx = query::open_location(&location).await?;
    let stats = dataset::gather(&ctx, options.limits).await?;

    let lowest = stats
        .lowest
        .iter()
        .map(|(uri, label, score)| (uri.clone(), format!("{label} · {score:.3}")))
        .collect();
    let failed = stats
        .errors
        .iter()
        .take(options.failed_thumbnails)
        .map(|(uri, error)| (uri.clone(), error.clone()))
        .collect();
    let lowest = thumbnails::fetch_all(&location, lowest, options.thumbnails).await;
    let failed = thumbnails::fetch_all(&location, failed, options.thumbnails).await;
    Ok(Report {
        source: crate::redact::redact(&options.data).into_owned(),
        generated_at: chrono::Utc::now()
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string(),
        stats,
        lowest,
        failed,
        training,
    })
}

/// Gather the report and write the page to `out` (a local file, replaced atomically).
/// Returns what the page shows.
pub async fn write(options: &ReportOptions, out: &Path) -> Result<Report> {
    let report = gather(options).await?;
    let page = render(&report);
    let output_error = |reason: String| Error::Output {
        location: out.display().to_string(),
        reason,
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| output_error(format!("cannot create its folder: {e}")))?;
    }
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, page).map_err(|e| output_error(e.to_string()))?;
    std::fs::rename(&tmp, out).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        output_error(e.to_string())
    })?;
    Ok(report)
}
