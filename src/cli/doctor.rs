//! `labelflow doctor`: which ONNX Runtime is found, its providers, and the GPUs seen.

pub fn run(ort_lib: Option<&std::path::Path>) -> anyhow::Result<u8> {
    use labelflow::runtime;
    println!("labelflow {}", env!("CARGO_PKG_VERSION"));
    if labelflow::decode::jpeg_simd() {
        println!("JPEG decoder:   libjpeg-turbo, SIMD on");
    } else {
        println!("JPEG decoder:   libjpeg-turbo, SIMD off (about 1.4x slower; rebuild with nasm installed: apt-get install nasm)");
    }
    let gpus = runtime::gpus_seen();
    if gpus.is_empty() {
        println!("GPUs:           none seen (no NVIDIA driver)");
    } else {
        println!("GPUs:           {}", gpus.join("; "));
    }
    match runtime::init(ort_lib) {
        Ok(rt) => {
            println!(
                "ONNX Runtime:   {} (found via {})",
                rt.library.path.display(),
                rt.library.source
            );
            println!(
                "version:        {}",
                runtime::version_of(rt).unwrap_or_else(|| "unknown".into())
            );
            println!("providers:      {}", rt.providers.join(", "));
            println!("build:          {}", rt.build_info);
            if !rt.providers.iter().any(|p| p == "CUDAExecutionProvider") {
                println!("CUDA:           not in this library; for GPUs run `scripts/setup-ort.sh --gpu` (onnxruntime-gpu 1.31.1, CUDA 13, cuDNN 9)");
            }
            Ok(0)
        }
        Err(e) => {
            println!("ONNX Runtime:   NOT FOUND");
            println!("{e}");
            Ok(2)
        }
    }
}
