//! Progress bars on stderr (hidden when stderr is not a terminal) and the final summary.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use labelflow::pipeline::{Progress, RunSummary, Stats};
use labelflow::runs::RunStatus;

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
            let mut counting = true;
            while !stop.load(Relaxed) {
                let labelled = stats.labelled.load(Relaxed);
                let failed = stats.failed.load(Relaxed);
                let skipped = stats.skipped.load(Relaxed) + stats.unchanged.load(Relaxed);
                let done = labelled + failed;
                let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-3);
                let listing = &stats.listing;
                let busiest = stats
                    .stages
                    .snapshot()
                    .load(start.elapsed().as_secs_f64(), &stats.workers)
                    .into_iter()
                    .next()
                    .map(|l| format!(" · busiest: {} {:.0}%", l.name, l.busy * 100.0))
                    .unwrap_or_default();
                if counting && listing.complete.load(Relaxed) {
                    // The listing is complete: the total is known, so show a bar with
                    // an estimate of the time left.
                    let total = listing.selected.load(Relaxed).saturating_sub(skipped);
                    bar.set_length(total);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {pos}/{len} ({percent}%) · ETA {eta} · {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    counting = false;
                }
                if counting {
                    bar.set_message(format!(
                        "listing: {} listed, {} selected · labelled {} · failed {} · skipped {} · {:.1} img/s{}",
                        listing.listed.load(Relaxed),
                        listing.selected.load(Relaxed),
                        labelled,
                        failed,
                        skipped,
                        rate,
                        busiest
                    ));
                    bar.tick();
                } else {
                    bar.set_position(done);
                    bar.set_message(format!(
                        "{failed} failed · {skipped} already done · {rate:.1} img/s{busiest}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            bar.finish_and_clear();
        });
        if let Ok(mut t) = self.thread.lock() {
            *t = Some(handle);
        }
    }

    fn note(&self, message: &str) {
        eprintln!("{message}");
    }

    fn hinted_note(&self, message: &str, hint: &labelflow::error::Hint) {
        eprintln!("{message}; {}", hint.render(&super::flag));
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

/// Progress for runs without bars (`--no-progress`, or stderr not a terminal):
/// only the notes.
pub struct Notes;

impl Progress for Notes {
    fn note(&self, message: &str) {
        eprintln!("{message}");
    }

    fn hinted_note(&self, message: &str, hint: &labelflow::error::Hint) {
        eprintln!("{message}; {}", hint.render(&super::flag));
    }
}

/// The summary every run prints on stderr.
pub fn print_summary(s: &RunSummary) {
    eprintln!(
        "run {}: {} labelled, {} failed, {} skipped (already written), {} skipped unchanged (labelled by an earlier run; --relabel-all labels them again) of {} listed in {:.1}s ({:.1} img/s)",
        s.run_id,
        s.labelled,
        s.failed,
        s.skipped,
        s.skipped_unchanged,
        s.listed,
        s.seconds,
        s.images_per_second
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
    eprintln!(
        "time by stage (busy seconds, summed over each stage's workers): {}",
        s.stages.line()
    );
    if let Some(bound) = s.load.first() {
        let rest: Vec<String> = s.load[1..].iter().take(2).map(|l| l.to_string()).collect();
        eprintln!("bound by {bound}; then {}", rest.join(", "));
    }
    if s.failed > 0 {
        eprintln!(
            "{} image(s) could not be labelled; their rows carry the reason in the `error` column",
            s.failed
        );
    }
    if s.status == RunStatus::Interrupted {
        eprintln!(
            "run {} interrupted; what was labelled is published. Rerun the same command to continue it (exit code {})",
            s.run_id,
            labelflow::pipeline::EXIT_INTERRUPTED
        );
    }
}
