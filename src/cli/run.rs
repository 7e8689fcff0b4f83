//! `labelflow run`, `validate` and `bench`: flags into a plan, the run with progress
//! display and signal handling, the summary out.

use std::sync::Arc;

use labelflow::config::{JobConfig, RunPlan};
use labelflow::pipeline::{self, Progress};

use super::{progress, BenchArgs, RunArgs};

/// `labelflow run`: the run's exit code (0, 1 with error rows, 3 interrupted, 4 another
/// worker holds the shard).
pub async fn run(
    args: RunArgs,
    ort_lib: Option<std::path::PathBuf>,
    show_progress: bool,
) -> anyhow::Result<u8> {
    let json = args.json;
    let allow_error_rows = args.allow_error_rows;
    let plan = plan(args, ort_lib)?;
    let progress: Arc<dyn Progress> = if show_progress {
        Arc::new(progress::Bars::new())
    } else {
        Arc::new(progress::Notes)
    };
    let stop = pipeline::Stop::new();
    watch_signals(stop.clone());
    let summary = match pipeline::Run::new(&plan)
        .progress(progress)
        .stop(stop)
        .execute()
        .await
    {
        Ok(s) => s,
        // Not a failure of the job: another worker is writing this shard.
        Err(e @ labelflow::Error::LeaseHeld { .. }) => {
            eprintln!(
                "labelflow: {e}; not starting a second writer (exit {}): rerun once it stops, or pass --wait to wait for it",
                pipeline::EXIT_LEASE_HELD
            );
            return Ok(pipeline::EXIT_LEASE_HELD);
        }
        Err(e @ labelflow::Error::LeaseLost { .. }) => {
            eprintln!("labelflow: {e} (exit {})", pipeline::EXIT_LEASE_HELD);
            return Ok(pipeline::EXIT_LEASE_HELD);
        }
        Err(e) => return Err(e.into()),
    };
    progress::print_summary(&summary);
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    let code = summary.exit_code();
    if code == 1 && allow_error_rows {
        return Ok(0);
    }
    Ok(code)
}

/// `labelflow validate`: the plan and the model file, checked without running.
pub fn validate(args: RunArgs, ort_lib: Option<std::path::PathBuf>) -> anyhow::Result<u8> {
    let plan = plan(args, ort_lib)?;
    let model = labelflow::infer::ModelBytes::read(&plan.model)?;
    eprintln!(
        "ok: input {} → output {}, model {} ({} bytes), device {}, batch {}, top-k {}, tta {}, shard {}",
        plan.input,
        plan.output,
        model.location,
        model.bytes.len(),
        plan.device,
        plan.batch_size,
        plan.top_k,
        plan.tta,
        plan.selection.shard
    );
    Ok(0)
}

/// `labelflow bench`: the report table on stdout.
pub async fn bench(args: BenchArgs, ort_lib: Option<std::path::PathBuf>) -> anyhow::Result<u8> {
    if args.listing {
        let retry = args.tuning.tuning().retry_policy();
        let report = super::bench::listing(&args.input, retry, args.sample_every).await?;
        println!("{}", report.table());
        return Ok(0);
    }
    let opts = super::bench::BenchOptions {
        input: args.input,
        model: args.model,
        batch_size: args.batch_size,
        images: args.images,
        stage_images: args.stage_images,
        tuning: args.tuning.tuning(),
        ort_lib,
        device: args.device,
        peers: args.peers.then(|| {
            args.peers_python
                .clone()
                .unwrap_or_else(super::bench::default_peers_python)
        }),
        baseline: args
            .baseline
            .then(|| args.python.unwrap_or_else(super::bench::default_python)),
    };
    let report = super::bench::run(&opts).await?;
    println!("{}", report.table());
    Ok(0)
}

fn plan(args: RunArgs, ort_lib: Option<std::path::PathBuf>) -> anyhow::Result<RunPlan> {
    let file = match &args.config {
        Some(p) => JobConfig::load(p)?,
        None => JobConfig::default(),
    };
    let shard = args.job.shard().map_err(labelflow::Error::Config)?;
    Ok(file.plan(args.job.as_config(), args.tuning.tuning(), shard, ort_lib)?)
}

/// Turn the first SIGTERM or SIGINT into a stop request (the run publishes what it
/// has and exits with code 3); the second exits at once.
fn watch_signals(stop: pipeline::Stop) {
    tokio::spawn(async move {
        let first = next_signal().await;
        eprintln!(
            "labelflow: {first} received: stopping — no new images, labelling what is in flight, publishing the open part; send it again to exit at once"
        );
        stop.request();
        let second = next_signal().await;
        eprintln!("labelflow: second {second}: exiting now; rows not yet published will be redone by the next run");
        std::process::exit(if second == "SIGINT" { 130 } else { 143 });
    });
}

async fn next_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
