//! Object-store URL → streamed listing → filtered, sharded object references →
//! bounded GETs. Nothing here collects the whole listing.

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use globset::{Glob, GlobSet, GlobSetBuilder};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::error::{Error, Hint, Result, Setting};
use crate::store::Location;
pub use crate::store::{get_within, FetchError};

/// File extensions read by default (case-insensitive).
pub const DEFAULT_EXTENSIONS: &[&str] =
    &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// This worker's part of the key space: objects whose stable key hash modulo
/// `count` equals `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("shard {s:?} must look like INDEX/COUNT, e.g. 0/4"))?;
        let index: u32 = i
            .trim()
            .parse()
            .map_err(|_| format!("shard index {i:?} is not a number"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("shard count {n:?} is not a number"))?;
        Shard::new(index, count)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    pub fn new(index: u32, count: u32) -> std::result::Result<Self, String> {
        if count == 0 || index >= count {
            return Err(format!(
                "shard {index}/{count} is out of range: the index must be below the count"
            ));
        }
        Ok(Self { index, count })
    }

    /// Whether `key` belongs to this shard (FNV-1a, stable across runs and machines).
    pub fn owns(&self, key: &str) -> bool {
        if self.count == 1 {
            return true;
        }
        (crate::stable::fnv1a64(key.as_bytes()) % u64::from(self.count)) as u32 == self.index
    }
}

/// Which objects to read.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Lower-case extensions; empty means every object.
    pub extensions: Vec<String>,
    /// Globs over the key relative to the input prefix; empty means all.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Stop after this many selected objects.
    pub limit: Option<u64>,
    pub shard: Shard,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            extensions: DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
            include: Vec::new(),
            exclude: Vec::new(),
            limit: None,
            shard: Shard::default(),
        }
    }
}

fn globset(patterns: &[String], what: &str) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = Glob::new(p)
            .map_err(|e| Error::Config(format!("{what} pattern {p:?} is not a valid glob: {e}")))?;
        b.add(g);
    }
    b.build()
        .map(Some)
        .map_err(|e| Error::Config(format!("{what} patterns: {e}")))
}

/// A compiled [`Selection`].
#[derive(Debug, Clone)]
pub struct Filter {
    extensions: Vec<String>,
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    shard: Shard,
}

impl Filter {
    pub fn new(sel: &Selection) -> Result<Self> {
        Ok(Self {
            extensions: sel
                .extensions
                .iter()
                .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                .collect(),
            include: globset(&sel.include, "include")?,
            exclude: globset(&sel.exclude, "exclude")?,
            shard: sel.shard,
        })
    }

    /// Whether the object with relative key `key` is selected (before sharding).
    pub fn matches(&self, key: &str) -> bool {
        self.verdict(key) == Verdict::Selected
    }

    /// Which filter, if any, removes `key` (sharding included).
    pub fn verdict(&self, key: &str) -> Verdict {
        let name = key.rsplit('/').next().unwrap_or(key);
        if name.starts_with('.') {
            return Verdict::Hidden;
        }
        if !self.extensions.is_empty() {
            let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
            if !ext.is_some_and(|e| self.extensions.contains(&e)) {
                return Verdict::Extension;
            }
        }
        self.manifest_verdict(key)
    }

    /// Which filter, if any, removes a manifest's `uri`: the rows name exactly what
    /// to read, so extensions and dot-files are not filtered; `include`/`exclude`
    /// globs match the whole URI; shards split by URI.
    pub fn manifest_verdict(&self, uri: &str) -> Verdict {
        if let Some(inc) = &self.include {
            if !inc.is_match(uri) {
                return Verdict::Include;
            }
        }
        if let Some(exc) = &self.exclude {
            if exc.is_match(uri) {
                return Verdict::Exclude;
            }
        }
        if !self.shard.owns(uri) {
            return Verdict::OtherShard;
        }
        Verdict::Selected
    }

    /// The extensions accepted (lower case, no dot; empty: all).
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    pub fn shard(&self) -> Shard {
        self.shard
    }
}

/// One object to label.
#[derive(Debug, Clone)]
pub struct ObjectRef {
    pub path: Path,
    /// Key relative to the input prefix (a manifest's objects: the URI).
    pub key: String,
    /// Full URI (`s3://bucket/prefix/key`); a manifest's objects keep its spelling.
    pub uri: String,
    /// Size from the listing; 0 until fetched for a manifest's objects.
    pub size: u64,
    pub etag: Option<String>,
    pub version: Option<String>,
    pub last_modified: chrono::DateTime<chrono::Utc>,
    /// Which store holds it.
    pub origin: Origin,
}

/// Which store an object is fetched from.
#[derive(Debug, Clone, Default)]
pub enum Origin {
    /// The run's input location (a listed prefix).
    #[default]
    Input,
    /// A store named by a manifest row (see [`crate::hosts`]).
    Store(std::sync::Arc<crate::hosts::Host>),
    /// A manifest row whose URI cannot be fetched; it becomes an error row.
    Invalid(std::sync::Arc<str>),
}

impl ObjectRef {
    fn new(loc: &Location, meta: ObjectMeta) -> Self {
        let key = match loc.relative(&meta.location) {
            "" => meta.location.filename().unwrap_or_default().to_string(),
            k => k.to_string(),
        };
        Self {
            uri: loc.uri(&meta.location),
            key,
            path: meta.location,
            size: meta.size,
            etag: meta.e_tag,
            version: meta.version,
            last_modified: meta.last_modified,
            origin: Origin::Input,
        }
    }

    /// Take size, ETag, version and modification time from a fetch (a manifest's
    /// objects are not listed, so these are known only once fetched).
    pub fn update_from(&mut self, meta: &ObjectMeta) {
        self.size = meta.size;
        self.etag.clone_from(&meta.e_tag);
        self.version.clone_from(&meta.version);
        self.last_modified = meta.last_modified;
    }
}

/// What the filters made of one listed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Selected,
    /// A dot-file (`.DS_Store`, `.part` files of other tools).
    Hidden,
    /// Its extension is not among those read.
    Extension,
    /// It matches no `include` glob.
    Include,
    /// It matches an `exclude` glob.
    Exclude,
    /// It belongs to another shard.
    OtherShard,
}

/// Counts kept while listing (for progress and the final summary).
#[derive(Debug, Default)]
pub struct ListingCounters {
    pub listed: std::sync::atomic::AtomicU64,
    pub selected: std::sync::atomic::AtomicU64,
    /// Keys removed, by the filter that removed them.
    pub hidden: std::sync::atomic::AtomicU64,
    pub by_extension: std::sync::atomic::AtomicU64,
    pub by_include: std::sync::atomic::AtomicU64,
    pub by_exclude: std::sync::atomic::AtomicU64,
    pub by_shard: std::sync::atomic::AtomicU64,
    /// Manifest rows whose `uri` is empty or null (skipped).
    pub no_uri: std::sync::atomic::AtomicU64,
    /// Set once the listing has ended (the totals above are then final).
    pub complete: std::sync::atomic::AtomicBool,
}

impl ListingCounters {
    pub(crate) fn count(&self, v: Verdict) {
        use std::sync::atomic::Ordering::Relaxed;
        self.listed.fetch_add(1, Relaxed);
        let c = match v {
            Verdict::Selected => &self.selected,
            Verdict::Hidden => &self.hidden,
            Verdict::Extension => &self.by_extension,
            Verdict::Include => &self.by_include,
            Verdict::Exclude => &self.by_exclude,
            Verdict::OtherShard => &self.by_shard,
        };
        c.fetch_add(1, Relaxed);
    }

    /// "12 by extension, 3 by --include, …" for the filters that removed anything, the
    /// filters as settings (a caller names them its own way).
    pub fn removed_description(&self, filter: &Filter) -> Hint {
        use std::sync::atomic::Ordering::Relaxed;
        let exts = if filter.extensions().is_empty() {
            "any".to_string()
        } else {
            filter.extensions().join(",")
        };
        let parts = [
            (
                self.by_extension.load(Relaxed),
                Hint::new(format!("by extension (reading {exts}; "))
                    .setting(Setting::Extensions)
                    .then(")"),
            ),
            (
                self.by_include.load(Relaxed),
                Hint::new("by ").setting(Setting::Include),
            ),
            (
                self.by_exclude.load(Relaxed),
                Hint::new("by ").setting(Setting::Exclude),
            ),
            (
                self.hidden.load(Relaxed),
                Hint::new("as hidden (name starts with '.')"),
            ),
            (
                self.by_shard.load(Relaxed),
                Hint::new(format!(
                    "as another shard's (this is shard {})",
                    filter.shard()
                )),
            ),
            (
                self.no_uri.load(Relaxed),
                Hint::new("as manifest rows with an empty uri"),
            ),
        ];
        let mut said = Hint::default();
        for (i, (n, what)) in parts.into_iter().filter(|(n, _)| *n > 0).enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            said = said.then(format!("{sep}{n} ")).append(what);
        }
        said
    }
}

/// Stream the selected objects of this shard under `loc`. The listing is consumed
/// lazily: the store is asked for the next page only when the consumer wants more.
/// A prefix naming one object (no objects below it) yields that object.
pub fn list<'a>(
    loc: &'a Location,
    filter: Filter,
    limit: Option<u64>,
    counters: std::sync::Arc<ListingCounters>,
) -> BoxStream<'a, Result<ObjectRef>> {
    use std::sync::atomic::Ordering::Relaxed;
    let prefix = if loc.prefix.as_ref().is_empty() {
        None
    } else {
        Some(&loc.prefix)
    };
    let listing = loc
        .store
        .list(prefix)
        .or_else(move |e| listing_error(loc, e));
    // Fall back to a HEAD of the prefix itself when the listing is empty.
    let single = stream::once(async move {
        if loc.prefix.as_ref().is_empty() {
            return Ok(None);
        }
        match loc.store.head(&loc.prefix).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(crate::store::store_error(loc, e)),
        }
    });
    let seen_any = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = seen_any.clone();
    let listed = listing
        .inspect_ok(move |_| seen.store(true, Relaxed))
        .chain(
            single
                .try_filter_map(move |m| {
                    let seen = seen_any.load(Relaxed);
                    async move { Ok(if seen { None } else { m }) }
                })
                .boxed(),
        );
    let c1 = counters.clone();
    let selected = listed.try_filter_map(move |meta| {
        let obj = ObjectRef::new(loc, meta);
        let verdict = filter.verdict(&obj.key);
        c1.count(verdict);
        async move { Ok((verdict == Verdict::Selected).then_some(obj)) }
    });
    finish_listing(selected.boxed(), limit, counters)
}

/// The selected objects, cut at `limit`; once they end, the counters are marked
/// complete (their totals are final, so progress can show an ETA).
pub(crate) fn finish_listing<'a>(
    selected: BoxStream<'a, Result<ObjectRef>>,
    limit: Option<u64>,
    counters: std::sync::Arc<ListingCounters>,
) -> BoxStream<'a, Result<ObjectRef>> {
    use std::sync::atomic::Ordering::Relaxed;
    let ended = stream::once(async move {
        counters.complete.store(true, Relaxed);
        Ok(None)
    })
    .try_filter_map(|o: Option<ObjectRef>| async move { Ok(o) });
    match limit {
        Some(n) => selected.take(n as usize).chain(ended).boxed(),
        None => selected.chain(ended).boxed(),
    }
}

/// The job's error for a failed listing. Some stores report every listing failure
/// as a generic error (the HTTP status is not kept); one HEAD request of the prefix
/// tells refused credentials (401/403) from other failures, so the message can say
/// what to fix.
async fn listing_error(loc: &Location, e: object_store::Error) -> Result<ObjectMeta> {
    if matches!(e, object_store::Error::Generic { .. }) {
        if let Err(
            probe @ (object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }),
        ) = loc.store.head(&loc.prefix).await
        {
            return Err(crate::store::store_error(loc, probe));
        }
    }
    Err(crate::store::store_error(loc, e))
}

/// Fetch an object's bytes and metadata (object_store's retry policy applies). A
/// manifest's objects wait for a slot of their host first, and are refused from the
/// response headers when larger than `max_bytes`.
pub async fn fetch(
    input: &Location,
    obj: &ObjectRef,
    max_bytes: u64,
) -> std::result::Result<(Bytes, ObjectMeta), FetchError> {
    match &obj.origin {
        Origin::Store(host) => host.get(&obj.uri, &obj.path, max_bytes).await,
        _ => get_within(&input.store, &obj.path, max_bytes).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::PutPayload;
    use std::sync::Arc;

    #[test]
    fn shards_partition_the_key_space() {
        let keys: Vec<String> = (0..1000)
            .map(|i| format!("dir{}/img{i}.jpg", i % 7))
            .collect();
        let shards: Vec<Shard> = (0..4).map(|i| Shard::new(i, 4).unwrap()).collect();
        let mut total = 0;
        for k in &keys {
            let owners = shards.iter().filter(|s| s.owns(k)).count();
            assert_eq!(owners, 1, "{k}");
            total += owners;
        }
        assert_eq!(total, 1000);
        let first = keys.iter().filter(|k| shards[0].owns(k)).count();
        assert!((150..350).contains(&first), "unbalanced shard: {first}");
        assert!("4/4".parse::<Shard>().is_err());
        assert!("1/3".parse::<Shard>().is_ok());
    }

    #[test]
    fn filter_by_extension_and_globs() {
        let f = Filter::new(&Selection {
            include: vec!["cats/**".into()],
            exclude: vec!["**/skip*".into()],
            ..Selection::default()
        })
        .unwrap();
        assert!(f.matches("cats/a.JPG"));
        assert!(!f.matches("cats/a.txt"));
        assert!(!f.matches("dogs/a.jpg"));
        assert!(!f.matches("cats/skip-me.jpg"));
        assert!(!f.matches("cats/.hidden.jpg"));
        let bad = Filter::new(&Selection {
            include: vec!["[".into()],
            ..Selection::default()
        });
        assert!(bad.unwrap_err().to_string().contains("\"[\""));
    }

    #[tokio::test]
    async fn listing_is_filtered_limited_and_sharded() {
        let loc = Location::memory();
        for i in 0..20 {
            loc.store
                .put(
                    &Path::from(format!("in/{i:02}.jpg")),
                    PutPayload::from_static(b"x"),
                )
                .await
                .unwrap();
        }
        loc.store
            .put(&Path::from("in/readme.txt"), PutPayload::from_static(b"x"))
            .await
            .unwrap();
        let loc = Location::from_store(loc.store.clone(), "memory://", "in");
        let counters = Arc::new(ListingCounters::default());
        let f = Filter::new(&Selection::default()).unwrap();
        let all: Vec<ObjectRef> = list(&loc, f.clone(), None, counters.clone())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(all.len(), 20);
        assert!(all.iter().all(|o| o.uri.starts_with("memory:///in/")));
        let some: Vec<ObjectRef> = list(&loc, f, Some(5), counters)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(some.len(), 5);

        let single = Location::from_store(loc.store.clone(), "memory://", "in/03.jpg");
        let f = Filter::new(&Selection::default()).unwrap();
        let one: Vec<ObjectRef> = list(&single, f, None, Arc::new(ListingCounters::default()))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].key, "03.jpg");
    }
}
