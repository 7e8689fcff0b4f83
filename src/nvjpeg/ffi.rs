//! nvJPEG and the CUDA driver API, loaded at run time with `libloading`: the symbols
//! labelflow calls, declared from `nvjpeg.h` (nvJPEG 13) and `cuda.h`.
//!
//! [`NvJpeg::open`] loads `libnvjpeg.so.13` (from `LABELFLOW_NVJPEG`, the project's
//! `third_party/nvjpeg`, or the loader path) and `libcuda.so.1`, checks nvJPEG's major
//! version, makes the device's primary context current and creates the library handle.
//! [`NvJpeg::decode_rgb`] decodes one JPEG on the device into interleaved RGB and copies
//! it back into a host buffer; each calling thread keeps its own decoder state and
//! device buffer (grown to the largest image it has seen) until it exits.

use std::cell::RefCell;
use std::ffi::{c_int, c_uint, c_void};
use std::path::PathBuf;
use std::sync::Arc;

use libloading::Library;

/// nvJPEG's major version this code is written against.
pub const NVJPEG_MAJOR: c_int = 13;

const NVJPEG_OUTPUT_RGBI: c_int = 5;
const NVJPEG_MAX_COMPONENT: usize = 4;
const MAJOR_VERSION: c_int = 0;
const MINOR_VERSION: c_int = 1;

type Status = c_int;
type CuResult = c_int;
type Handle = *mut c_void;

#[repr(C)]
struct NvImage {
    channel: [*mut u8; NVJPEG_MAX_COMPONENT],
    pitch: [usize; NVJPEG_MAX_COMPONENT],
}

/// The functions used, copied out of the libraries, which live as long as this does.
struct Api {
    get_property: unsafe extern "C" fn(c_int, *mut c_int) -> Status,
    create_simple: unsafe extern "C" fn(*mut Handle) -> Status,
    destroy: unsafe extern "C" fn(Handle) -> Status,
    state_create: unsafe extern "C" fn(Handle, *mut Handle) -> Status,
    state_destroy: unsafe extern "C" fn(Handle) -> Status,
    image_info: unsafe extern "C" fn(
        Handle,
        *const u8,
        usize,
        *mut c_int,
        *mut c_int,
        *mut c_int,
        *mut c_int,
    ) -> Status,
    decode: unsafe extern "C" fn(
        Handle,
        Handle,
        *const u8,
        usize,
        c_int,
        *mut NvImage,
        *mut c_void,
    ) -> Status,
    cu_init: unsafe extern "C" fn(c_uint) -> CuResult,
    cu_device_get: unsafe extern "C" fn(*mut c_int, c_int) -> CuResult,
    cu_primary_ctx_retain: unsafe extern "C" fn(*mut Handle, c_int) -> CuResult,
    cu_primary_ctx_release: unsafe extern "C" fn(c_int) -> CuResult,
    cu_ctx_set_current: unsafe extern "C" fn(Handle) -> CuResult,
    cu_mem_alloc: unsafe extern "C" fn(*mut u64, usize) -> CuResult,
    cu_mem_free: unsafe extern "C" fn(u64) -> CuResult,
    cu_memcpy_dtoh: unsafe extern "C" fn(*mut c_void, u64, usize) -> CuResult,
    _nvjpeg: Library,
    _cuda: Library,
}

/// Where `libnvjpeg.so.13` is looked for, in order.
fn nvjpeg_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("LABELFLOW_NVJPEG") {
        out.push(PathBuf::from(p));
    }
    out.push(PathBuf::from(
        "third_party/nvjpeg/nvidia/cu13/lib/libnvjpeg.so.13",
    ));
    out.push(PathBuf::from("libnvjpeg.so.13"));
    out
}

fn load(candidates: &[PathBuf], what: &str) -> Result<Library, String> {
    let mut tried = Vec::new();
    for c in candidates {
        if c.components().count() > 1 && !c.exists() {
            continue;
        }
        // SAFETY: loading a shared library runs its initialisers; nvJPEG's and the CUDA
        // driver's are the vendor's and have no preconditions.
        match unsafe { Library::new(c) } {
            Ok(lib) => return Ok(lib),
            Err(e) => tried.push(format!("{}: {e}", c.display())),
        }
    }
    Err(format!("{what} not found ({})", tried.join("; ")))
}

macro_rules! symbol {
    ($lib:expr, $name:literal) => {{
        // SAFETY: the symbol is declared with the C signature `nvjpeg.h` / `cuda.h`
        // give it; the pointer is used only while the library is loaded (`Api` owns it).
        let f = unsafe { $lib.get($name) }.map_err(|e| {
            format!(
                "{} is missing from the library: {e}",
                String::from_utf8_lossy(&$name[..$name.len() - 1])
            )
        })?;
        *f
    }};
}

impl Api {
    fn load() -> Result<Self, String> {
        let nvjpeg = load(&nvjpeg_candidates(), "libnvjpeg.so.13")?;
        let cuda = load(
            &[PathBuf::from("libcuda.so.1")],
            "the CUDA driver library libcuda.so.1",
        )?;
        Ok(Api {
            get_property: symbol!(nvjpeg, b"nvjpegGetProperty\0"),
            create_simple: symbol!(nvjpeg, b"nvjpegCreateSimple\0"),
            destroy: symbol!(nvjpeg, b"nvjpegDestroy\0"),
            state_create: symbol!(nvjpeg, b"nvjpegJpegStateCreate\0"),
            state_destroy: symbol!(nvjpeg, b"nvjpegJpegStateDestroy\0"),
            image_info: symbol!(nvjpeg, b"nvjpegGetImageInfo\0"),
            decode: symbol!(nvjpeg, b"nvjpegDecode\0"),
            cu_init: symbol!(cuda, b"cuInit\0"),
            cu_device_get: symbol!(cuda, b"cuDeviceGet\0"),
            cu_primary_ctx_retain: symbol!(cuda, b"cuDevicePrimaryCtxRetain\0"),
            cu_primary_ctx_release: symbol!(cuda, b"cuDevicePrimaryCtxRelease_v2\0"),
            cu_ctx_set_current: symbol!(cuda, b"cuCtxSetCurrent\0"),
            cu_mem_alloc: symbol!(cuda, b"cuMemAlloc_v2\0"),
            cu_mem_free: symbol!(cuda, b"cuMemFree_v2\0"),
            cu_memcpy_dtoh: symbol!(cuda, b"cuMemcpyDtoH_v2\0"),
            _nvjpeg: nvjpeg,
            _cuda: cuda,
        })
    }
}

fn status(what: &str, s: Status) -> Result<(), String> {
    let name = match s {
        0 => return Ok(()),
        1 => "not initialised",
        2 => "invalid parameter",
        3 => "bad JPEG",
        4 => "JPEG not supported",
        5 => "allocator failure",
        6 => "execution failed (no usable GPU?)",
        7 => "architecture mismatch",
        8 => "internal error",
        9 => "implementation not supported",
        10 => "incomplete bitstream",
        _ => "unknown status",
    };
    Err(format!("{what}: {name} (nvJPEG status {s})"))
}

fn cu(what: &str, r: CuResult) -> Result<(), String> {
    match r {
        0 => Ok(()),
        100 => Err(format!("{what}: no CUDA-capable device (CUDA error 100)")),
        101 => Err(format!("{what}: invalid device ordinal (CUDA error 101)")),
        2 => Err(format!("{what}: out of device memory (CUDA error 2)")),
        r => Err(format!("{what}: CUDA error {r}")),
    }
}

/// nvJPEG on one CUDA device, shared by the decode threads.
pub struct NvJpeg {
    api: Arc<Api>,
    handle: Handle,
    ctx: Handle,
    device: c_int,
    version: (c_int, c_int),
}

// SAFETY: an nvJPEG handle may be used from several threads at once (each with its own
// JPEG state, as `decode_rgb` keeps one per thread); the primary context is made
// current on each thread before use.
unsafe impl Send for NvJpeg {}
// SAFETY: as above; `&NvJpeg` only reads the handle and context pointers.
unsafe impl Sync for NvJpeg {}

impl NvJpeg {
    /// Loads the libraries and opens CUDA device `id`.
    pub fn open(id: i32) -> Result<Self, String> {
        let api = Arc::new(Api::load()?);
        let (mut major, mut minor) = (0, 0);
        // SAFETY: plain out-parameters.
        status("nvjpegGetProperty", unsafe {
            (api.get_property)(MAJOR_VERSION, &mut major)
        })?;
        // SAFETY: as above.
        status("nvjpegGetProperty", unsafe {
            (api.get_property)(MINOR_VERSION, &mut minor)
        })?;
        if major != NVJPEG_MAJOR {
            return Err(format!(
                "libnvjpeg is version {major}.{minor}; labelflow needs {NVJPEG_MAJOR}.x (pip install nvidia-nvjpeg==13.2.*)"
            ));
        }
        let mut dev = 0;
        let mut ctx: Handle = std::ptr::null_mut();
        // SAFETY: driver calls with out-parameters, in the order the driver API asks.
        unsafe {
            cu("cuInit", (api.cu_init)(0))?;
            cu(
                &format!("cuDeviceGet({id})"),
                (api.cu_device_get)(&mut dev, id),
            )?;
            cu(
                "cuDevicePrimaryCtxRetain",
                (api.cu_primary_ctx_retain)(&mut ctx, dev),
            )?;
            cu("cuCtxSetCurrent", (api.cu_ctx_set_current)(ctx))?;
        }
        let mut handle: Handle = std::ptr::null_mut();
        // SAFETY: out-parameter; the context is current on this thread.
        if let Err(e) = status("nvjpegCreateSimple", unsafe {
            (api.create_simple)(&mut handle)
        }) {
            // SAFETY: releases the retain above.
            unsafe { (api.cu_primary_ctx_release)(dev) };
            return Err(e);
        }
        Ok(NvJpeg {
            api,
            handle,
            ctx,
            device: dev,
            version: (major, minor),
        })
    }

    /// `major.minor` of the loaded nvJPEG.
    pub fn version(&self) -> String {
        format!("{}.{}", self.version.0, self.version.1)
    }

    /// Decodes `bytes` on the device into interleaved RGB in `out` (resized to fit);
    /// returns the width and height. Errors are nvJPEG's; the caller decodes the file
    /// on the CPU instead.
    pub fn decode_rgb(&self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(u32, u32), String> {
        THREAD.with(|cell| {
            let mut slot = cell.borrow_mut();
            let stale = slot
                .as_ref()
                .is_none_or(|t| t.handle != self.handle || !Arc::ptr_eq(&t.api, &self.api));
            if stale {
                *slot = None;
                *slot = Some(ThreadState::new(self)?);
            }
            let t = slot.as_mut().ok_or("no decoder state")?;
            t.decode(self, bytes, out)
        })
    }
}

impl Drop for NvJpeg {
    fn drop(&mut self) {
        THREAD.with(|cell| {
            if let Ok(mut slot) = cell.try_borrow_mut() {
                *slot = None;
            }
        });
        // SAFETY: the handle was created by `open`; threads' states made from it are
        // destroyed when their threads end (the decode pool ends before the decoder).
        unsafe {
            (self.api.destroy)(self.handle);
            (self.api.cu_primary_ctx_release)(self.device);
        }
    }
}

/// One thread's nvJPEG state and device buffer.
struct ThreadState {
    api: Arc<Api>,
    handle: Handle,
    state: Handle,
    buffer: u64,
    capacity: usize,
}

thread_local! {
    static THREAD: RefCell<Option<ThreadState>> = const { RefCell::new(None) };
}

impl ThreadState {
    fn new(nv: &NvJpeg) -> Result<Self, String> {
        let api = nv.api.clone();
        let mut state: Handle = std::ptr::null_mut();
        // SAFETY: makes the device's primary context current on this thread, then an
        // out-parameter call on the shared handle.
        unsafe {
            cu("cuCtxSetCurrent", (api.cu_ctx_set_current)(nv.ctx))?;
            status(
                "nvjpegJpegStateCreate",
                (api.state_create)(nv.handle, &mut state),
            )?;
        }
        Ok(ThreadState {
            api,
            handle: nv.handle,
            state,
            buffer: 0,
            capacity: 0,
        })
    }

    fn decode(
        &mut self,
        nv: &NvJpeg,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(u32, u32), String> {
        let api = &nv.api;
        let (mut components, mut subsampling) = (0, 0);
        let (mut widths, mut heights) = ([0 as c_int; 4], [0 as c_int; 4]);
        // SAFETY: `bytes` is valid for its length; the arrays have the four entries
        // nvJPEG writes.
        status("nvjpegGetImageInfo", unsafe {
            (api.image_info)(
                self.handle,
                bytes.as_ptr(),
                bytes.len(),
                &mut components,
                &mut subsampling,
                widths.as_mut_ptr(),
                heights.as_mut_ptr(),
            )
        })?;
        let (w, h) = (
            usize::try_from(widths[0]).map_err(|_| "negative width")?,
            usize::try_from(heights[0]).map_err(|_| "negative height")?,
        );
        if w == 0 || h == 0 {
            return Err(format!("nvjpegGetImageInfo: {w}x{h} image"));
        }
        let len = w
            .checked_mul(h)
            .and_then(|p| p.checked_mul(3))
            .ok_or("image too large")?;
        if len > self.capacity {
            if self.buffer != 0 {
                // SAFETY: a buffer this state allocated.
                unsafe { (api.cu_mem_free)(self.buffer) };
                self.buffer = 0;
                self.capacity = 0;
            }
            // Room for the next larger image too: grow by a quarter.
            let want = len + len / 4;
            let mut ptr = 0u64;
            // SAFETY: out-parameter.
            cu("cuMemAlloc", unsafe { (api.cu_mem_alloc)(&mut ptr, want) })?;
            self.buffer = ptr;
            self.capacity = want;
        }
        let mut image = NvImage {
            channel: [std::ptr::null_mut(); NVJPEG_MAX_COMPONENT],
            pitch: [0; NVJPEG_MAX_COMPONENT],
        };
        image.channel[0] = self.buffer as *mut u8;
        image.pitch[0] = w * 3;
        // SAFETY: the destination is a device buffer of at least `len` bytes with the
        // pitch of interleaved RGB; the default stream (null) orders the copy below
        // after the decode.
        status("nvjpegDecode", unsafe {
            (api.decode)(
                self.handle,
                self.state,
                bytes.as_ptr(),
                bytes.len(),
                NVJPEG_OUTPUT_RGBI,
                &mut image,
                std::ptr::null_mut(),
            )
        })?;
        out.resize(len, 0);
        // SAFETY: copies `len` bytes from the device buffer into `out`, which has them;
        // synchronous, so the pixels are there when it returns.
        cu("cuMemcpyDtoH", unsafe {
            (api.cu_memcpy_dtoh)(out.as_mut_ptr().cast(), self.buffer, len)
        })?;
        Ok((w as u32, h as u32))
    }
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        // SAFETY: the state and buffer were made by this thread's `new` / `decode`.
        unsafe {
            if self.buffer != 0 {
                (self.api.cu_mem_free)(self.buffer);
            }
            (self.api.state_destroy)(self.state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a GPU, opening fails with a message that names what is missing: the
    /// library, the driver, or the device. With one, a fixture photo decodes to the
    /// CPU decoder's size and, within the decoders' rounding, its pixels.
    #[test]
    fn nvjpeg_opens_and_decodes_or_says_what_is_missing() {
        match NvJpeg::open(0) {
            Err(e) => {
                eprintln!("nvJPEG: {e}");
                assert!(
                    e.contains("libnvjpeg.so.13")
                        || e.contains("libcuda.so.1")
                        || e.contains("CUDA error")
                        || e.contains("nvJPEG status"),
                    "{e}"
                )
            }
            Ok(nv) => {
                let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/data/photos/astronaut.jpg");
                let bytes = std::fs::read(path).unwrap();
                let mut rgb = Vec::new();
                let (w, h) = nv.decode_rgb(&bytes, &mut rgb).unwrap();
                let cpu = crate::decode::decode(&bytes, Default::default()).unwrap();
                assert_eq!((w, h), (cpu.width, cpu.height));
                let diff: u64 = rgb
                    .iter()
                    .zip(&cpu.pixels)
                    .map(|(a, b)| u64::from(a.abs_diff(*b)))
                    .sum();
                let mean = diff as f64 / rgb.len() as f64;
                assert!(mean < 2.0, "mean difference {mean} grey levels");
            }
        }
    }
}
