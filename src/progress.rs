//! Progress bars on stderr (hidden when stderr is not a terminal) and the final summary.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use labelflow::pipeline::{Progress, RunSummary, Stats};

/// A spinner with counts and throughput, refreshed a few times a second.
pub struct Bars {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Bars {
    pub fn new() -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            thread: Mutex::new(None),
        }
    }
}

impl Progress for Bars {
    fn started(&self, run_id: &str, stats: Arc<Stats>) {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(format!("run {run_id}"));
        let stop = self.stop.clone();
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            while !stop.load(Relaxed) {
                let done = stats.labelled.load(Relaxed) + stats.failed.load(Relaxed);
                let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!(
                    "listed {} · selected {} · labelled {} · failed {} · skipped {} · {:.1} img/s",
                    stats.listing.listed.load(Relaxed),
                    stats.listing.selected.load(Relaxed),
                    stats.labelled.load(Relaxed),
                    stats.failed.load(Relaxed),
                    stats.skipped.load(Relaxed),
                    rate
                ));
                bar.tick();
                std::thread::sleep(Duration::from_millis(200));
            }
            bar.finish_and_clear();
        });
        if let Ok(mut t) = self.thread.lock() {
            *t = Some(handle);
        }
    }

    fn finished(&self) {
        self.stop.store(true, Relaxed);
        if let Ok(mut t) = self.thread.lock() {
            if let Some(h) = t.take() {
                let _ = h.join();
            }
        }
    }
}

/// The summary every run prints on stderr.
pub fn print_summary(s: &RunSummary) {
    eprintln!(
        "run {}: {} labelled, {} failed, {} skipped (already written) of {} listed in {:.1}s ({:.1} img/s)",
        s.run_id, s.labelled, s.failed, s.skipped, s.listed, s.seconds, s.images_per_second
    );
    eprintln!(
        "model {} (sha256 {}…) on {}, batch {}",
        s.model,
        &s.model_sha256[..12.min(s.model_sha256.len())],
        s.device,
        s.batch_size
    );
    eprintln!(
        "wrote {} rows in {} part(s) under {}",
        s.rows_written,
        s.parts.len(),
        s.output
    );
    if s.failed > 0 {
        eprintln!("{} image(s) could not be labelled; their rows carry the reason in the `error` column (exit code 1)", s.failed);
    }
}
