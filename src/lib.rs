//! labelflow: batch image labelling over object storage.
//!
//! The modules follow the data flow of a run: [`source`] lists and fetches objects,
//! [`decode`] and [`preprocess`] turn bytes into model input, [`infer`] batches them
//! through ONNX Runtime, [`sink`] writes Parquet; [`pipeline`] joins the stages and
//! [`config`] turns pipeline files and flags into a plan. [`query`] answers SQL over
//! what was written; [`onnx`] writes and reads the ONNX models the project makes.

// `clippy::unwrap_used` and `expect_used` are denied for every target in Cargo.toml.

/// `FromStr` (case-insensitive; aliases after `|`) and `Display` (the first name) for
/// a fieldless enum whose values are words on the command line and in pipeline files:
/// one table per enum, so the parser and the printer cannot disagree.
macro_rules! keyword_enum {
    ($t:ty, $what:literal, $($s:literal $(| $alias:literal)* => $v:path),+ $(,)?) => {
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s.to_ascii_lowercase().as_str() {
                    $($s $(| $alias)* => Ok($v),)+
                    other => Err(format!(
                        concat!("unknown ", $what, " {:?}; expected one of: {}"),
                        other,
                        [$($s),+].join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self { $($v => $s,)+ })
            }
        }
    };
}

pub mod batch;
pub mod config;
pub mod cpu_pool;
pub mod dataset;
pub mod decode;
pub mod error;
pub mod hosts;
pub mod infer;
pub mod lease;
pub mod link;
pub mod manifest;
pub mod nvjpeg;
pub mod onnx;
pub mod pipeline;
pub mod preprocess;
pub mod query;
pub mod redact;
pub mod report;
pub mod rerun;
pub mod runs;
pub mod runtime;
pub mod schema;
pub mod sink;
pub mod source;
pub mod stable;
pub mod stages;
pub mod store;
#[cfg(feature = "train")]
pub mod train;

pub use error::{Error, Result};
