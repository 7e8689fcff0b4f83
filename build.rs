//! Two build checks:
//!
//! - **The fast JPEG decoder.** libjpeg-turbo (mozjpeg-sys) gets its SIMD kernels on
//!   x86 only when `nasm` is installed; without it the crate quietly builds the C code,
//!   about 1.4× slower on every JPEG. The build stops here instead and says how to get
//!   nasm, unless `LABELFLOW_JPEG_SIMD=off` asks for the slow decoder on purpose.
//!   `labelflow doctor` prints which one a binary has (`SIMD on` / `SIMD off`).
//! - **Link settings for the optional `train` feature.**
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
    check_nasm();
    link_libtorch();
}

/// Stop the build when libjpeg-turbo would be built without its SIMD kernels.
fn check_nasm() {
    println!("cargo:rerun-if-env-changed=LABELFLOW_JPEG_SIMD");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch != "x86_64" && arch != "x86" {
        return;
    }
    if std::env::var("LABELFLOW_JPEG_SIMD").is_ok_and(|v| v == "off") {
        println!("cargo:warning=LABELFLOW_JPEG_SIMD=off: the JPEG decoder is built without SIMD (about 1.4x slower)");
        return;
    }
    let found = std::process::Command::new("nasm")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!(
            "\nlabelflow: `nasm` is not installed, so the JPEG decoder would be built without \
             its SIMD kernels (about 1.4x slower on every JPEG).\n\
             Install it and build again:   apt-get install nasm   (Fedora: dnf install nasm; macOS: brew install nasm)\n\
             or build the slow decoder on purpose:   LABELFLOW_JPEG_SIMD=off cargo build ...\n"
        );
        std::process::exit(1);
    }
}

/// libtorch's link flags and run path, with the `train` feature.
fn link_libtorch() {
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
