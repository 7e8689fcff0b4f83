//! Label a folder with the library, then read the predictions back with SQL.
//!
//! ```sh
//! scripts/setup-ort.sh                                   # ONNX Runtime, once
//! cargo run --release -- model init --out out/alexnet.onnx
//! cargo run --release --example label_folder -- tests/data/photos out/alexnet.onnx out/example-preds
//! ```

use labelflow::config::RunPlan;
use labelflow::pipeline;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let input = args.next().unwrap_or_else(|| "tests/data/photos".into());
    let model = args.next().unwrap_or_else(|| "out/alexnet.onnx".into());
    let output = args.next().unwrap_or_else(|| "out/example-preds".into());

    // Validated exactly as `labelflow run` validates a pipeline file and flags.
    let plan = RunPlan::builder(input, output.clone(), model)
        .top_k(3)
        .build()?;

    let summary = pipeline::Run::new(&plan).execute().await?;
    println!(
        "run {}: {} labelled, {} failed in {:.1}s",
        summary.run_id, summary.labelled, summary.failed, summary.seconds
    );

    // Query what was written: the dataset is registered as `predictions`.
    let ctx = labelflow::query::open(&output).await?;
    let batches = ctx
        .sql(
            "SELECT key, label, round(score, 3) AS score, error \
             FROM predictions WHERE run_id = $1 ORDER BY score DESC NULLS LAST",
        )
        .await?
        .with_param_values(vec![datafusion::scalar::ScalarValue::from(
            summary.run_id.as_str(),
        )])?
        .collect()
        .await?;
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    Ok(())
}
