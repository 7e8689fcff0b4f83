//! Which files the GPU decoder takes: a JPEG's header read without decoding it, and the
//! rule that sends every file the GPU path cannot decode exactly to the CPU instead.
//!
//! Pure and always built, so the rule is tested on machines without a GPU.

/// How a JPEG's scans are coded (its start-of-frame marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// SOF0: baseline sequential Huffman, 8-bit — what JPEG engines decode.
    Baseline,
    /// SOF1: extended sequential Huffman (8- or 12-bit).
    Extended,
    /// SOF2: progressive Huffman.
    Progressive,
    /// SOF3, SOF9–SOF15, SOF5–SOF7: lossless, arithmetic-coded or hierarchical.
    Other(u8),
}

/// What a JPEG's header says, read up to its first start-of-frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegHeader {
    pub coding: Coding,
    /// Bits per sample (8, or 12 for some extended files).
    pub precision: u8,
    pub width: u32,
    pub height: u32,
    /// Colour components: 1 (grey), 3 (YCbCr or RGB) or 4 (CMYK / YCCK).
    pub components: u8,
    /// The EXIF orientation (1 = as stored), when the file has one.
    pub orientation: Option<u16>,
}

/// Where one file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Gpu,
    /// The CPU decoder, and why (for the run's counts).
    Cpu(CpuReason),
}

/// Why a file is decoded on the CPU when the GPU decoder is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuReason {
    /// Not a JPEG (PNG, WebP, …), or a JPEG whose header does not parse: the CPU
    /// decoder gives the precise error row.
    NotJpeg,
    /// Progressive: the CPU's DCT-domain downscaling reads fewer coefficients than any
    /// full decode.
    Progressive,
    /// Lossless, arithmetic-coded, hierarchical or 12-bit.
    Coding,
    /// Grey, CMYK or YCCK, or an unusual component count: the GPU path takes
    /// three-component files only.
    Colour,
    /// Rotated or mirrored by its EXIF orientation.
    Oriented,
    /// Larger than the pixel limit (the CPU path writes the error row) or smaller than
    /// the GPU path's minimum.
    Size,
}

impl CpuReason {
    pub fn name(self) -> &'static str {
        match self {
            CpuReason::NotJpeg => "not a baseline JPEG",
            CpuReason::Progressive => "progressive",
            CpuReason::Coding => "lossless, arithmetic or 12-bit coding",
            CpuReason::Colour => "grey, CMYK or unusual components",
            CpuReason::Oriented => "EXIF-rotated",
            CpuReason::Size => "outside the GPU's size range",
        }
    }
}

/// The smallest side the GPU path takes (the JPEG engines' minimum block layout).
pub const MIN_SIDE: u32 = 16;

/// Where `bytes` is decoded when the GPU decoder is on, with the run's pixel limit.
pub fn route(bytes: &[u8], max_pixels: u64) -> Route {
    let Some(h) = read_header(bytes) else {
        return Route::Cpu(CpuReason::NotJpeg);
    };
    let pixels = u64::from(h.width) * u64::from(h.height);
    match h {
        _ if pixels > max_pixels || h.width < MIN_SIDE || h.height < MIN_SIDE => {
            Route::Cpu(CpuReason::Size)
        }
        JpegHeader {
            coding: Coding::Progressive,
            ..
        } => Route::Cpu(CpuReason::Progressive),
        JpegHeader {
            coding: Coding::Other(_),
            ..
        } => Route::Cpu(CpuReason::Coding),
        JpegHeader { precision, .. } if precision != 8 => Route::Cpu(CpuReason::Coding),
        JpegHeader { components, .. } if components != 3 => Route::Cpu(CpuReason::Colour),
        JpegHeader {
            orientation: Some(o),
            ..
        } if o != 1 => Route::Cpu(CpuReason::Oriented),
        _ => Route::Gpu,
    }
}

/// The header of a JPEG up to its first start-of-frame marker, or `None` when `bytes`
/// is not a JPEG or the header is cut short or malformed. Never panics, never reads
/// past `bytes`.
pub fn read_header(bytes: &[u8]) -> Option<JpegHeader> {
    if bytes.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut at = 2usize;
    let mut orientation = None;
    loop {
        // Markers may be preceded by fill bytes (0xFF).
        while *bytes.get(at)? == 0xFF && *bytes.get(at + 1)? == 0xFF {
            at += 1;
        }
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(at + 1)?;
        at += 2;
        match marker {
            // Standalone markers without a length.
            0x01 | 0xD0..=0xD7 => continue,
            // End of image or start of scan before any frame: not a usable file.
            0xD9 | 0xDA => return None,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
        if len < 2 {
            return None;
        }
        let body = bytes.get(at + 2..at + len)?;
        match marker {
            0xC0..=0xCF if marker != 0xC4 && marker != 0xC8 && marker != 0xCC => {
                let coding = match marker {
                    0xC0 => Coding::Baseline,
                    0xC1 => Coding::Extended,
                    0xC2 => Coding::Progressive,
                    m => Coding::Other(m),
                };
                let precision = *body.first()?;
                let height = u32::from(u16::from_be_bytes([*body.get(1)?, *body.get(2)?]));
                let width = u32::from(u16::from_be_bytes([*body.get(3)?, *body.get(4)?]));
                let components = *body.get(5)?;
                return Some(JpegHeader {
                    coding,
                    precision,
                    width,
                    height,
                    components,
                    orientation,
                });
            }
            // APP1: EXIF orientation.
            0xE1 if orientation.is_none() => orientation = exif_orientation(body),
            _ => {}
        }
        at += len;
    }
}

/// The orientation tag (0x0112) of an APP1 `Exif\0\0` body's first IFD.
fn exif_orientation(body: &[u8]) -> Option<u16> {
    let tiff = body.strip_prefix(b"Exif\0\0")?;
    let big = match tiff.get(..2)? {
        b"MM" => true,
        b"II" => false,
        _ => return None,
    };
    let u16_at = |i: usize| -> Option<u16> {
        let b = [*tiff.get(i)?, *tiff.get(i + 1)?];
        Some(if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |i: usize| -> Option<u32> {
        let b = [
            *tiff.get(i)?,
            *tiff.get(i + 1)?,
            *tiff.get(i + 2)?,
            *tiff.get(i + 3)?,
        ];
        Some(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let entries = usize::from(u16_at(ifd)?);
    (0..entries.min(512)).find_map(|e| {
        let entry = ifd + 2 + e * 12;
        (u16_at(entry)? == 0x0112).then(|| u16_at(entry + 8))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal JPEG header: SOI, optional APP1, then one start-of-frame.
    fn jpeg(
        sof: u8,
        precision: u8,
        w: u16,
        h: u16,
        components: u8,
        app1: Option<Vec<u8>>,
    ) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8];
        // An APP0 JFIF segment first, as most files have.
        b.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x10]);
        b.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        if let Some(body) = app1 {
            b.extend_from_slice(&[0xFF, 0xE1]);
            b.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
            b.extend_from_slice(&body);
        }
        b.extend_from_slice(&[0xFF, sof]);
        let len = 8 + 3 * u16::from(components);
        b.extend_from_slice(&len.to_be_bytes());
        b.push(precision);
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&w.to_be_bytes());
        b.push(components);
        for c in 0..components {
            b.extend_from_slice(&[c + 1, 0x11, 0]);
        }
        b.extend_from_slice(&[0xFF, 0xD9]);
        b
    }

    fn exif(orientation: u16, big_endian: bool) -> Vec<u8> {
        let mut t = Vec::new();
        type Short = fn(u16) -> [u8; 2];
        type Long = fn(u32) -> [u8; 4];
        let (u16b, u32b): (Short, Long) = if big_endian {
            t.extend_from_slice(b"MM\0\x2a");
            (u16::to_be_bytes, u32::to_be_bytes)
        } else {
            t.extend_from_slice(b"II\x2a\0");
            (u16::to_le_bytes, u32::to_le_bytes)
        };
        t.extend_from_slice(&u32b(8));
        t.extend_from_slice(&u16b(2));
        // An unrelated tag (ImageWidth), then Orientation (SHORT, 1 value).
        for (tag, value) in [(0x0100u16, 640u16), (0x0112, orientation)] {
            t.extend_from_slice(&u16b(tag));
            t.extend_from_slice(&u16b(3));
            t.extend_from_slice(&u32b(1));
            t.extend_from_slice(&u16b(value));
            t.extend_from_slice(&[0, 0]);
        }
        t.extend_from_slice(&u32b(0));
        let mut body = b"Exif\0\0".to_vec();
        body.extend_from_slice(&t);
        body
    }

    const LIMIT: u64 = 100_000_000;

    #[test]
    fn baseline_colour_jpegs_go_to_the_gpu() {
        assert_eq!(
            route(&jpeg(0xC0, 8, 4000, 3000, 3, None), LIMIT),
            Route::Gpu
        );
        assert_eq!(route(&jpeg(0xC1, 8, 640, 480, 3, None), LIMIT), Route::Gpu);
        assert_eq!(
            route(&jpeg(0xC0, 8, 640, 480, 3, Some(exif(1, true))), LIMIT),
            Route::Gpu
        );
        let h = read_header(&jpeg(0xC0, 8, 4000, 3000, 3, None)).unwrap();
        assert_eq!((h.width, h.height, h.components), (4000, 3000, 3));
    }

    #[test]
    fn what_the_gpu_path_cannot_decode_exactly_goes_to_the_cpu() {
        let cpu = |b: &[u8]| match route(b, LIMIT) {
            Route::Cpu(r) => Some(r),
            Route::Gpu => None,
        };
        assert_eq!(
            cpu(&jpeg(0xC2, 8, 640, 480, 3, None)),
            Some(CpuReason::Progressive)
        );
        assert_eq!(
            cpu(&jpeg(0xC0, 8, 640, 480, 4, None)),
            Some(CpuReason::Colour)
        );
        assert_eq!(
            cpu(&jpeg(0xC0, 8, 640, 480, 1, None)),
            Some(CpuReason::Colour)
        );
        assert_eq!(
            cpu(&jpeg(0xC0, 8, 640, 480, 2, None)),
            Some(CpuReason::Colour)
        );
        assert_eq!(
            cpu(&jpeg(0xC1, 12, 640, 480, 3, None)),
            Some(CpuReason::Coding)
        );
        assert_eq!(
            cpu(&jpeg(0xC3, 8, 640, 480, 3, None)),
            Some(CpuReason::Coding)
        );
        assert_eq!(
            cpu(&jpeg(0xC9, 8, 640, 480, 3, None)),
            Some(CpuReason::Coding)
        );
        for (o, big) in [(6, true), (3, false), (8, false)] {
            assert_eq!(
                cpu(&jpeg(0xC0, 8, 640, 480, 3, Some(exif(o, big)))),
                Some(CpuReason::Oriented),
                "orientation {o}"
            );
        }
        assert_eq!(cpu(&jpeg(0xC0, 8, 8, 480, 3, None)), Some(CpuReason::Size));
        assert_eq!(
            route(&jpeg(0xC0, 8, 20_000, 20_000, 3, None), LIMIT),
            Route::Cpu(CpuReason::Size)
        );
        assert_eq!(cpu(b"\x89PNG\r\n\x1a\n"), Some(CpuReason::NotJpeg));
        assert_eq!(cpu(b""), Some(CpuReason::NotJpeg));
    }

    #[test]
    fn cut_or_hostile_headers_are_not_read_and_never_panic() {
        let good = jpeg(0xC0, 8, 640, 480, 3, Some(exif(6, false)));
        for cut in 0..good.len() - 2 {
            // Every prefix either parses to the same header or is refused.
            if let Some(h) = read_header(&good[..cut]) {
                assert_eq!(h, read_header(&good).unwrap());
            }
        }
        // A segment length that points past the end, a zero length, a scan before any frame.
        assert_eq!(read_header(&[0xFF, 0xD8, 0xFF, 0xE0, 0xFF, 0xFF, 0]), None);
        assert_eq!(read_header(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]), None);
        assert_eq!(read_header(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2]), None);
        // Pseudo-random bytes after SOI.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut b = vec![0xFF, 0xD8];
            for _ in 0..64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(x as u8);
            }
            let _ = read_header(&b);
        }
    }

    #[test]
    fn the_fixture_photos_route_as_their_headers_say() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos");
        let mut seen = 0;
        for name in ["astronaut.jpg", "rocket.jpg"] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            let h = read_header(&bytes).unwrap();
            assert!(h.width >= 16 && h.height >= 16, "{name}");
            assert!(matches!(route(&bytes, LIMIT), Route::Gpu | Route::Cpu(_)));
            seen += 1;
        }
        assert_eq!(seen, 2);
        let png = std::fs::read(dir.join("coffee.png")).unwrap();
        assert_eq!(route(&png, LIMIT), Route::Cpu(CpuReason::NotJpeg));
    }
}
