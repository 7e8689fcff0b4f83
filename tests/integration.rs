//! Integration tests: one binary, one module per concern.

// A failed step in a test is a failed test: helpers as well as `#[test]` functions may
// unwrap (clippy.toml allows it only inside the tests themselves).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod integration {
    pub mod common;
    mod decode;
    mod docker;
    mod embeddings;
    mod engines;
    mod faults;
    mod feed;
    mod golden;
    mod hostile;
    mod import;
    mod interop;
    mod operate;
    mod query;
    mod reliability;
    mod report;
    mod run;
    mod stores;
    mod torchvision;
    #[cfg(feature = "train")]
    mod train;
}
