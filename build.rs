//! Link settings for the optional `train` feature.
//!
//! Rust links with `--as-needed`, which drops `libtorch_cuda.so` because no symbol of
//! it is referenced directly; without it libtorch reports no CUDA device. With the
//! `train` feature and `LABELFLOW_TORCH_CUDA=1` it is linked with `--no-as-needed`; the libtorch
//! folder is added to the binary's run path so `labelflow` starts without
//! `LD_LIBRARY_PATH` pointing at libtorch (the CUDA runtime libraries libtorch needs
//! must still be found by the loader on machines without CUDA; see
//! scripts/setup-torch.sh).

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_TRAIN");
    if std::env::var_os("CARGO_FEATURE_TRAIN").is_none() {
        return;
    }
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        // tch's own build script explains what is missing.
        return;
    };
    let lib = Path::new(&libtorch).join("lib");
    // Keeping libtorch_cuda needs the whole CUDA stack (cuBLAS, cuSPARSE, cuDNN…) at
    // run time, so it is asked for explicitly: LABELFLOW_TORCH_CUDA=1 on GPU machines.
    println!("cargo:rerun-if-env-changed=LABELFLOW_TORCH_CUDA");
    let want_cuda = std::env::var("LABELFLOW_TORCH_CUDA").is_ok_and(|v| v == "1");
    if want_cuda && lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // The CUDA runtime wheels installed beside torch (nvidia/cu13/lib), when present.
    if let Some(site) = Path::new(&libtorch).parent() {
        let cuda = site.join("nvidia").join("cu13").join("lib");
        if cuda.join("libcudart.so.13").exists() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", cuda.display());
        }
    }
}
