//! The stores a run reads from by URL: each manifest row's bucket, container or web
//! host, built once, kept in a bounded table (least recently used dropped first), each
//! with its own bound on requests in flight. Manifests and the report's thumbnails
//! resolve their URLs here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStoreScheme;
use url::Url;

use crate::store::{self, FetchError, Location, RetryPolicy};

/// One store a manifest's rows point into: a bucket, container or web host.
#[derive(Debug)]
pub struct Host {
    /// How its objects are fetched.
    pub access: Access,
    /// Requests to this store in flight at once.
    pub slots: tokio::sync::Semaphore,
    /// A plain web host: a failed fetch is that URL's own (an error row), never
    /// "the store is down".
    pub web: bool,
}

/// How a [`Host`]'s objects are fetched.
#[derive(Debug)]
pub enum Access {
    /// Through the store, by the object's path (and the store's credentials).
    Store(Location),
    /// Web links with a query string, each fetched exactly as written (see
    /// [`crate::link`]).
    Links(crate::link::Links),
}

impl Host {
    /// Fetch one of its objects (`uri` as the manifest wrote it, `path` its path in
    /// the store) once a slot of the host is free; refused when larger than
    /// `max_bytes`.
    pub async fn get(
        &self,
        uri: &str,
        path: &Path,
        max_bytes: u64,
    ) -> std::result::Result<(bytes::Bytes, object_store::ObjectMeta), FetchError> {
        let _slot = self.slots.acquire().await.ok();
        match &self.access {
            Access::Store(location) => store::get_within(&location.store, path, max_bytes).await,
            Access::Links(links) => links.get(uri, path, max_bytes).await,
        }
    }

    /// The store, when the host is one (links have none).
    pub fn location(&self) -> Option<&Location> {
        match &self.access {
            Access::Store(l) => Some(l),
            Access::Links(_) => None,
        }
    }
}

/// How many stores a manifest run keeps open at once. A list of web links can name
/// hundreds of thousands of hosts, and each store holds its own HTTP client; beyond
/// this many, the least recently used store is dropped (requests in flight keep
/// theirs until they finish) and built again if a later row needs it.
pub const MAX_OPEN_HOSTS: usize = 1024;

/// The stores a manifest's rows point into, each built on first use.
pub struct Hosts {
    /// The manifest's own location; rows in its store share it.
    manifest: Location,
    retry: RetryPolicy,
    per_host: usize,
    max_open: usize,
    /// Each store, with when it was last asked for (a counter).
    known: Mutex<HashMap<String, (Arc<Host>, u64)>>,
    uses: std::sync::atomic::AtomicU64,
}

impl Hosts {
    pub fn new(manifest: Location, retry: RetryPolicy, per_host: usize) -> Self {
        Self {
            manifest,
            retry,
            per_host: per_host.max(1),
            max_open: MAX_OPEN_HOSTS,
            known: Mutex::new(HashMap::new()),
            uses: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The same, keeping at most `max_open` stores open (at least 1).
    pub fn with_max_open(mut self, max_open: usize) -> Self {
        self.max_open = max_open.max(1);
        self
    }

    /// How many stores have been built so far.
    pub fn len(&self) -> usize {
        self.known.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store holding `uri` and the object's path in it, or why it cannot be
    /// fetched.
    pub fn resolve(&self, uri: &str) -> std::result::Result<(Arc<Host>, Path), String> {
        let (root, path, scheme, link) = split_uri(uri)?;
        let mut known = self
            .known
            .lock()
            .map_err(|_| "the store table is poisoned".to_string())?;
        let now = self.uses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some((host, used)) = known.get_mut(&root) {
            *used = now;
            return Ok((host.clone(), path));
        }
        let web = scheme == ObjectStoreScheme::Http || link;
        let access = if link {
            let links = crate::link::Links::new(self.retry, root.starts_with("link http://"))
                .map_err(|e| format!("cannot open its host: {e}"))?;
            Access::Links(links)
        } else if root == self.manifest.root {
            Access::Store(Location::from_store(
                self.manifest.store.clone(),
                root.clone(),
                "",
            ))
        } else {
            Access::Store(match scheme {
                ObjectStoreScheme::Local => {
                    Location::from_store(Arc::new(LocalFileSystem::new()), "file://", "")
                }
                ObjectStoreScheme::Memory => {
                    return Err(
                        "a memory:// URI names a store that exists only inside one process"
                            .to_string(),
                    )
                }
                _ => Location::parse(&root, store::Access::Read, self.retry)
                    .map_err(|e| format!("cannot open its store: {e}"))?,
            })
        };
        let host = Arc::new(Host {
            access,
            slots: tokio::sync::Semaphore::new(self.per_host),
            web,
        });
        if known.len() >= self.max_open {
            let oldest = known
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                known.remove(&k);
            }
        }
        known.insert(root, (host.clone(), now));
        Ok((host, path))
    }
}

/// The parts of a manifest row's URI: its store's root, the object's path in that
/// store (decoded once from the URL), the store's kind, and whether it is a link
/// fetched as written (then the root is `link ` and the URL's origin).
type Split = (String, Path, ObjectStoreScheme, bool);

/// Split a URI into its store's root (`s3://bucket`, `https://host:port`,
/// `https://account.blob.core.windows.net/container`, `file://`), the object's path
/// in that store, and the store's kind. Absolute local paths are taken as `file://`.
/// A web URL with a query string is a link (see [`crate::link`]), whatever its host.
fn split_uri(uri: &str) -> std::result::Result<Split, String> {
    if uri.starts_with('/') {
        let url = Url::from_file_path(uri).map_err(|_| "not a valid absolute path".to_string())?;
        return split_url(&url);
    }
    if !uri.contains("://") {
        return Err(
            "not a URL: manifest rows need a full URL (s3://, gs://, az://, https://, file://) or an absolute path"
                .to_string(),
        );
    }
    let url = Url::parse(uri).map_err(|e| format!("not a valid URL: {e}"))?;
    split_url(&url)
}

fn split_url(url: &Url) -> std::result::Result<Split, String> {
    if crate::link::is_link(url) {
        let path = Path::from_url_path(url.path()).map_err(|e| e.to_string())?;
        if path.as_ref().is_empty() {
            return Err("the URL names no object".to_string());
        }
        let origin = format!("link {}", &url[..url::Position::BeforePath]);
        return Ok((origin, path, ObjectStoreScheme::Http, true));
    }
    let (scheme, path) = ObjectStoreScheme::parse(url).map_err(|e| e.to_string())?;
    if path.as_ref().is_empty() {
        return Err("the URL names no object".to_string());
    }
    // The URL's path may start with segments that name the bucket or container
    // (`https://s3.region.amazonaws.com/bucket/key`); they belong to the root.
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    let extra = segments.len().saturating_sub(path.parts().count());
    let mut root = url[..url::Position::BeforePath].to_string();
    for segment in &segments[..extra] {
        root.push('/');
        root.push_str(segment);
    }
    Ok((root, path, scheme, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_split_into_store_root_and_path() {
        let cases = [
            ("s3://bucket/a/b.jpg", "s3://bucket", "a/b.jpg"),
            ("gs://bkt/x.png", "gs://bkt", "x.png"),
            ("az://container/dir/x.png", "az://container", "dir/x.png"),
            (
                "abfss://container@acct.dfs.core.windows.net/dir/x.png",
                "abfss://container@acct.dfs.core.windows.net",
                "dir/x.png",
            ),
            (
                "https://acct.blob.core.windows.net/container/x.png",
                "https://acct.blob.core.windows.net/container",
                "x.png",
            ),
            (
                "https://s3.us-east-1.amazonaws.com/bucket/k/x.png",
                "https://s3.us-east-1.amazonaws.com/bucket",
                "k/x.png",
            ),
            (
                "http://127.0.0.1:8080/img/a%20b.jpg",
                "http://127.0.0.1:8080",
                "img/a b.jpg",
            ),
            // Decoded exactly once: `%2520` is a key holding `%20`.
            ("s3://b/p%2520q%23r%3Fs.jpg", "s3://b", "p%20q#r?s.jpg"),
            ("file:///d/caf%C3%A9%20x.jpg", "file://", "d/café x.jpg"),
            // Links: fetched as written, one client per origin.
            (
                "https://b.s3.amazonaws.com/k/x.jpg?X-Amz-Signature=1",
                "link https://b.s3.amazonaws.com",
                "k/x.jpg",
            ),
            ("https://h/x.jpg?w=200", "link https://h", "x.jpg"),
            ("file:///data/x.jpg", "file://", "data/x.jpg"),
            ("/data/x.jpg", "file://", "data/x.jpg"),
        ];
        for (uri, root, path) in cases {
            let (r, p, _, _) = split_uri(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert_eq!((r.as_str(), p.as_ref()), (root, path), "{uri}");
        }
        for bad in [
            "photos/x.jpg",
            "https://h/?w=200",
            "s3://bucket",
            "ht tp://x",
        ] {
            assert!(split_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_are_built_once_and_share_the_manifest_store() {
        let manifest = Location::memory();
        let hosts = Hosts::new(manifest.clone(), RetryPolicy::default(), 4);
        let (a, _) = hosts.resolve("memory:///in/a.jpg").unwrap();
        assert!(Arc::ptr_eq(&a.location().unwrap().store, &manifest.store));
        let (b, p) = hosts.resolve("http://127.0.0.1:9/x/y.jpg").unwrap();
        let (c, _) = hosts.resolve("http://127.0.0.1:9/z.jpg").unwrap();
        assert!(Arc::ptr_eq(&b, &c));
        assert!(b.web);
        assert_eq!(p.as_ref(), "x/y.jpg");
        assert_eq!(hosts.len(), 2);
        assert_eq!(b.slots.available_permits(), 4);
    }

    #[test]
    fn open_stores_are_bounded_least_recently_used_first() {
        let hosts = Hosts::new(Location::memory(), RetryPolicy::default(), 2).with_max_open(2);
        let (a, _) = hosts.resolve("http://127.0.0.1:1/a.jpg").unwrap();
        hosts.resolve("http://127.0.0.1:2/b.jpg").unwrap();
        // Using :1 again makes :2 the least recently used.
        let (again, _) = hosts.resolve("http://127.0.0.1:1/c.jpg").unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        hosts.resolve("http://127.0.0.1:3/d.jpg").unwrap();
        assert_eq!(hosts.len(), 2);
        // :1 stayed open; :2 was dropped and is built anew.
        let (still, _) = hosts.resolve("http://127.0.0.1:1/e.jpg").unwrap();
        assert!(Arc::ptr_eq(&a, &still));
        assert_eq!(hosts.len(), 2);
    }
}
