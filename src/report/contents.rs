//! What the page shows, gathered once and rendered by `html`.

use super::dataset::DatasetStats;
use super::thumbnails::Thumbnail;
use super::training::Training;

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The dataset's location as given (secrets masked).
    pub source: String,
    /// When the report was made (UTC), as text.
    pub generated_at: String,
    pub stats: DatasetStats,
    pub lowest: Vec<Thumbnail>,
    pub failed: Vec<Thumbnail>,
    pub training: Option<Training>,
}
