//! The GPU JPEG decoder (`--decode gpu|auto`): which decoder a run uses, which files
//! go to the GPU ([`route`]), and — in a build with the `nvjpeg` feature — nvJPEG itself
//! ([`ffi`]), loaded at run time from `libnvjpeg.so.13` (PyPI's `nvidia-nvjpeg`, no CUDA
//! toolkit needed to build) with the CUDA driver's `libcuda.so.1`.
//!
//! The GPU path decodes a baseline JPEG on the device (the JPEG engines of A100, H100
//! and H200 where nvJPEG's default backend picks them) and copies the RGB pixels back
//! for the CPU pool's resize and crop; every other file (progressive, CMYK, grey,
//! EXIF-rotated, 12-bit, not a JPEG, corrupt, or any file nvJPEG refuses) is decoded on
//! the CPU exactly as without it, so nothing a run writes depends on which files the
//! GPU took beyond the decoders' rounding.

pub mod route;

#[cfg(feature = "nvjpeg")]
pub mod ffi;

use crate::decode::DecodeOn;
use crate::error::{Error, Hint, Result, Setting};
use crate::runtime::Device;

/// Why the GPU decoder cannot be used by this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// This binary was built without the `nvjpeg` feature.
    NotBuilt,
    /// The model runs on the CPU.
    NoCudaDevice,
    /// The library or the device refused (the message says which and why).
    Library(String),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::NotBuilt => f.write_str(
                "this labelflow was built without the GPU JPEG decoder (cargo build --release --features nvjpeg)",
            ),
            Unavailable::NoCudaDevice => {
                f.write_str("the GPU JPEG decoder needs the model on a CUDA device")
            }
            Unavailable::Library(why) => write!(f, "nvJPEG cannot be used: {why}"),
        }
    }
}

/// The decoder a run uses.
pub enum Chosen<G> {
    /// The CPU pool; with `auto`, the reason the GPU was not taken.
    Cpu {
        passed_over: Option<Unavailable>,
    },
    Gpu(G),
}

/// Picks the decoder for `decode` with the model on `device`; `open` opens the GPU
/// decoder (only called when the setting and the device allow one). `gpu` asked for
/// and unavailable is an error naming why; `auto` falls back to the CPU and says why.
pub fn choose<G>(
    decode: DecodeOn,
    device: Device,
    open: impl FnOnce(Device) -> std::result::Result<G, Unavailable>,
) -> Result<Chosen<G>> {
    let opened = match decode {
        DecodeOn::Cpu => return Ok(Chosen::Cpu { passed_over: None }),
        _ if device == Device::Cpu => Err(Unavailable::NoCudaDevice),
        _ => open(device),
    };
    match (decode, opened) {
        (_, Ok(g)) => Ok(Chosen::Gpu(g)),
        (DecodeOn::Auto, Err(why)) => Ok(Chosen::Cpu {
            passed_over: Some(why),
        }),
        (_, Err(why)) => {
            let hint = match &why {
                Unavailable::NotBuilt => Hint::new("build with --features nvjpeg, or pass ")
                    .setting(Setting::Decode)
                    .then(" cpu"),
                Unavailable::NoCudaDevice => Hint::new("run the model on CUDA (")
                    .setting(Setting::Device)
                    .then(" cuda), or pass ")
                    .setting(Setting::Decode)
                    .then(" cpu"),
                Unavailable::Library(_) => Hint::new(
                    "install nvJPEG (scripts/setup-nvjpeg.sh, or pip install nvidia-nvjpeg==13.2.* and set LABELFLOW_NVJPEG to its libnvjpeg.so.13), or pass ",
                )
                .setting(Setting::Decode)
                .then(" auto to fall back to the CPU"),
            };
            Err(
                Error::Runtime(format!("the GPU JPEG decoder was asked for, but {why}"))
                    .with_hint(hint),
            )
        }
    }
}

/// Opens the GPU decoder on `device` in this build.
#[cfg(feature = "nvjpeg")]
pub fn open(device: Device) -> std::result::Result<ffi::NvJpeg, Unavailable> {
    let id = match device.each().first().copied().unwrap_or(device) {
        Device::Cuda(id) => id,
        _ => return Err(Unavailable::NoCudaDevice),
    };
    ffi::NvJpeg::open(id).map_err(Unavailable::Library)
}

/// Opens the GPU decoder on `device` in this build: never, it has none.
#[cfg(not(feature = "nvjpeg"))]
pub fn open(_device: Device) -> std::result::Result<std::convert::Infallible, Unavailable> {
    Err(Unavailable::NotBuilt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: Device) -> std::result::Result<(), Unavailable> {
        panic!("the GPU decoder must not be opened")
    }

    #[test]
    fn cpu_never_opens_the_gpu_decoder() {
        assert!(matches!(
            choose(DecodeOn::Cpu, Device::Cuda(0), never).unwrap(),
            Chosen::Cpu { passed_over: None }
        ));
    }

    #[test]
    fn gpu_without_a_cuda_device_or_a_build_is_an_error_naming_why() {
        let e = choose(DecodeOn::Gpu, Device::Cpu, never).err().unwrap();
        assert!(
            e.to_string().contains("needs the model on a CUDA device"),
            "{e}"
        );
        assert_eq!(
            e.hint().unwrap().settings().collect::<Vec<_>>(),
            [Setting::Device, Setting::Decode]
        );
        let e = choose(DecodeOn::Gpu, Device::Cuda(0), |_| {
            Err::<(), _>(Unavailable::NotBuilt)
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("--features nvjpeg"), "{e}");
        let e = choose(DecodeOn::Gpu, Device::Cuda(1), |d| {
            assert_eq!(d, Device::Cuda(1));
            Err::<(), _>(Unavailable::Library("libnvjpeg.so.13: not found".into()))
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("libnvjpeg.so.13: not found"), "{e}");
    }

    #[test]
    fn auto_falls_back_to_the_cpu_and_says_why() {
        match choose(DecodeOn::Auto, Device::Cpu, never).unwrap() {
            Chosen::Cpu { passed_over } => assert_eq!(passed_over, Some(Unavailable::NoCudaDevice)),
            Chosen::Gpu(()) => panic!("no GPU decoder on the CPU"),
        }
        match choose(DecodeOn::Auto, Device::Cuda(0), |_| {
            Err::<(), _>(Unavailable::Library("no device".into()))
        })
        .unwrap()
        {
            Chosen::Cpu { passed_over } => {
                assert_eq!(passed_over, Some(Unavailable::Library("no device".into())))
            }
            Chosen::Gpu(()) => panic!("the library refused"),
        }
        assert!(matches!(
            choose(DecodeOn::Auto, Device::Cuda(0), |_| Ok(7)).unwrap(),
            Chosen::Gpu(7)
        ));
    }

    #[test]
    fn this_build_says_whether_it_has_the_decoder() {
        let e = open(Device::Cpu).err().unwrap();
        if cfg!(feature = "nvjpeg") {
            assert_eq!(e, Unavailable::NoCudaDevice);
        } else {
            assert_eq!(e, Unavailable::NotBuilt);
        }
    }
}
