//! The `labelflow` binary: parse the command line, start logging, call the library,
//! map the outcome to an exit code (0 ok, 1 finished with per-image errors, 2 fatal).

mod cli;
mod progress;
mod train_cli;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use cli::{Cli, Command, ModelCommand, RunArgs};
use labelflow::config::{JobConfig, RunPlan};
use labelflow::pipeline::{self, Progress};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", error_message(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes in one line, each cause said once: store errors repeat
/// their source's text in their own, which would print the same failure many times
/// over. Secrets are masked.
fn error_message(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || message.contains(text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(text);
    }
    labelflow::redact::redact(&message).into_owned()
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

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "labelflow=warn,ort=off",
        1 => "labelflow=info,ort=warn",
        _ => "labelflow=debug,ort=info",
    };
    let filter =
        EnvFilter::try_from_env("LABELFLOW_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| labelflow::redact::RedactingWriter(std::io::stderr()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let show_progress = !cli.no_progress;
    match cli.command {
        Command::Run(args) => {
            let json = args.json;
            let plan = plan(args, cli.ort_lib)?;
            let progress: Arc<dyn Progress> = if show_progress {
                Arc::new(progress::Bars::new())
            } else {
                Arc::new(progress::Notes)
            };
            let stop = pipeline::Stop::new();
            watch_signals(stop.clone());
            let summary = pipeline::run_until(&plan, progress, stop).await?;
            progress::print_summary(&summary);
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            }
            Ok(summary.exit_code())
        }
        Command::Validate(args) => {
            let plan = plan(args, cli.ort_lib)?;
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
        Command::Query(args) => {
            labelflow::query::execute(args).await?;
            Ok(0)
        }
        Command::Model(ModelCommand::Init(args)) => {
            model_init(&args)?;
            Ok(0)
        }
        Command::Model(ModelCommand::Inspect { path }) => {
            labelflow::runtime::init(cli.ort_lib.as_deref())?;
            let model = labelflow::infer::ModelBytes::read(&path)?;
            let session = labelflow::infer::build_session(&model, &Default::default())?;
            let info = labelflow::infer::describe(&model, &session)?;
            println!("model:       {}", model.location);
            println!("sha256:      {}", info.sha256);
            println!(
                "input:       {} ({:?}, batch {})",
                info.input_name,
                info.layout,
                info.fixed_batch
                    .map_or("dynamic".to_string(), |b| b.to_string())
            );
            println!(
                "input size:  {}",
                info.input_size
                    .map_or("dynamic".to_string(), |s| format!("{s}x{s}"))
            );
            println!("output:      {} ({:?})", info.output_name, info.output_kind);
            let shown: Vec<&str> = info.classes.iter().take(10).map(String::as_str).collect();
            println!(
                "classes:     {} ({}{})",
                info.classes.len(),
                shown.join(", "),
                if info.classes.len() > 10 { ", …" } else { "" }
            );
            match &info.preprocess {
                Some(p) => println!("preprocess:  {}", serde_json::to_string(p)?),
                None => println!("preprocess:  not declared (ImageNet defaults apply)"),
            }
            Ok(0)
        }
        Command::Doctor => doctor(cli.ort_lib.as_deref()),
        Command::Bench(args) => {
            let tuning = args.tuning.tuning();
            let opts = labelflow::bench::BenchOptions {
                input: args.input,
                model: args.model,
                batch_size: args.batch_size,
                images: args.images,
                stage_images: args.stage_images,
                tuning,
                ort_lib: cli.ort_lib,
            };
            let report = labelflow::bench::run(&opts).await?;
            println!("{}", report.table());
            Ok(0)
        }
        Command::Train(args) => train_cli::run(args, show_progress).await,
    }
}

fn plan(args: RunArgs, ort_lib: Option<std::path::PathBuf>) -> anyhow::Result<RunPlan> {
    let file = match &args.config {
        Some(p) => JobConfig::load(p)?,
        None => JobConfig::default(),
    };
    let shard = args.job.shard().map_err(labelflow::Error::Config)?;
    Ok(file.plan(args.job.as_config(), args.tuning.tuning(), shard, ort_lib)?)
}

fn model_init(args: &cli::ModelInitArgs) -> anyhow::Result<()> {
    use labelflow::onnx::alexnet::{self, AlexNetSpec, Variant};
    let classes: Vec<String> = match &args.class_names {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading class names from {}", p.display()))?;
            let names: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            anyhow::ensure!(
                !names.is_empty(),
                "{} holds no class names (one per line expected)",
                p.display()
            );
            names
        }
        None => {
            anyhow::ensure!(args.classes >= 1, "--classes must be at least 1");
            alexnet::default_class_names(args.classes)
        }
    };
    let variant = match args.variant.to_ascii_lowercase().as_str() {
        "torchvision" | "tv" => Variant::Torchvision,
        "paper" | "2012" => Variant::Paper,
        other => anyhow::bail!("unknown --variant {other:?}; expected torchvision or paper"),
    };
    let spec = AlexNetSpec {
        variant,
        num_classes: classes.len(),
        width: args.width,
        input_size: args.input_size,
        seed: args.seed,
    };
    let to_err = |e| labelflow::onnx::model_error(&args.out, e);
    spec.validate().map_err(to_err)?;
    let weights = spec.random_weights().map_err(to_err)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let sha = alexnet::write_alexnet(&args.out, &spec, &weights, &classes).map_err(to_err)?;
    let params = spec.parameter_count().map_err(to_err)?;
    eprintln!(
        "wrote {} ({:?}, {} classes, width {}, input {}px, {:.1}M parameters, seed {})\nsha256 {sha}",
        args.out.display(),
        variant,
        classes.len(),
        args.width,
        args.input_size,
        params as f64 / 1e6,
        args.seed
    );
    Ok(())
}

fn doctor(ort_lib: Option<&std::path::Path>) -> anyhow::Result<u8> {
    use labelflow::runtime;
    println!("labelflow {}", env!("CARGO_PKG_VERSION"));
    let gpus = runtime::gpus_seen();
    if gpus.is_empty() {
        println!("GPUs:           none seen (no NVIDIA driver)");
    } else {
        println!("GPUs:           {}", gpus.join("; "));
    }
    match runtime::init(ort_lib) {
        Ok(rt) => {
            println!(
                "ONNX Runtime:   {} (found via {})",
                rt.library.path.display(),
                rt.library.source
            );
            println!(
                "version:        {}",
                runtime::version_of(rt).unwrap_or_else(|| "unknown".into())
            );
            println!("providers:      {}", rt.providers.join(", "));
            println!("build:          {}", rt.build_info);
            if !rt.providers.iter().any(|p| p == "CUDAExecutionProvider") {
                println!("CUDA:           not in this library; for GPUs run `scripts/setup-ort.sh --gpu` (onnxruntime-gpu 1.31.1, CUDA 13, cuDNN 9)");
            }
            Ok(0)
        }
        Err(e) => {
            println!("ONNX Runtime:   NOT FOUND");
            println!("{e}");
            Ok(2)
        }
    }
}
