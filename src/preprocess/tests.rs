//! Unit tests of the preprocessing transform.

use super::*;

#[test]
fn resized_size_matches_torchvision() {
    let s = PreprocessSpec::default();
    assert_eq!(s.resized_size(512, 512), (256, 256));
    assert_eq!(s.resized_size(640, 480), (341, 256));
    assert_eq!(s.resized_size(480, 640), (256, 341));
    assert_eq!(s.resized_size(300, 451), (256, 384));
}

#[test]
fn resized_extent_of_thin_strips_does_not_overflow() {
    let s = PreprocessSpec::default();
    assert_eq!(s.resized_extent(1, 20_000), (256, 5_120_000));
    assert_eq!(s.resized_extent(20_000, 1), (5_120_000, 256));
    assert_eq!(s.resized_extent(2, 65_000), (256, 8_320_000));
    assert_eq!(
        s.resized_extent(1, u32::MAX),
        (256, 256 * u64::from(u32::MAX))
    );
    assert_eq!(s.resized_size(1, u32::MAX), (256, u32::MAX));
    assert_eq!(s.resized_extent(640, 480), (341, 256));
}

#[test]
fn python_rounding_is_half_to_even() {
    // round(33 / 2) == 16, round(35 / 2) == 18, … as Python rounds.
    assert_eq!(half_round_even(33), 16);
    assert_eq!(half_round_even(35), 18);
    assert_eq!(half_round_even(1), 0);
    assert_eq!(half_round_even(5), 2);
    assert_eq!(half_round_even(117), 58);
    assert_eq!(half_round_even(4), 2);
    assert_eq!(half_round_even(0), 0);
}

#[test]
fn uniform_image_normalises_to_known_values() {
    let mut p = Preprocessor::new(PreprocessSpec::default()).unwrap();
    let (w, h) = (300u32, 260u32);
    let rgb: Vec<u8> = (0..w * h).flat_map(|_| [255u8, 0, 128]).collect();
    let t = p.run(&rgb, w, h).unwrap();
    assert_eq!(t.len(), 3 * 224 * 224);
    let plane = 224 * 224;
    assert!((t[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
    assert!((t[plane] - (0.0 - 0.456) / 0.224).abs() < 1e-5);
    assert!((t[2 * plane + 17] - (128.0 / 255.0 - 0.406) / 0.225).abs() < 1e-5);
}

#[test]
fn bgr_nhwc_byte_range_layout() {
    let spec = PreprocessSpec {
        resize: 4,
        crop: 4,
        mean: [0.0; 3],
        std: [1.0; 3],
        channel_order: ChannelOrder::Bgr,
        layout: Layout::Nhwc,
        pixel_range: PixelRange::Byte,
    };
    let mut p = Preprocessor::new(spec).unwrap();
    let rgb: Vec<u8> = (0..16).flat_map(|i| [i as u8, 100, 200]).collect();
    let t = p.run(&rgb, 4, 4).unwrap();
    assert_eq!(&t[..6], &[200.0, 100.0, 0.0, 200.0, 100.0, 1.0]);
}

#[test]
fn ten_crop_takes_corners_centre_and_mirrors() {
    // A 6×4 image whose red channel is x + 10·y; crop 2, no resize.
    let spec = PreprocessSpec {
        resize: 4,
        crop: 2,
        mean: [0.0; 3],
        std: [1.0; 3],
        pixel_range: PixelRange::Byte,
        ..PreprocessSpec::default()
    };
    let mut p = Preprocessor::new(spec).unwrap();
    let (w, h) = (6u32, 4u32);
    let rgb: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).flat_map(move |x| [(x + 10 * y) as u8, 0, 0]))
        .collect();
    let mut out = vec![0f32; 10 * 12];
    p.run_views_into(&rgb, w, h, Tta::TenCrop, &mut out)
        .unwrap();
    let red = |v: usize| out[v * 12..v * 12 + 4].to_vec();
    assert_eq!(red(0), [12.0, 13.0, 22.0, 23.0]); // centre (left 2, top 1)
    assert_eq!(red(1), [0.0, 1.0, 10.0, 11.0]); // top-left
    assert_eq!(red(2), [4.0, 5.0, 14.0, 15.0]); // top-right
    assert_eq!(red(3), [20.0, 21.0, 30.0, 31.0]); // bottom-left
    assert_eq!(red(4), [24.0, 25.0, 34.0, 35.0]); // bottom-right
    assert_eq!(red(5), [13.0, 12.0, 23.0, 22.0]); // centre, mirrored
    assert_eq!(red(9), [25.0, 24.0, 35.0, 34.0]);
    // The first view is exactly the plain centre crop.
    assert_eq!(p.run(&rgb, w, h).unwrap(), out[..12].to_vec());
    assert_eq!("10crop".parse::<Tta>().unwrap(), Tta::TenCrop);
    // flip: the centre crop, then the same crop mirrored.
    let mut two = vec![0f32; 2 * 3 * 2 * 2];
    p.run_views_into(&rgb, w, h, Tta::Flip, &mut two).unwrap();
    assert_eq!(two[..12], out[..12]);
    assert_eq!(two[12..], out[5 * 12..6 * 12]);
    assert_eq!("flip".parse::<Tta>().unwrap(), Tta::Flip);
    assert!("5crop".parse::<Tta>().unwrap_err().contains("10crop"));
}

/// The previous implementation, kept as the reference for the crop-window path:
/// resize the whole image to torchvision's size, then cut each view from it.
mod reference {
    use super::super::*;

    fn round_half_even(x: f64) -> i64 {
        let r = x.round();
        if (x - x.trunc()).abs() == 0.5 {
            let t = x.trunc();
            if (t as i64) % 2 == 0 {
                t as i64
            } else {
                r as i64
            }
        } else {
            r as i64
        }
    }

    pub fn run_views(
        p: &mut Preprocessor,
        rgb: &[u8],
        width: u32,
        height: u32,
        tta: Tta,
    ) -> Vec<f32> {
        let len = p.spec.tensor_len();
        let mut out = vec![0f32; len * tta.views()];
        let (rw, rh) = p.spec.resized_size(width, height);
        let resized;
        let (pixels, pw, ph): (&[u8], u32, u32) = if (rw, rh) == (width, height) {
            (rgb, width, height)
        } else {
            resized = resize_rgb(&mut p.resizer, rgb, (width, height), (rw, rh)).unwrap();
            (&resized, rw, rh)
        };
        let crop = p.spec.crop;
        assert!(pw >= crop && ph >= crop, "the reference cannot pad");
        let top = round_half_even(f64::from(ph - crop) / 2.0) as u32;
        let left = round_half_even(f64::from(pw - crop) / 2.0) as u32;
        let (right, bottom) = (pw - crop, ph - crop);
        let origins = [
            (left, top),
            (0, 0),
            (right, 0),
            (0, bottom),
            (right, bottom),
        ];
        let views: &[(u32, u32)] = match tta {
            Tta::None | Tta::Flip => &origins[..1],
            Tta::TenCrop => &origins,
        };
        let mut chunks = out.chunks_exact_mut(len);
        for flip in [false, true] {
            if flip && tta == Tta::None {
                break;
            }
            for &(x0, y0) in views {
                write_crop(p, pixels, pw, x0, y0, flip, chunks.next().unwrap());
            }
        }
        out
    }

    fn write_crop(
        p: &Preprocessor,
        pixels: &[u8],
        pw: u32,
        x0: u32,
        y0: u32,
        flip: bool,
        out: &mut [f32],
    ) {
        let order: [usize; 3] = match p.spec.channel_order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let c = p.spec.crop as usize;
        let plane = c * c;
        let stride = pw as usize * 3;
        let src_x = |x: usize| if flip { c - 1 - x } else { x };
        for y in 0..c {
            let row = &pixels[(y0 as usize + y) * stride + x0 as usize * 3..][..c * 3];
            match p.spec.layout {
                Layout::Nchw => {
                    for (oc, &sc) in order.iter().enumerate() {
                        let dst = &mut out[oc * plane + y * c..][..c];
                        let lut = &p.lut[sc];
                        if flip {
                            for (x, d) in dst.iter_mut().enumerate() {
                                *d = lut[row[src_x(x) * 3 + sc] as usize];
                            }
                        } else {
                            for (x, d) in dst.iter_mut().enumerate() {
                                *d = lut[row[x * 3 + sc] as usize];
                            }
                        }
                    }
                }
                Layout::Nhwc => {
                    let dst = &mut out[y * c * 3..][..c * 3];
                    for x in 0..c {
                        let sx = src_x(x);
                        for (oc, &sc) in order.iter().enumerate() {
                            dst[x * 3 + oc] = p.lut[sc][row[sx * 3 + sc] as usize];
                        }
                    }
                }
            }
        }
    }
}

/// Deterministic test pixels: noise (the hardest case for rounding) or a noisy
/// gradient, from a seed.
fn test_image(width: u32, height: u32, seed: u64, smooth: bool) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height {
        for x in 0..width {
            for c in 0..3u32 {
                let noise = (next() % 256) as u32;
                let v = if smooth {
                    let g = (x * 255 / width.max(2)).wrapping_add(y * 97 / height.max(1) + c * 40);
                    (g % 256 + noise % 24) % 256
                } else {
                    noise
                };
                out.push(v as u8);
            }
        }
    }
    out
}

/// The crop-window path against the old "resize the whole image, then crop" on
/// random images of several sizes, aspect ratios and settings, both TTA modes. In
/// byte range with mean 0 and std 1 a tensor value is a grey level, so the
/// difference is in grey levels before normalisation. Measured: at most 1 grey
/// level, on about 0.15% of the values, all in centre views, whose windows miss
/// both borders of an axis (see [`Preprocessor::prepare`]); the fixture photos
/// come out identical.
#[test]
fn crop_window_matches_resize_then_crop() {
    let sizes = [
        (37, 53),
        (300, 200),
        (513, 97),
        (64, 64),
        (1, 40),
        (40, 1),
        (3, 500),
        (257, 256),
        (224, 224),
        (256, 300),
        (1, 1),
        (2, 650),
        (700, 3),
        (512, 341),
        (333, 500),
    ];
    let settings = [
        (256, 224),
        (32, 24),
        (24, 24),
        (17, 5),
        (64, 63),
        (300, 299),
    ];
    let mut worst = 0f32;
    let mut differing = 0usize;
    let mut total = 0usize;
    for (i, &(resize, crop)) in settings.iter().enumerate() {
        let spec = PreprocessSpec {
            resize,
            crop,
            mean: [0.0; 3],
            std: [1.0; 3],
            pixel_range: PixelRange::Byte,
            channel_order: if i % 2 == 0 {
                ChannelOrder::Rgb
            } else {
                ChannelOrder::Bgr
            },
            layout: if i % 3 == 0 {
                Layout::Nhwc
            } else {
                Layout::Nchw
            },
        };
        let mut p = Preprocessor::new(spec.clone()).unwrap();
        let mut old = Preprocessor::new(spec).unwrap();
        for (j, &(w, h)) in sizes.iter().enumerate() {
            let rgb = test_image(w, h, (i * 100 + j) as u64, j % 2 == 0);
            for tta in [Tta::None, Tta::Flip, Tta::TenCrop] {
                let want = reference::run_views(&mut old, &rgb, w, h, tta);
                let mut got = vec![f32::NAN; want.len()];
                p.run_views_into(&rgb, w, h, tta, &mut got).unwrap();
                for (a, b) in got.iter().zip(&want) {
                    let d = (a - b).abs();
                    assert!(
                        d <= 1.0,
                        "{w}x{h} resize {resize} crop {crop} {tta}: {a} vs {b}"
                    );
                    worst = worst.max(d);
                    differing += usize::from(d > 0.0);
                    total += 1;
                }
            }
        }
    }
    eprintln!(
        "crop window vs resize-then-crop: max abs diff {worst} grey levels, \
         {differing} of {total} values differ"
    );
}

/// A thin strip is resampled into the view buffer only: the resizer's scratch
/// stays a few rows of `crop`, where a whole-image resize would need gigabytes.
#[test]
fn thin_strips_stay_within_crop_sized_buffers() {
    let mut p = Preprocessor::new(PreprocessSpec::default()).unwrap();
    let mut out = vec![0f32; 10 * p.spec().tensor_len()];
    for (w, h) in [
        (2u32, 65_000u32),
        (65_000, 2),
        (1, 20_000),
        (20_000, 1),
        (1, 1),
    ] {
        let rgb = test_image(w, h, 7, true);
        p.run_views_into(&rgb, w, h, Tta::TenCrop, &mut out)
            .unwrap();
        assert!(out.iter().all(|v| v.is_finite()), "{w}x{h}");
        let scratch = p.resizer.size_of_internal_buffers();
        assert!(
            scratch <= 224 * 224 * 3,
            "{w}x{h}: resizer scratch {scratch} bytes"
        );
    }
    assert_eq!(p.view.len(), 224 * 224 * 3);
}

/// When the resized image is smaller than the crop (only reachable with a spec
/// that skipped validation), the view is padded with zeros like CenterCrop's.
#[test]
fn resized_image_smaller_than_crop_is_padded_like_center_crop() {
    let spec = PreprocessSpec {
        resize: 4,
        crop: 4,
        mean: [0.0; 3],
        std: [1.0; 3],
        pixel_range: PixelRange::Byte,
        ..PreprocessSpec::default()
    };
    let mut p = Preprocessor::new(spec).unwrap();
    p.spec.resize = 3;
    // 3×3 of value 9: resized 3×3, padded 0 before and 1 after on each axis.
    let rgb = vec![9u8; 3 * 3 * 3];
    let mut out = vec![f32::NAN; 10 * 48];
    p.run_views_into(&rgb, 3, 3, Tta::TenCrop, &mut out)
        .unwrap();
    let red: Vec<f32> = out[..16].to_vec();
    #[rustfmt::skip]
    let want = [
        9.0, 9.0, 9.0, 0.0,
        9.0, 9.0, 9.0, 0.0,
        9.0, 9.0, 9.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
    ];
    assert_eq!(red, want);
    assert!(out.iter().all(|v| *v == 0.0 || *v == 9.0));
}

#[test]
fn bad_buffers_are_errors() {
    let mut p = Preprocessor::new(PreprocessSpec::default()).unwrap();
    let mut out = vec![0f32; p.spec().tensor_len()];
    let err = p.prepare(&[0; 5], 2, 1, Tta::None, &mut out).unwrap_err();
    assert!(
        matches!(err, PreprocessError::PixelBuffer { expected: 6, .. }),
        "{err}"
    );
    let err = p.prepare(&[], 0, 7, Tta::None, &mut out).unwrap_err();
    assert!(matches!(err, PreprocessError::ZeroSized { .. }), "{err}");
    let err = p
        .prepare(&[0; 6], 2, 1, Tta::TenCrop, &mut out)
        .unwrap_err();
    assert!(err.to_string().contains("10 view(s)"), "{err}");
}

#[test]
fn crop_larger_than_resize_is_refused() {
    let spec = PreprocessSpec {
        resize: 200,
        ..PreprocessSpec::default()
    };
    let err = Preprocessor::new(spec).err().unwrap().to_string();
    assert!(err.contains("resize"), "{err}");
}

#[test]
fn oversized_crop_is_refused() {
    let spec = PreprocessSpec {
        resize: 100_000,
        crop: 100_000,
        ..PreprocessSpec::default()
    };
    let err = Preprocessor::new(spec).err().unwrap().to_string();
    assert!(err.contains("preprocess.crop"), "{err}");
}

/// The bytes a uint8 model is fed are the view the float path normalises: each float
/// is the ImageNet normalisation of the byte at the same pixel (NCHW from NHWC), for
/// every ten-crop view, mirrored ones included.
#[test]
fn byte_views_are_the_pixels_the_float_views_normalise() {
    let (w, h) = (97u32, 61u32);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
    let spec = PreprocessSpec {
        resize: 40,
        crop: 32,
        ..PreprocessSpec::default()
    };
    let mut pre = Preprocessor::new(spec.clone()).unwrap();
    let len = spec.tensor_len() * Tta::TenCrop.views();
    let mut floats = vec![0f32; len];
    let mut bytes = vec![0u8; len];
    pre.prepare(&rgb, w, h, Tta::TenCrop, &mut floats).unwrap();
    pre.prepare(&rgb, w, h, Tta::TenCrop, &mut bytes).unwrap();
    let c = spec.crop as usize;
    for (view, (f, b)) in floats
        .chunks_exact(spec.tensor_len())
        .zip(bytes.chunks_exact(spec.tensor_len()))
        .enumerate()
    {
        for ch in 0..3 {
            for p in 0..c * c {
                let v = f32::from(b[p * 3 + ch]);
                let want = (v * (1.0 / 255.0) - spec.mean[ch]) / spec.std[ch];
                assert_eq!(
                    f[ch * c * c + p],
                    want,
                    "view {view}, channel {ch}, pixel {p}"
                );
            }
        }
    }
}
