//! Thumbnails for the page: each image fetched by its `uri` from whichever store holds
//! it (the run's input may have been a bucket, a folder or a list of URLs), decoded by
//! the project's bounded decoder, shrunk and encoded as a JPEG `data:` URI. An image
//! that cannot be fetched or decoded gets the reason instead, shown as a placeholder.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::decode::{self, DecodeLimits};
use crate::hosts::Hosts;
use crate::redact::redact;
use crate::store::FetchError;
use crate::store::{Location, RetryPolicy};

/// How thumbnails are made.
#[derive(Debug, Clone, Copy)]
pub struct ThumbnailOptions {
    /// Longest side in pixels (images are never enlarged). Default 128.
    pub size: u32,
    /// Objects larger than this many bytes are not fetched. Default 64 MiB.
    pub max_bytes: u64,
    /// Images declaring more pixels than this are not decoded (the run's default cap).
    pub max_pixels: u64,
    /// Images fetched and decoded at once. Default 8.
    pub concurrency: usize,
    /// Longest time one image may take, fetch and decode together. Default 30 s.
    pub timeout: Duration,
}

impl Default for ThumbnailOptions {
    fn default() -> Self {
        Self {
            size: 128,
            max_bytes: 64 << 20,
            max_pixels: decode::DEFAULT_MAX_PIXELS,
            concurrency: 8,
            timeout: Duration::from_secs(30),
        }
    }
}

/// One picture on the page.
#[derive(Debug, Clone, PartialEq)]
pub struct Thumbnail {
    pub uri: String,
    /// What the page says under it (label and score, or the row's error).
    pub caption: String,
    /// A `data:image/jpeg;base64,…` URI, or why there is no picture.
    pub image: Result<String, String>,
}

/// Retries for thumbnails: a report should not wait minutes on one unreachable store.
fn retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 2,
        timeout: Duration::from_secs(20),
        request_timeout: Duration::from_secs(20),
    }
}

/// Thumbnails of `items` (`(uri, caption)`), in their order. `data` is the dataset's
/// location: URIs in its store reuse it, others open their own (credentials from the
/// environment, as a run's).
pub async fn fetch_all(
    data: &Location,
    items: Vec<(String, String)>,
    options: ThumbnailOptions,
) -> Vec<Thumbnail> {
    let hosts = Arc::new(Hosts::new(
        data.clone(),
        retry(),
        options.concurrency.max(1),
    ));
    futures::stream::iter(items)
        .map(|(uri, caption)| {
            let hosts = hosts.clone();
            async move {
                let image =
                    match tokio::time::timeout(options.timeout, one(&hosts, &uri, options)).await {
                        Ok(result) => result,
                        Err(_) => Err(format!(
                            "timed out after {} s",
                            options.timeout.as_secs_f64()
                        )),
                    };
                Thumbnail {
                    uri,
                    caption,
                    image: image.map_err(|reason| redact(&reason).into_owned()),
                }
            }
        })
        .buffered(options.concurrency.max(1))
        .collect()
        .await
}

async fn one(hosts: &Hosts, uri: &str, options: ThumbnailOptions) -> Result<String, String> {
    let (host, path) = hosts
        .resolve(uri)
        .map_err(|reason| format!("cannot fetch: {reason}"))?;
    let (bytes, _) = host
        .get(uri, &path, options.max_bytes)
        .await
        .map_err(|e| match e {
            FetchError::Store(e) => fetch_reason(&e),
            FetchError::TooLarge { size } => format!(
                "object is {size} bytes, above the {} bytes fetched for a thumbnail",
                options.max_bytes
            ),
        })?;
    tokio::task::spawn_blocking(move || thumbnail(&bytes, options))
        .await
        .map_err(|e| format!("thumbnail task failed: {e}"))?
}

fn fetch_reason(e: &object_store::Error) -> String {
    match e {
        object_store::Error::NotFound { .. } => "not found in the store".to_string(),
        e => format!("fetch failed: {e}"),
    }
}

/// `bytes` decoded, shrunk to `options.size` on its longest side and encoded as a JPEG
/// `data:` URI; or why not.
pub fn thumbnail(bytes: &[u8], options: ThumbnailOptions) -> Result<String, String> {
    let limits = DecodeLimits {
        max_pixels: options.max_pixels,
    };
    let size = options.size.max(1);
    let img = decode::decode_for_size(bytes, limits, size).map_err(|e| e.to_string())?;
    catch_unwind(AssertUnwindSafe(|| {
        let (w, h) = fit(img.width, img.height, size);
        let full = image::RgbImage::from_raw(img.width, img.height, img.pixels)
            .ok_or_else(|| "decoder returned a short buffer".to_string())?;
        let small = if (w, h) == full.dimensions() {
            full
        } else {
            image::imageops::thumbnail(&full, w, h)
        };
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(Cursor::new(&mut jpeg), 82)
            .encode_image(&small)
            .map_err(|e| format!("encoding the thumbnail failed: {e}"))?;
        Ok(format!("data:image/jpeg;base64,{}", base64(&jpeg)))
    }))
    .unwrap_or_else(|_| Err("making the thumbnail crashed on this image".to_string()))
}

/// `(width, height)` scaled so the longest side is at most `size`, never enlarged,
/// never zero.
pub fn fit(width: u32, height: u32, size: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= size {
        return (width.max(1), height.max(1));
    }
    let scale = |side: u32| {
        let scaled = u64::from(side) * u64::from(size) / u64::from(longest);
        u32::try_from(scaled).unwrap_or(size).max(1)
    };
    (scale(width), scale(height))
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::path::Path;
    use object_store::{ObjectStoreExt, PutPayload};

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xfe]), "+//+");
    }

    #[test]
    fn fit_keeps_the_aspect_ratio_and_never_enlarges() {
        assert_eq!(fit(1024, 768, 128), (128, 96));
        assert_eq!(fit(768, 1024, 128), (96, 128));
        assert_eq!(fit(64, 32, 128), (64, 32));
        assert_eq!(fit(10_000, 1, 128), (128, 1));
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        });
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    fn decode_data_uri(uri: &str) -> image::DynamicImage {
        let b64 = uri.strip_prefix("data:image/jpeg;base64,").unwrap();
        // Decode base64 by hand (the test checks the encoder's output is valid).
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits = 0u32;
        let mut nbits = 0;
        let mut bytes = Vec::new();
        for c in b64.bytes().filter(|&c| c != b'=') {
            let v = alphabet.iter().position(|&a| a == c).unwrap() as u32;
            bits = (bits << 6) | v;
            nbits += 6;
            if nbits >= 8 {
                nbits -= 8;
                bytes.push((bits >> nbits) as u8);
            }
        }
        image::load_from_memory(&bytes).unwrap()
    }

    #[test]
    fn thumbnails_are_small_jpegs_and_bad_files_give_a_reason() {
        let uri = thumbnail(&png(300, 200), ThumbnailOptions::default()).unwrap();
        let img = decode_data_uri(&uri);
        assert_eq!((img.width(), img.height()), (128, 85));
        let err = thumbnail(b"not an image at all", ThumbnailOptions::default()).unwrap_err();
        assert!(err.contains("not a recognised image format"), "{err}");
        assert_eq!(
            thumbnail(b"", ThumbnailOptions::default()).unwrap_err(),
            "empty object (0 bytes)"
        );
    }

    #[tokio::test]
    async fn fetches_by_uri_and_reports_what_is_missing() {
        let loc = Location::memory();
        loc.store
            .put(&Path::from("in/a.png"), PutPayload::from(png(40, 20)))
            .await
            .unwrap();
        let items = vec![
            ("memory:///in/a.png".to_string(), "a".to_string()),
            ("memory:///in/gone.png".to_string(), "gone".to_string()),
            ("no-scheme.png".to_string(), "bad".to_string()),
        ];
        let got = fetch_all(&loc, items, ThumbnailOptions::default()).await;
        assert_eq!(got.len(), 3);
        assert!(got[0]
            .image
            .as_ref()
            .unwrap()
            .starts_with("data:image/jpeg;base64,"));
        assert_eq!(got[1].image, Err("not found in the store".to_string()));
        assert!(got[2]
            .image
            .as_ref()
            .unwrap_err()
            .starts_with("cannot fetch"));
        assert_eq!(got[2].caption, "bad");
    }
}
