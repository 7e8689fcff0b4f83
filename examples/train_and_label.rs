//! The whole loop through the library: train a small AlexNet on labelled images,
//! label a folder with the exported model, and measure it with SQL.
//!
//! ```sh
//! scripts/setup-ort.sh                                   # ONNX Runtime, once
//! eval "$(scripts/setup-torch.sh | tail -n2 | sed 's/^/export /')"
//! cargo run --release --features train --example train_and_label -- \
//!     tests/data/fashion/train tests/data/fashion/val out/example-train
//! ```

use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;

use labelflow::config::RunPlan;
use labelflow::pipeline;
use labelflow::train::{self, NoTrainProgress, SmallSet, TrainConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let labelled = args
        .next()
        .unwrap_or_else(|| "tests/data/fashion/train".into());
    let unseen = args
        .next()
        .unwrap_or_else(|| "tests/data/fashion/val".into());
    let out = PathBuf::from(args.next().unwrap_or_else(|| "out/example-train".into()));

    // 1. Train: a quarter-width AlexNet at 64 pixels (CPU-sized), 10 % of the labelled
    //    images held out for validation by a stable hash of their keys. A few hundred
    //    images are a small set, so the recipe's small-set numbers apply; the batch
    //    size set here is taken out of them so that it stays 16 (as `--batch-size 16`
    //    does on the command line).
    let config = TrainConfig {
        data: labelled,
        out: out.join("model"),
        width: 0.25,
        input_size: 64,
        epochs: 30,
        batch_size: 16,
        small_set: Some(SmallSet {
            batch_size: None,
            ..SmallSet::default()
        }),
        ..TrainConfig::default()
    };
    let report = train::train(&config, Arc::new(NoTrainProgress)).await?;
    let last = report
        .metrics
        .last()
        .context("the training run reported no epoch")?;
    println!(
        "trained {} ({} classes): validation top-1 {:.2} after {} epochs",
        report.model.display(),
        report.card.classes.len(),
        last.val_top1,
        last.epoch
    );

    // 2. Label the unseen folder with the exported model (what `labelflow run` does).
    let preds = out.join("preds").display().to_string();
    let plan = RunPlan::builder(unseen, preds.clone(), &report.model).build()?;
    let summary = pipeline::Run::new(&plan).execute().await?;
    println!("labelled {} images into {preds}", summary.labelled);

    // 3. Query: accuracy per true class, which is the first folder of each key.
    let ctx = labelflow::query::open(&preds).await?;
    let batches = ctx
        .sql(
            "SELECT split_part(key, '/', 1) AS class, count(*) AS images, \
             round(avg(CASE WHEN label = split_part(key, '/', 1) THEN 1.0 ELSE 0.0 END), 2) AS top1 \
             FROM latest GROUP BY 1 ORDER BY 1",
        )
        .await?
        .collect()
        .await?;
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    Ok(())
}
