//! Integration tests: one binary, one module per concern.

mod integration {
    pub mod common;
    mod decode;
    mod golden;
    mod interop;
    mod query;
    mod run;
    #[cfg(feature = "train")]
    mod train;
}
