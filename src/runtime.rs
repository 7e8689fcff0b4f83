//! Finding and loading ONNX Runtime, and choosing execution providers.
//!
//! The ONNX Runtime library is loaded at start-up (never downloaded by the build). It
//! is looked for, in order, at:
//! 1. `--ort-lib PATH` or the `ORT_DYLIB_PATH` environment variable;
//! 2. the project-local folder `third_party/onnxruntime/lib/` (filled by
//!    `scripts/setup-ort.sh`), searched upward from the working directory and from the
//!    executable's folder;
//! 3. an installed Python `onnxruntime` or `onnxruntime-gpu` package
//!    (`onnxruntime/capi/libonnxruntime.so.*`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The environment variable read for an explicit library path.
pub const ORT_ENV: &str = "ORT_DYLIB_PATH";
/// The project-local folder holding the library (CPU build).
pub const LOCAL_DIR: &str = "third_party/onnxruntime/lib";
/// The project-local folder of the CUDA build (`scripts/setup-ort.sh --gpu`); preferred
/// when present, as it runs on CPU too.
pub const LOCAL_GPU_DIR: &str = "third_party/onnxruntime-gpu/lib";
/// The command that fills [`LOCAL_DIR`].
pub const SETUP_COMMAND: &str = "scripts/setup-ort.sh";

/// Where the library was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibrarySource {
    Flag,
    Environment,
    ProjectLocal,
    PythonPackage,
}

impl std::fmt::Display for LibrarySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LibrarySource::Flag => "--ort-lib",
            LibrarySource::Environment => ORT_ENV,
            LibrarySource::ProjectLocal => "project-local folder",
            LibrarySource::PythonPackage => "Python onnxruntime package",
        })
    }
}

/// A located ONNX Runtime library.
#[derive(Debug, Clone)]
pub struct FoundLibrary {
    pub path: PathBuf,
    pub source: LibrarySource,
}

/// What was loaded, for `labelflow doctor` and logs.
#[derive(Debug, Clone)]
pub struct LoadedRuntime {
    pub library: FoundLibrary,
    /// ONNX Runtime's own build string (contains the release branch, e.g. `rel-1.31.1`).
    pub build_info: String,
    /// Execution providers this library was built with, e.g. `CPUExecutionProvider`.
    pub providers: Vec<String>,
}

static LOADED: OnceLock<std::result::Result<LoadedRuntime, String>> = OnceLock::new();
static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();

fn library_names(dir: &Path) -> Option<PathBuf> {
    let exact = dir.join("libonnxruntime.so");
    if exact.exists() {
        return Some(exact);
    }
    let mut versioned: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libonnxruntime.so.")
                    || n == "libonnxruntime.dylib"
                    || n == "onnxruntime.dll"
            })
        })
        .collect();
    versioned.sort();
    versioned.pop()
}

fn project_local_candidates() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            roots.extend(dir.ancestors().map(Path::to_path_buf));
        }
    }
    let mut out = Vec::new();
    for r in roots {
        for d in [r.join(LOCAL_GPU_DIR), r.join(LOCAL_DIR)] {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

fn python_candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut pythons: Vec<String> = Vec::new();
    if let Ok(p) = std::env::var("LABELFLOW_PYTHON") {
        pythons.push(p);
    }
    if let Ok(venv) = std::env::var("VIRTUAL_ENV") {
        pythons.push(format!("{venv}/bin/python"));
    }
    pythons.push("python3".into());
    for py in pythons {
        let out = Command::new(&py)
            .args([
                "-c",
                "import importlib.util as u, os\nfor n in ('onnxruntime',):\n s=u.find_spec(n)\n if s and s.origin: print(os.path.join(os.path.dirname(s.origin),'capi'))",
            ])
            .output();
        if let Ok(out) = out {
            if out.status.success() {
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    let p = PathBuf::from(line.trim());
                    if !line.trim().is_empty() && !dirs.contains(&p) {
                        dirs.push(p);
                    }
                }
            }
        }
    }
    dirs
}

/// Find the library without loading it.
pub fn locate(explicit: Option<&Path>) -> Result<FoundLibrary> {
    if let Some(p) = explicit {
        return check_file(p, LibrarySource::Flag);
    }
    if let Some(p) = std::env::var_os(ORT_ENV).filter(|v| !v.is_empty()) {
        return check_file(Path::new(&p), LibrarySource::Environment);
    }
    for dir in project_local_candidates() {
        if let Some(path) = library_names(&dir) {
            return Ok(FoundLibrary {
                path,
                source: LibrarySource::ProjectLocal,
            });
        }
    }
    for dir in python_candidates() {
        if let Some(path) = library_names(&dir) {
            return Ok(FoundLibrary {
                path,
                source: LibrarySource::PythonPackage,
            });
        }
    }
    Err(Error::Runtime(format!(
        "ONNX Runtime library not found. Looked at: (1) --ort-lib / {ORT_ENV} (not set), \
         (2) the project-local folder {LOCAL_DIR}/ (empty or missing), \
         (3) an installed Python onnxruntime package (none found). \
         Run `{SETUP_COMMAND}` to fetch libonnxruntime.so.1.31.1 from the onnxruntime==1.31.1 wheel, \
         or point --ort-lib at an existing libonnxruntime.so (version 1.17 or newer)."
    )))
}

fn check_file(p: &Path, source: LibrarySource) -> Result<FoundLibrary> {
    if p.is_file() {
        Ok(FoundLibrary {
            path: p.to_path_buf(),
            source,
        })
    } else {
        Err(Error::Runtime(format!(
            "ONNX Runtime library {} (from {source}) does not exist; fix the path or run `{SETUP_COMMAND}`",
            p.display()
        )))
    }
}

/// Locate and load ONNX Runtime once per process. Later calls return the first
/// result (a process can load only one ONNX Runtime).
pub fn init(explicit: Option<&Path>) -> Result<&'static LoadedRuntime> {
    let result = LOADED.get_or_init(|| load(explicit).map_err(|e| e.to_string()));
    result.as_ref().map_err(|e| Error::Runtime(e.clone()))
}

fn load(explicit: Option<&Path>) -> Result<LoadedRuntime> {
    let library = locate(explicit)?;
    let builder = ort::init_from(&library.path).map_err(|e| {
        Error::Runtime(format!(
            "cannot load ONNX Runtime from {} (found via {}): {e}",
            library.path.display(),
            library.source
        ))
    })?;
    let env = builder
        .with_name("labelflow")
        .with_telemetry(false)
        .build()
        .map_err(|e| Error::Runtime(format!("cannot start ONNX Runtime: {e}")))?;
    let _ = ENVIRONMENT.set(env);
    let build_info = ort::info().to_string();
    let providers = available_providers();
    Ok(LoadedRuntime {
        library,
        build_info,
        providers,
    })
}

fn available_providers() -> Vec<String> {
    use ort::ep::ExecutionProvider;
    let mut out = Vec::new();
    if matches!(ort::ep::CPU::is_available(), Ok(true)) {
        out.push("CPUExecutionProvider".to_string());
    }
    if matches!(ort::ep::CUDA::is_available(), Ok(true)) {
        out.push("CUDAExecutionProvider".to_string());
    }
    out
}

/// The loaded environment; [`init`] must have succeeded first.
pub fn environment() -> Result<&'static ort::environment::Environment> {
    ENVIRONMENT.get().ok_or_else(|| {
        Error::Runtime("ONNX Runtime is not loaded yet (call runtime::init first)".into())
    })
}

/// The ONNX Runtime release, read from the build string or the file name.
pub fn version_of(rt: &LoadedRuntime) -> Option<String> {
    if let Some(i) = rt.build_info.find("rel-") {
        let rest = &rt.build_info[i + 4..];
        let v: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        if !v.is_empty() {
            return Some(v);
        }
    }
    let name = rt.library.path.file_name()?.to_str()?;
    name.strip_prefix("libonnxruntime.so.").map(str::to_string)
}

/// The arithmetic of the model's convolutions and matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Full single precision everywhere (the default).
    #[default]
    Fp32,
    /// On CUDA, TensorFloat-32 tensor cores for convolutions and matrix products
    /// (10-bit mantissas inside, float32 in and out); on CPU the same as fp32.
    Tf32,
    /// A half-precision copy of the model (weights and activations in float16, the
    /// input normalised in float32 first, logits returned as float32), made when the
    /// model is loaded.
    Fp16,
}

keyword_enum!(
    Precision,
    "precision",
    "fp32" | "float32" => Precision::Fp32,
    "tf32" => Precision::Tf32,
    "fp16" | "float16" | "half" => Precision::Fp16,
);

/// Whether a feature is used: `auto` lets the device decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    #[default]
    Auto,
    On,
    Off,
}

impl Toggle {
    /// On or off for a session on `device`, `auto` meaning "on CUDA".
    pub fn on_for(self, device: Device) -> bool {
        match self {
            Toggle::On => true,
            Toggle::Off => false,
            Toggle::Auto => device != Device::Cpu,
        }
    }
}

keyword_enum!(
    Toggle,
    "setting",
    "auto" => Toggle::Auto,
    "on" | "true" | "yes" => Toggle::On,
    "off" | "false" | "no" => Toggle::Off,
);

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(i32),
    /// Several GPUs (`cuda:0,1,…`), one session on each at least: bit `i` is `cuda:i`.
    CudaSet(u64),
}

impl Device {
    /// The single devices this one stands for: itself, or each GPU of a set in order.
    pub fn each(self) -> Vec<Device> {
        match self {
            Device::CudaSet(mask) => (0..64)
                .filter(|i| mask & (1u64 << i) != 0)
                .map(Device::Cuda)
                .collect(),
            d => vec![d],
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        if s == "cpu" {
            return Ok(Device::Cpu);
        }
        if s == "cuda" || s == "gpu" {
            return Ok(Device::Cuda(0));
        }
        if let Some(list) = s.strip_prefix("cuda:") {
            let mut mask = 0u64;
            for n in list.split(',') {
                let i = n
                    .trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|n| (0..64).contains(n))
                    .ok_or_else(|| {
                        format!("bad CUDA device index {n:?} in {s:?}; use cuda:0, cuda:1, … or cuda:0,1 for several")
                    })?;
                mask |= 1u64 << i;
            }
            return Ok(if mask.count_ones() == 1 {
                Device::Cuda(mask.trailing_zeros() as i32)
            } else {
                Device::CudaSet(mask)
            });
        }
        Err(format!(
            "unknown device {s:?}; expected cpu, cuda, cuda:N or cuda:N,M,…"
        ))
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::CudaSet(_) => {
                let ids: Vec<String> = self
                    .each()
                    .into_iter()
                    .filter_map(|d| match d {
                        Device::Cuda(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .collect();
                write!(f, "cuda:{}", ids.join(","))
            }
        }
    }
}

impl serde::Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// NVIDIA GPUs the kernel driver reports (empty when there is no driver).
pub fn gpus_seen() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc/driver/nvidia/gpus") {
        for e in entries.flatten() {
            let info = std::fs::read_to_string(e.path().join("information")).unwrap_or_default();
            let model = info
                .lines()
                .find_map(|l| l.strip_prefix("Model:"))
                .map(|m| m.trim().to_string())
                .unwrap_or_else(|| e.file_name().to_string_lossy().into_owned());
            out.push(model);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_parsing() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("CUDA:2".parse::<Device>().unwrap(), Device::Cuda(2));
        assert!("cuda:x".parse::<Device>().unwrap_err().contains("cuda:0"));
        let set = "cuda:2,0".parse::<Device>().unwrap();
        assert_eq!(set, Device::CudaSet(0b101));
        assert_eq!(set.to_string(), "cuda:0,2");
        assert_eq!(set.each(), vec![Device::Cuda(0), Device::Cuda(2)]);
        assert_eq!("cuda:1,1".parse::<Device>().unwrap(), Device::Cuda(1));
        assert!("cuda:0,64".parse::<Device>().is_err());
        assert_eq!(Device::Cpu.each(), vec![Device::Cpu]);
        assert!("tpu"
            .parse::<Device>()
            .unwrap_err()
            .contains("expected cpu"));
    }

    #[test]
    fn missing_explicit_library_names_the_path_and_setup() {
        let err = locate(Some(Path::new("/nonexistent/libonnxruntime.so")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/libonnxruntime.so"), "{err}");
        assert!(err.contains(SETUP_COMMAND), "{err}");
    }
}
