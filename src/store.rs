//! Object-store locations: one user string (a plain path or a URL) becomes a store, a
//! prefix inside it, and the base URL used to print full object URIs.
//!
//! Credentials and endpoints come from the environment the way each cloud's own tools
//! read them (`AWS_*`, `GOOGLE_*`, `AZURE_*`); nothing here reads them from a file.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreExt, ObjectStoreScheme, RetryConfig,
};
use url::Url;

use crate::error::{Error, Result};

/// Retry policy applied to every remote store.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RetryPolicy {
    /// How many times a failed request is retried.
    pub max_retries: usize,
    /// The longest time spent retrying one request.
    pub timeout: Duration,
    /// The longest one attempt may take (connect to last byte); a stalled response
    /// is abandoned and retried after this.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 10,
            timeout: Duration::from_secs(180),
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    fn config(self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: self.max_retries,
            retry_timeout: self.timeout,
        }
    }

    /// The per-attempt timeout as object_store's configuration value.
    fn request_timeout_value(self) -> String {
        format!("{}ms", self.request_timeout.as_millis().max(1))
    }
}

/// The credential variables each store reads, for messages that say what to set.
fn credential_help(root: &str) -> Option<(&'static [&'static str], &'static str)> {
    let scheme = root.split("://").next().unwrap_or_default();
    match scheme {
        "s3" | "s3a" => Some((
            &["AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_SKIP_SIGNATURE"],
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary credentials), run where a role is attached (AWS_WEB_IDENTITY_TOKEN_FILE, ECS task role or EC2 instance profile), or set AWS_SKIP_SIGNATURE=true for a public bucket",
        )),
        "az" | "azure" | "abfs" | "abfss" | "adl" => Some((
            &["AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_SAS_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_TOKEN", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_STORAGE_USE_EMULATOR", "AZURE_SKIP_SIGNATURE"],
            "set AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_KEY, or a service principal (AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_TENANT_ID), or run with a managed identity",
        )),
        "gs" => Some((
            &["GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH", "GOOGLE_SERVICE_ACCOUNT_KEY", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_SKIP_SIGNATURE"],
            "set GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT_PATH) to a service-account key file, or run where a service account is attached",
        )),
        _ => None,
    }
}

/// Turn a store error into the job's error, saying what to do when the cause is
/// credentials: refused credentials (401/403), or none in the environment and none
/// from the platform (object_store then fails while fetching a token).
pub fn store_error(location: &Location, source: object_store::Error) -> Error {
    let where_ = location.to_string();
    let help = credential_help(&location.root);
    match (&source, help) {
        (
            object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. },
            Some((_, what)),
        ) => Error::Credentials {
            location: where_,
            hint: format!("the store refused the credentials (wrong, expired, or without permission on this bucket); {what}"),
            source,
        },
        (object_store::Error::Generic { .. }, Some((vars, what)))
            if !vars.iter().any(|v| std::env::var_os(v).is_some()) =>
        {
            Error::Credentials {
                location: where_,
                hint: format!("no credentials found: none in the environment and the platform offered none (or the store did not answer); {what}"),
                source,
            }
        }
        _ => Error::Store {
            location: where_,
            source,
        },
    }
}

/// Whether a store error means "this one object", not "the store": a missing
/// object (deleted since the listing), a precondition, a path the store rejects.
pub fn is_object_error(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotModified { .. }
    )
}

/// Whether a store error means the credentials are wrong: no later request can
/// succeed, so the job stops at once.
pub fn is_credentials_error(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Unauthenticated { .. })
}

/// A place in an object store: the store, a prefix inside it, and how to print URIs.
#[derive(Clone)]
pub struct Location {
    /// The store the prefix lives in.
    pub store: Arc<dyn ObjectStore>,
    /// Prefix inside the store (no leading or trailing slash).
    pub prefix: Path,
    /// The URL of the store's root, e.g. `s3://bucket` or `file://`; object URIs are
    /// this followed by `/` and the object's path.
    pub root: String,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location")
            .field("root", &self.root)
            .field("prefix", &self.prefix.as_ref())
            .finish()
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri(&self.prefix))
    }
}

/// Whether a location is about to be read from or written to; a local output folder
/// is created when missing, a local input folder must exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Location {
    /// A location over an existing store, e.g. an [`InMemory`] store in tests or a
    /// store the caller configured by hand.
    pub fn from_store(store: Arc<dyn ObjectStore>, root: impl Into<String>, prefix: &str) -> Self {
        let root = root.into();
        // `scheme://` stays as it is (paths are appended after one more `/`, as for
        // `file:///abs/path`); `s3://bucket/` loses its trailing slash.
        let root = if root.ends_with("://") {
            root
        } else {
            root.trim_end_matches('/').to_string()
        };
        Self {
            store,
            prefix: Path::from(prefix.trim_matches('/')),
            root,
        }
    }

    /// A fresh, empty in-memory location (for tests and examples).
    pub fn memory() -> Self {
        Self::from_store(Arc::new(InMemory::new()), "memory://", "")
    }

    /// Parse a plain path or a URL (`file://`, `s3://`, `gs://`, `az://`, `abfss://`,
    /// `http(s)://`, `memory://`).
    pub fn parse(input: &str, access: Access, retry: RetryPolicy) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidLocation {
            location: input.to_string(),
            reason,
        };
        if input.trim().is_empty() {
            return Err(invalid("the location is empty".into()));
        }
        if !input.contains("://") {
            return Self::local(std::path::Path::new(input), input, access);
        }
        let url = Url::parse(input).map_err(|e| invalid(e.to_string()))?;
        let (scheme, path) = ObjectStoreScheme::parse(&url).map_err(|e| invalid(e.to_string()))?;
        match scheme {
            ObjectStoreScheme::Local => {
                let p = url
                    .to_file_path()
                    .map_err(|_| invalid("not a valid file:// URL".into()))?;
                Self::local(&p, input, access)
            }
            ObjectStoreScheme::Memory => Ok(Self::memory()),
            ObjectStoreScheme::AmazonS3 => {
                let store = AmazonS3Builder::from_env()
                    .with_url(input)
                    .with_retry(retry.config())
                    .with_config(
                        AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                        retry.request_timeout_value(),
                    )
                    .build()
                    .map_err(|e| Error::store(input, e))?;
                let root = format!("s3://{}", bucket_of(&url));
                Ok(Self::new_remote(Arc::new(store), root, path))
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                let store = GoogleCloudStorageBuilder::from_env()
                    .with_url(input)
                    .with_retry(retry.config())
                    .with_config(
                        GoogleConfigKey::Client(ClientConfigKey::Timeout),
                        retry.request_timeout_value(),
                    )
                    .build()
                    .map_err(|e| Error::store(input, e))?;
                let root = format!("gs://{}", url.host_str().unwrap_or_default());
                Ok(Self::new_remote(Arc::new(store), root, path))
            }
            ObjectStoreScheme::MicrosoftAzure => {
                let store = MicrosoftAzureBuilder::from_env()
                    .with_url(input)
                    .with_retry(retry.config())
                    .with_config(
                        AzureConfigKey::Client(ClientConfigKey::Timeout),
                        retry.request_timeout_value(),
                    )
                    .build()
                    .map_err(|e| Error::store(input, e))?;
                let root = azure_root(&url, input, &path);
                Ok(Self::new_remote(Arc::new(store), root, path))
            }
            ObjectStoreScheme::Http => {
                let mut base = url.clone();
                base.set_path("/");
                base.set_query(None);
                // A plain http:// URL was asked for by name: allow it.
                let store = HttpBuilder::new()
                    .with_url(base.as_str())
                    .with_retry(retry.config())
                    .with_config(ClientConfigKey::Timeout, retry.request_timeout_value())
                    .with_config(
                        ClientConfigKey::AllowHttp,
                        (url.scheme() == "http").to_string(),
                    )
                    .build()
                    .map_err(|e| Error::store(input, e))?;
                let root = base.as_str().trim_end_matches('/').to_string();
                Ok(Self::new_remote(Arc::new(store), root, path))
            }
            _ => Err(invalid(format!("unsupported scheme {:?}", url.scheme()))),
        }
    }

    fn new_remote(store: Arc<dyn ObjectStore>, root: String, prefix: Path) -> Self {
        Self {
            store,
            prefix,
            root,
        }
    }

    fn local(path: &std::path::Path, input: &str, access: Access) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidLocation {
            location: input.to_string(),
            reason,
        };
        match access {
            Access::Read => {
                if !path.exists() {
                    return Err(Error::Input(format!(
                        "input path {} does not exist; pass an existing folder or a URL such as s3://bucket/prefix/",
                        path.display()
                    )));
                }
            }
            Access::Write => {
                std::fs::create_dir_all(path).map_err(|e| Error::Output {
                    location: path.display().to_string(),
                    reason: format!("cannot create the folder: {e}"),
                })?;
            }
        }
        let abs = std::fs::canonicalize(path)
            .map_err(|e| invalid(format!("cannot resolve the path: {e}")))?;
        let prefix = Path::from_absolute_path(&abs).map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            store: Arc::new(LocalFileSystem::new()),
            prefix,
            root: "file://".to_string(),
        })
    }

    /// The full URI of an object path in this location's store: an RFC 3986 URL, each
    /// segment of the key percent-encoded where it needs to be (see [`encode_key`]), so
    /// that the URI names the same object when it is read back, e.g. in a manifest.
    pub fn uri(&self, path: &Path) -> String {
        format!("{}/{}", self.root, encode_key(path.as_ref()))
    }

    /// A path below this location's prefix.
    pub fn child(&self, relative: &str) -> Path {
        let rel = relative.trim_matches('/');
        if self.prefix.as_ref().is_empty() {
            Path::from(rel)
        } else if rel.is_empty() {
            self.prefix.clone()
        } else {
            Path::from(format!("{}/{}", self.prefix, rel))
        }
    }

    /// The part of `path` below this location's prefix (the object's key relative to
    /// the input root).
    pub fn relative<'a>(&self, path: &'a Path) -> &'a str {
        let p = path.as_ref();
        let pre = self.prefix.as_ref();
        if pre.is_empty() {
            return p;
        }
        p.strip_prefix(pre)
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(p)
    }

    /// Whether this location is on the local file system.
    pub fn is_local(&self) -> bool {
        self.root == "file://"
    }
}

/// What a key segment keeps as it is in a URI: RFC 3986's `pchar` less the
/// percent-encoded triplets, i.e. the unreserved characters, the sub-delimiters and
/// `:` `@`. Everything else — space, `%`, `?`, `#`, quotes, brackets, control
/// characters and every non-ASCII byte — is percent-encoded.
const KEY_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// A raw object key (`a/p%20q #1.jpg`) as the path of a URL (`a/p%2520q%20%231.jpg`):
/// each `/`-separated segment percent-encoded with [`KEY_SEGMENT`]. A key of plain
/// characters comes back unchanged. [`Path::from_url_path`] is its inverse.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for (i, segment) in key.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.extend(percent_encoding::utf8_percent_encode(segment, KEY_SEGMENT));
    }
    out
}

fn bucket_of(url: &Url) -> String {
    match url.scheme() {
        "s3" | "s3a" => url.host_str().unwrap_or_default().to_string(),
        _ => {
            // https://bucket.s3.region.amazonaws.com/... or https://s3.region.amazonaws.com/bucket/...
            let host = url.host_str().unwrap_or_default();
            if host.starts_with("s3") {
                url.path_segments()
                    .and_then(|mut s| s.next())
                    .unwrap_or_default()
                    .to_string()
            } else {
                host.split('.').next().unwrap_or_default().to_string()
            }
        }
    }
}

fn azure_root(url: &Url, input: &str, path: &Path) -> String {
    // Keep the user's spelling of the container/account part and append object paths to it.
    let full = input.trim_end_matches('/');
    let p = path.as_ref();
    if !p.is_empty() {
        if let Some(stripped) = full.strip_suffix(p) {
            return stripped.trim_end_matches('/').to_string();
        }
    }
    let _ = url;
    full.to_string()
}

/// Why a fetch produced no bytes.
#[derive(Debug)]
pub enum FetchError {
    /// The store's error (object_store's type, so the caller can tell one bad object
    /// from a failing store).
    Store(object_store::Error),
    /// The object is larger than the limit (known from the response's headers; the
    /// body is not read).
    TooLarge { size: u64 },
}

/// GET `path` from `store`, refused from the response headers (the body unread) when
/// larger than `max_bytes`.
pub async fn get_within(
    store: &Arc<dyn object_store::ObjectStore>,
    path: &Path,
    max_bytes: u64,
) -> std::result::Result<(bytes::Bytes, object_store::ObjectMeta), FetchError> {
    let got = store.get(path).await.map_err(FetchError::Store)?;
    if got.meta.size > max_bytes {
        return Err(FetchError::TooLarge {
            size: got.meta.size,
        });
    }
    let meta = got.meta.clone();
    let bytes = got.bytes().await.map_err(FetchError::Store)?;
    Ok((bytes, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_local_input_names_the_path() {
        let err = Location::parse("/no/such/folder", Access::Read, RetryPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("/no/such/folder"), "{err}");
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn s3_url_keeps_bucket_and_prefix() {
        let loc = Location::parse(
            "s3://my-bucket/photos/2024/",
            Access::Read,
            RetryPolicy::default(),
        )
        .unwrap();
        assert_eq!(loc.root, "s3://my-bucket");
        assert_eq!(loc.prefix.as_ref(), "photos/2024");
        assert_eq!(
            loc.uri(&loc.child("a/b.jpg")),
            "s3://my-bucket/photos/2024/a/b.jpg"
        );
    }

    #[test]
    fn local_paths_print_as_file_urls() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::parse(
            dir.path().to_str().unwrap(),
            Access::Read,
            RetryPolicy::default(),
        )
        .unwrap();
        let uri = loc.uri(&loc.child("x.jpg"));
        assert!(uri.starts_with("file:///"), "{uri}");
        assert!(uri.ends_with("/x.jpg"), "{uri}");
        assert_eq!(loc.relative(&loc.child("sub/x.jpg")), "sub/x.jpg");
    }

    #[test]
    fn uris_percent_encode_what_the_key_needs_and_read_back_to_the_key() {
        let loc = Location::from_store(Arc::new(InMemory::new()), "s3://b", "");
        let keys = [
            ("plain/a-b_c.~d.jpg", "s3://b/plain/a-b_c.~d.jpg"),
            ("sp ace/x.jpg", "s3://b/sp%20ace/x.jpg"),
            ("p%20q.jpg", "s3://b/p%2520q.jpg"),
            ("what?.jpg", "s3://b/what%3F.jpg"),
            ("x#y.jpg", "s3://b/x%23y.jpg"),
            (
                "a+b=c,d;e@f:g!h$i&j'(k)*.jpg",
                "s3://b/a+b=c,d;e@f:g!h$i&j'(k)*.jpg",
            ),
            ("caf\u{e9}/\u{6771}.jpg", "s3://b/caf%C3%A9/%E6%9D%B1.jpg"),
            (
                "q\"<>[]{}|\\^`.jpg",
                "s3://b/q%22%3C%3E%5B%5D%7B%7D%7C%5C%5E%60.jpg",
            ),
        ];
        for (key, want) in keys {
            let uri = loc.uri(&Path::parse(key).unwrap());
            assert_eq!(uri, want, "{key}");
            let url = Url::parse(&uri).unwrap();
            assert!(url.query().is_none() && url.fragment().is_none(), "{uri}");
            let (_, back) = ObjectStoreScheme::parse(&url).unwrap();
            assert_eq!(back.as_ref(), key, "{uri}");
        }
    }

    #[test]
    fn unknown_scheme_is_refused() {
        let err = Location::parse("ftp://host/x", Access::Read, RetryPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ftp://host/x"), "{err}");
    }
}
