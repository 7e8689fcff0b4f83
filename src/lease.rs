//! One writer per shard of a job: a lease in the output store.
//!
//! Two workers started with the same command (a duplicate pod, a cron that fires twice,
//! a retry by hand) would otherwise both continue the same run and write every image
//! twice. Before it chooses a run, a worker takes the lease of its job (the run
//! fingerprint) and shard:
//!
//! ```text
//! <output>/_leases/<FINGERPRINT>/s<I>of<N>/<EPOCH>.json
//! ```
//!
//! The holder of the highest epoch owns the shard. A lease is taken by creating the
//! next epoch's file with a conditional create (`PutMode::Create`: the local file
//! system, S3's `If-None-Match`, Azure, GCS and the in-memory store all do it
//! atomically), so of two workers racing for it exactly one wins. The file names its
//! holder (host, pid, start time) and its last heartbeat; the holder rewrites it every
//! quarter of the TTL. A worker that finds a live lease writes nothing; one whose
//! heartbeat is older than the TTL (a killed or paused holder) is taken over by
//! creating the next epoch, and a released one (a clean stop) is taken at once.
//!
//! Only the holder writes its own epoch's file, so the heartbeat needs no conditional
//! update (which the local file system cannot do). Ownership is checked by listing the
//! lease's folder: a higher epoch means another worker took over. The holder checks
//! before it publishes each part (see [`LeaseWatch::check`]) and with every heartbeat,
//! so a holder paused past its TTL notices on waking, before it publishes anything.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::source::Shard;
use crate::store::{store_error, Location};

/// Default time after its last heartbeat at which a lease may be taken over.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// How a run takes its shard's lease.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LeaseOptions {
    /// A lease whose last heartbeat is older than this is taken over.
    pub ttl: Duration,
    /// Wait for a live lease to be released or to expire instead of failing.
    pub wait: bool,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_TTL,
            wait: false,
        }
    }
}

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// When the holding process started its run (RFC 3339).
    pub started_at: String,
}

impl Holder {
    /// This process (its start time: when it first asked for a lease).
    pub fn this_process() -> Self {
        static STARTED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        Self {
            host: hostname(),
            pid: std::process::id(),
            started_at: STARTED.get_or_init(now_rfc3339).clone(),
        }
    }

    /// Whether this holder is a process of this host that no longer runs (killed, or
    /// an earlier process of this container with the same pid): its lease is taken at
    /// once instead of after the TTL. A holder on another host is never judged dead
    /// this way, nor one whose pid now belongs to some other live process.
    pub fn is_dead_here(&self) -> bool {
        let me = Self::this_process();
        if self.host != me.host {
            return false;
        }
        if self.pid == me.pid {
            return self.started_at != me.started_at;
        }
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return false;
        };
        // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "host {} pid {} (started {})",
            self.host, self.pid, self.started_at
        )
    }
}

/// The content of one epoch's lease file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub epoch: u64,
    pub holder: Holder,
    /// The holder's last heartbeat (RFC 3339, the holder's clock).
    pub heartbeat_at: String,
    pub ttl_seconds: f64,
    /// Set by a clean stop: the next worker takes the shard at once.
    #[serde(default)]
    pub released: bool,
}

impl LeaseRecord {
    /// Seconds since the last heartbeat (0 when the holder's clock is ahead).
    pub fn age_seconds(&self) -> f64 {
        chrono::DateTime::parse_from_rfc3339(&self.heartbeat_at)
            .map(|t| {
                (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds() as f64
                    / 1000.0
            })
            .unwrap_or(f64::INFINITY)
            .max(0.0)
    }
}

/// The folder of a job's shard's lease files.
fn lease_dir(output: &Location, fingerprint: &str, shard: Shard) -> Path {
    output.child(&format!(
        "_leases/{fingerprint}/s{}of{}",
        shard.index, shard.count
    ))
}

fn epoch_path(dir: &Path, epoch: u64) -> Path {
    Path::from(format!("{dir}/{epoch:012}.json"))
}

/// The epochs present in a lease folder, highest last.
async fn epochs(output: &Location, dir: &Path) -> Result<Vec<u64>> {
    let listed: Vec<object_store::ObjectMeta> =
        match output.store.list(Some(dir)).try_collect().await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(store_error(output, e)),
        };
    let mut epochs: Vec<u64> = listed
        .iter()
        .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse().ok())
        .collect();
    epochs.sort_unstable();
    Ok(epochs)
}

async fn read(output: &Location, path: &Path) -> Result<Option<LeaseRecord>> {
    let bytes = match output.store.get(path).await {
        Ok(got) => got.bytes().await.map_err(|e| store_error(output, e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store_error(output, e)),
    };
    // An unreadable lease file (a foreign or torn write) counts as expired: it names no
    // holder that could still be writing.
    Ok(serde_json::from_slice(&bytes).ok())
}

/// The shared state between a lease's heartbeat and the run that holds it.
#[derive(Debug)]
struct LeaseState {
    output: Location,
    dir: Path,
    shard: Shard,
    epoch: u64,
    holder: Holder,
    ttl: Duration,
    lost: AtomicBool,
    /// Who took the lease over, once it is lost.
    lost_to: Mutex<Option<String>>,
    /// When the last heartbeat was written.
    renewed: Mutex<Instant>,
    notify: tokio::sync::Notify,
}

impl LeaseState {
    fn record(&self, released: bool) -> LeaseRecord {
        LeaseRecord {
            epoch: self.epoch,
            holder: self.holder.clone(),
            heartbeat_at: now_rfc3339(),
            ttl_seconds: self.ttl.as_secs_f64(),
            released,
        }
    }

    async fn write(&self, released: bool) -> Result<()> {
        let body =
            serde_json::to_vec(&self.record(released)).map_err(|e| Error::Encode(e.to_string()))?;
        self.output
            .store
            .put(&epoch_path(&self.dir, self.epoch), body.into())
            .await
            .map_err(|e| store_error(&self.output, e))?;
        Ok(())
    }

    fn lost_error(&self) -> Error {
        let to = self
            .lost_to
            .lock()
            .ok()
            .and_then(|t| t.clone())
            .unwrap_or_else(|| "another worker".to_string());
        Error::LeaseLost {
            shard: self.shard.to_string(),
            taken_by: to,
        }
    }

    /// `Err(LeaseLost)` when a higher epoch exists.
    async fn verify(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(self.lost_error());
        }
        let found = epochs(&self.output, &self.dir).await?;
        if let Some(&newer) = found.iter().rev().find(|&&e| e > self.epoch) {
            let who = read(&self.output, &epoch_path(&self.dir, newer))
                .await
                .ok()
                .flatten()
                .map(|r| r.holder.to_string());
            if let Ok(mut slot) = self.lost_to.lock() {
                *slot = who;
            }
            self.lost.store(true, Ordering::SeqCst);
            self.notify.notify_waiters();
            return Err(self.lost_error());
        }
        Ok(())
    }

    /// Write a heartbeat, then check the lease is still ours.
    async fn renew(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(self.lost_error());
        }
        self.write(false).await?;
        if let Ok(mut at) = self.renewed.lock() {
            *at = Instant::now();
        }
        self.verify().await
    }

    fn since_renewed(&self) -> Duration {
        self.renewed
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or(Duration::MAX)
    }
}

/// A held lease: its heartbeat runs until [`Lease::release`] or drop.
#[derive(Debug)]
pub struct Lease {
    state: Arc<LeaseState>,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// What the writer of a run holds to check its lease before publishing.
#[derive(Debug, Clone)]
pub struct LeaseWatch {
    state: Arc<LeaseState>,
}

impl LeaseWatch {
    /// Before publishing a part: `Err(LeaseLost)` if another worker took the shard
    /// over. A holder whose last heartbeat is older than half the TTL (it was paused,
    /// or the store was slow) writes one first, so a taker that read the old heartbeat
    /// has had to create its epoch before this check lists the folder.
    pub async fn check(&self) -> Result<()> {
        if self.state.since_renewed() > self.state.ttl / 2 {
            self.state.renew().await
        } else {
            self.state.verify().await
        }
    }

    /// Resolves once the lease is known to be lost.
    pub async fn lost(&self) {
        loop {
            let notified = self.state.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state.lost.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    pub fn is_lost(&self) -> bool {
        self.state.lost.load(Ordering::SeqCst)
    }

    /// The error that says who took the lease.
    pub fn lost_error(&self) -> Error {
        self.state.lost_error()
    }
}

impl Lease {
    /// Take the lease of `fingerprint`'s `shard` in `output`, taking over an expired
    /// or released one. A live lease is `Err(LeaseHeld)`, or, with `opts.wait`, waited
    /// for. `note` hears about takeovers and waiting (a person should read those).
    pub async fn acquire(
        output: &Location,
        fingerprint: &str,
        shard: Shard,
        opts: LeaseOptions,
        note: &(dyn Fn(&str) + Sync),
    ) -> Result<Self> {
        let dir = lease_dir(output, fingerprint, shard);
        let holder = Holder::this_process();
        let ttl = opts.ttl.max(Duration::from_millis(100));
        let mut said_waiting = false;
        // An epoch whose create failed without an answer (a timeout, a reset): it may
        // have been written all the same, and then it is ours.
        let mut unanswered: Option<u64> = None;
        let mut failures = 0u32;
        loop {
            let found = epochs(output, &dir).await?;
            let next = match found.last() {
                None => 1,
                Some(&top) => match read(output, &epoch_path(&dir, top)).await? {
                    // Removed between the listing and the read: look again.
                    None => continue,
                    Some(current) if unanswered == Some(top) && current.holder == holder => {
                        let state = LeaseState::new(output, &dir, shard, top, &holder, ttl);
                        return Ok(Self::start(state));
                    }
                    Some(current) => {
                        let age = current.age_seconds();
                        let dead = !current.released && current.holder.is_dead_here();
                        let expired = dead || age > current.ttl_seconds.max(ttl.as_secs_f64());
                        if !current.released && !expired {
                            if !opts.wait {
                                return Err(Error::LeaseHeld {
                                    shard: shard.to_string(),
                                    holder: current.holder.to_string(),
                                    age_seconds: age,
                                    ttl_seconds: current.ttl_seconds,
                                });
                            }
                            if !said_waiting {
                                note(&format!(
                                    "shard {shard} is being written by {}, last heartbeat {age:.1} s ago; waiting for it to stop or for its lease to expire ({:.0} s without a heartbeat)",
                                    current.holder, current.ttl_seconds
                                ));
                                said_waiting = true;
                            }
                            let pause =
                                (ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(2));
                            tokio::time::sleep(pause).await;
                            continue;
                        }
                        if dead {
                            note(&format!(
                                "taking over shard {shard} from {}: that process no longer runs on this host",
                                current.holder
                            ));
                        } else if expired && !current.released {
                            note(&format!(
                                "taking over shard {shard} from {}: its last heartbeat was {age:.1} s ago (lease TTL {:.0} s)",
                                current.holder, current.ttl_seconds
                            ));
                        }
                        top + 1
                    }
                },
            };
            let state = LeaseState::new(output, &dir, shard, next, &holder, ttl);
            let body = serde_json::to_vec(&state.record(false))
                .map_err(|e| Error::Encode(e.to_string()))?;
            let create = PutOptions::from(PutMode::Create);
            match output
                .store
                .put_opts(&epoch_path(&dir, next), body.into(), create)
                .await
            {
                Ok(_) => {}
                // Another worker created this epoch first: look again.
                Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(object_store::Error::NotImplemented { .. }) => {
                    return Err(Error::Output {
                        location: output.to_string(),
                        reason: "this store cannot create an object only if it is absent, which the shard's lease needs (one writer per shard); write the predictions to a local folder, S3, GCS or Azure".into(),
                    })
                }
                // A conditional create is not retried by the store client (it is not
                // idempotent): retry it here, a few times, and look first whether the
                // unanswered attempt landed.
                Err(e) if failures < CREATE_RETRIES && !crate::store::is_credentials_error(&e) => {
                    failures += 1;
                    unanswered = Some(next);
                    tracing::debug!(error = %e, attempt = failures, "creating the shard's lease failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200) * 2u32.pow(failures.min(5))).await;
                    continue;
                }
                Err(e) => return Err(store_error(output, e)),
            }
            // Older epochs are history; the newest two stay so that a paused holder of
            // the previous epoch finds a higher one.
            for old in found.iter().filter(|&&e| e + 1 < next) {
                let _ = output.store.delete(&epoch_path(&dir, *old)).await;
            }
            return Ok(Self::start(state));
        }
    }

    fn start(state: LeaseState) -> Self {
        let state = Arc::new(state);
        let heartbeat = tokio::spawn(heartbeat(state.clone()));
        Self { state, heartbeat }
    }

    /// For the writer: check before publishing, notice a loss.
    pub fn watch(&self) -> LeaseWatch {
        LeaseWatch {
            state: self.state.clone(),
        }
    }

    /// The epoch this lease holds (1 for the first holder of a shard).
    pub fn epoch(&self) -> u64 {
        self.state.epoch
    }

    /// Stop the heartbeat and mark the lease released, so the next worker takes the
    /// shard at once. A lost lease is left to its new holder.
    pub async fn release(self) {
        self.heartbeat.abort();
        if self.state.verify().await.is_ok() {
            if let Err(e) = self.state.write(true).await {
                tracing::warn!(error = %e, "could not release the shard's lease; the next worker takes it once its TTL has passed");
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// How many times a failed conditional create of the lease is tried again.
const CREATE_RETRIES: u32 = 8;

impl LeaseState {
    fn new(
        output: &Location,
        dir: &Path,
        shard: Shard,
        epoch: u64,
        holder: &Holder,
        ttl: Duration,
    ) -> Self {
        Self {
            output: output.clone(),
            dir: dir.clone(),
            shard,
            epoch,
            holder: holder.clone(),
            ttl,
            lost: AtomicBool::new(false),
            lost_to: Mutex::new(None),
            renewed: Mutex::new(Instant::now()),
            notify: tokio::sync::Notify::new(),
        }
    }
}

/// Rewrite the lease every quarter of its TTL and check it is still ours; stops once
/// it is lost.
async fn heartbeat(state: Arc<LeaseState>) {
    let every = (state.ttl / 4).max(Duration::from_millis(25));
    loop {
        tokio::time::sleep(every).await;
        match state.renew().await {
            Ok(()) => {}
            Err(Error::LeaseLost { .. }) => return,
            Err(e) => {
                tracing::warn!(error = %e, "lease heartbeat failed; retrying");
            }
        }
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many
    // bytes and the result is read up to the first NUL only.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if let Ok(name) = std::str::from_utf8(&buf[..end]) {
            if !name.is_empty() {
                return name.to_string();
            }
        }
    }
    std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown-host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(ttl_ms: u64, wait: bool) -> LeaseOptions {
        LeaseOptions {
            ttl: Duration::from_millis(ttl_ms),
            wait,
        }
    }

    #[tokio::test]
    async fn a_live_lease_is_refused_and_a_released_one_taken() {
        let out = Location::memory();
        let s = Shard::default();
        let a = Lease::acquire(&out, "fp", s, opts(60_000, false), &|_| {})
            .await
            .unwrap();
        assert_eq!(a.epoch(), 1);
        let err = Lease::acquire(&out, "fp", s, opts(60_000, false), &|_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, Error::LeaseHeld { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        // Another shard, or another job, is another lease.
        Lease::acquire(
            &out,
            "fp",
            Shard::new(1, 2).unwrap(),
            opts(60_000, false),
            &|_| {},
        )
        .await
        .unwrap();
        Lease::acquire(&out, "other", s, opts(60_000, false), &|_| {})
            .await
            .unwrap();
        a.release().await;
        let b = Lease::acquire(&out, "fp", s, opts(60_000, false), &|_| {})
            .await
            .unwrap();
        assert_eq!(b.epoch(), 2);
        b.watch().check().await.unwrap();
    }

    #[tokio::test]
    async fn racing_workers_get_one_lease() {
        let out = Location::memory();
        let s = Shard::default();
        let tries: Vec<_> = (0..8)
            .map(|_| {
                let out = out.clone();
                tokio::spawn(async move {
                    Lease::acquire(&out, "fp", s, opts(60_000, false), &|_| {}).await
                })
            })
            .collect();
        let mut held = Vec::new();
        for t in tries {
            if let Ok(lease) = t.await.unwrap() {
                held.push(lease);
            }
        }
        assert_eq!(held.len(), 1);
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_its_holder_notices() {
        let out = Location::memory();
        let s = Shard::default();
        let a = Lease::acquire(&out, "fp", s, opts(300, false), &|_| {})
            .await
            .unwrap();
        let watch = a.watch();
        // The holder stops beating (as a paused or killed process does).
        a.heartbeat.abort();
        tokio::time::sleep(Duration::from_millis(450)).await;
        let notes = Mutex::new(Vec::new());
        let b = Lease::acquire(&out, "fp", s, opts(300, false), &|n| {
            notes.lock().unwrap().push(n.to_string())
        })
        .await
        .unwrap();
        assert_eq!(b.epoch(), 2);
        assert!(
            notes.lock().unwrap()[0].contains("taking over"),
            "{notes:?}"
        );
        let err = watch.check().await.unwrap_err();
        assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
        assert!(watch.is_lost());
        // The loser's release leaves the new holder's lease alone.
        a.release().await;
        b.watch().check().await.unwrap();
        let err = Lease::acquire(&out, "fp", s, opts(300, false), &|_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, Error::LeaseHeld { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_waiting_worker_takes_the_lease_when_it_is_released() {
        let out = Location::memory();
        let s = Shard::default();
        let a = Lease::acquire(&out, "fp", s, opts(60_000, false), &|_| {})
            .await
            .unwrap();
        let waiter = {
            let out = out.clone();
            tokio::spawn(
                async move { Lease::acquire(&out, "fp", s, opts(400, true), &|_| {}).await },
            )
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished());
        a.release().await;
        let b = waiter.await.unwrap().unwrap();
        assert_eq!(b.epoch(), 2);
    }
}
