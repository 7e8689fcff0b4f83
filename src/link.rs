//! Web links fetched exactly as written: a manifest row that is an `http(s)://` URL
//! with a query string — a pre-signed S3 or GCS URL, an Azure SAS link, a CDN URL with
//! parameters. The query is part of what the server checks (the signature is the
//! credential), so the URL is sent as given, never rebuilt from a store path, and no
//! credentials of the environment are added to it.
//!
//! One [`Links`] client per host keeps its connections; a request is retried on a
//! connection error, a timeout, `408`, `429` and `5xx`, with exponential backoff,
//! within the run's retry policy. A refused link (`403`, `404`, an expired signature)
//! is that row's error. The URL never appears in an error's text: its query may hold
//! a signature (and every text that leaves the process is redacted as well).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectMeta};
use url::Url;

use crate::store::FetchError;
use crate::store::RetryPolicy;

/// The first wait before a retry; it doubles each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// Whether a manifest's URL is a link to fetch as written: a web URL with a query.
pub fn is_link(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https") && url.query().is_some()
}

/// An HTTP client for the links of one host.
#[derive(Debug)]
pub struct Links {
    client: HttpClient,
    retry: RetryPolicy,
}

/// Why a link could not be fetched, without the URL.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LinkError(String);

impl Links {
    /// A client with the run's per-request timeout; plain `http://` only when the
    /// link asks for it.
    pub fn new(retry: RetryPolicy, allow_http: bool) -> Result<Self, String> {
        let options = ClientOptions::new()
            .with_timeout(retry.request_timeout)
            .with_allow_http(allow_http);
        let client = ReqwestConnector::default()
            .connect(&options)
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(Self { client, retry })
    }

    /// GET `link` (as written, less any `#fragment`): its bytes, and its metadata from
    /// the response headers (`ETag`, `Last-Modified`, the body's length). Refused from
    /// `Content-Length` when larger than `max_bytes`, and while reading when a body
    /// without one grows past it.
    pub async fn get(
        &self,
        link: &str,
        path: &Path,
        max_bytes: u64,
    ) -> Result<(Bytes, ObjectMeta), FetchError> {
        let mut url = Url::parse(link).map_err(|e| generic(format!("not a valid URL: {e}")))?;
        url.set_fragment(None);
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0usize;
        loop {
            match self.attempt(&url, path, max_bytes).await {
                Ok(got) => return Ok(got),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Retry(why)) => {
                    attempt += 1;
                    let late = started.elapsed() + backoff > self.retry.timeout;
                    if attempt > self.retry.max_retries || late {
                        return Err(generic(format!(
                            "{why} (after {attempt} attempts in {:.1} s)",
                            started.elapsed().as_secs_f64()
                        )));
                    }
                    tracing::debug!(attempt, %why, "retrying a link");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn attempt(
        &self,
        url: &Url,
        path: &Path,
        max_bytes: u64,
    ) -> Result<(Bytes, ObjectMeta), Attempt> {
        let request = http::Request::builder()
            .method(http::Method::GET)
            .uri(url.as_str())
            .body(HttpRequestBody::empty())
            .map_err(|e| Attempt::Final(generic(format!("not a valid request URL: {e}"))))?;
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| Attempt::Retry(format!("the request failed: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let why = format!(
                "HTTP {status} from {}",
                url.host_str().unwrap_or("the host")
            );
            return Err(match status.as_u16() {
                408 | 429 | 500..=599 => Attempt::Retry(why),
                404 | 410 => Attempt::Final(FetchError::Store(object_store::Error::NotFound {
                    path: path.to_string(),
                    source: Box::new(LinkError(why)),
                })),
                401 | 403 => {
                    Attempt::Final(FetchError::Store(object_store::Error::PermissionDenied {
                        path: path.to_string(),
                        source: Box::new(LinkError(format!(
                            "{why}: the link was refused (a pre-signed link may have expired)"
                        ))),
                    }))
                }
                _ => Attempt::Final(generic(why)),
            });
        }
        let headers = response.headers();
        let length =
            header(headers, http::header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        if let Some(size) = length.filter(|&n| n > max_bytes) {
            return Err(Attempt::Final(FetchError::TooLarge { size }));
        }
        let e_tag = header(headers, http::header::ETAG).map(str::to_string);
        let last_modified = header(headers, http::header::LAST_MODIFIED)
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or(chrono::DateTime::UNIX_EPOCH);
        let mut body = response.into_body().bytes_stream();
        let mut bytes = BytesMut::with_capacity(length.unwrap_or(0).min(max_bytes) as usize);
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| Attempt::Retry(format!("reading the response failed: {e}")))?;
            if (bytes.len() + chunk.len()) as u64 > max_bytes {
                return Err(Attempt::Final(FetchError::TooLarge {
                    size: (bytes.len() + chunk.len()) as u64,
                }));
            }
            bytes.extend_from_slice(&chunk);
        }
        let meta = ObjectMeta {
            location: path.clone(),
            last_modified,
            size: bytes.len() as u64,
            e_tag,
            version: None,
        };
        Ok((bytes.freeze(), meta))
    }
}

enum Attempt {
    Retry(String),
    Final(FetchError),
}

fn header(headers: &http::HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn generic(why: String) -> FetchError {
    FetchError::Store(object_store::Error::Generic {
        store: "HTTP",
        source: Box::new(LinkError(why)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-thread HTTP server answering each connection with the next response.
    fn serve(responses: Vec<Vec<u8>>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for response in responses {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap();
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                seen.push(head.lines().next().unwrap_or_default().to_string());
                s.write_all(&response).unwrap();
            }
            seen
        });
        (format!("http://{addr}"), handle)
    }

    fn response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            max_retries: 2,
            timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn links_are_web_urls_with_a_query() {
        let yes = Url::parse("https://b.s3.amazonaws.com/k.jpg?X-Amz-Signature=1").unwrap();
        let no = Url::parse("https://h/x.jpg").unwrap();
        let s3 = Url::parse("s3://b/k.jpg?versionId=1").unwrap();
        assert!(is_link(&yes) && !is_link(&no) && !is_link(&s3));
    }

    #[tokio::test]
    async fn a_link_is_fetched_as_written_and_retried_on_a_server_error() {
        let (base, server) = serve(vec![
            response("503 Service Unavailable", "", b""),
            response(
                "200 OK",
                "ETag: \"v1\"\r\nLast-Modified: Wed, 21 Oct 2026 07:28:00 GMT\r\n",
                b"image bytes",
            ),
        ]);
        let links = Links::new(quick(), true).unwrap();
        let link = format!("{base}/a%20b.jpg?X-Amz-Signature=abc%2Fdef&w=2#frag");
        let (bytes, meta) = links
            .get(&link, &Path::from("a b.jpg"), 1 << 20)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"image bytes");
        assert_eq!(meta.e_tag.as_deref(), Some("\"v1\""));
        assert_eq!(meta.size, 11);
        assert_eq!(meta.last_modified.to_rfc3339(), "2026-10-21T07:28:00+00:00");
        let seen = server.join().unwrap();
        let want = "GET /a%20b.jpg?X-Amz-Signature=abc%2Fdef&w=2 HTTP/1.1";
        assert_eq!(seen, vec![want.to_string(), want.to_string()]);
    }

    #[tokio::test]
    async fn refused_missing_and_oversized_links_say_so_without_the_url() {
        let (base, server) = serve(vec![
            response("403 Forbidden", "", b"<Error>expired</Error>"),
            response("404 Not Found", "", b""),
            response("200 OK", "", &[0u8; 100]),
        ]);
        let links = Links::new(quick(), true).unwrap();
        let link = format!("{base}/x.jpg?sig=SECRETSIG");
        let p = Path::from("x.jpg");
        let refused = links.get(&link, &p, 1 << 20).await.unwrap_err();
        let FetchError::Store(e) = refused else {
            panic!("not a store error")
        };
        let text = e.to_string();
        assert!(text.contains("403") && text.contains("expired"), "{text}");
        assert!(!text.contains("SECRETSIG"), "{text}");
        let FetchError::Store(missing) = links.get(&link, &p, 1 << 20).await.unwrap_err() else {
            panic!("not a store error")
        };
        assert!(crate::store::is_object_error(&missing), "{missing}");
        let big = links.get(&link, &p, 10).await.unwrap_err();
        assert!(matches!(big, FetchError::TooLarge { size: 100 }));
        server.join().unwrap();
    }
}
