//! Integration tests: one binary, one module per concern.

mod integration {
    pub mod common;
    mod decode;
    mod faults;
    mod golden;
    mod hostile;
    mod interop;
    mod query;
    mod reliability;
    mod run;
    #[cfg(feature = "train")]
    mod train;
}
