//! `labelflow model init` and `labelflow model inspect`.

use labelflow::onnx::alexnet::{self, AlexNetSpec};

use super::ModelInitArgs;

/// `labelflow model init`: a seeded AlexNet written where asked.
pub fn init(args: &ModelInitArgs) -> anyhow::Result<u8> {
    let classes: Vec<String> = match &args.class_names {
        Some(p) => labelflow::onnx::read_class_names(p)?,
        None => {
            anyhow::ensure!(args.classes >= 1, "--classes must be at least 1");
            alexnet::default_class_names(args.classes)
        }
    };
    let spec = AlexNetSpec {
        variant: args.variant,
        num_classes: classes.len(),
        width: args.width,
        input_size: args.input_size,
        seed: args.seed,
    };
    let sha = labelflow::onnx::init_alexnet(&args.out, &spec, &classes)?;
    let params = spec
        .parameter_count()
        .map_err(|e| labelflow::onnx::model_error(&args.out, e))?;
    eprintln!(
        "wrote {} ({:?}, {} classes, width {}, input {}px, {:.1}M parameters, seed {})\nsha256 {sha}",
        args.out.display(),
        args.variant,
        classes.len(),
        args.width,
        args.input_size,
        params as f64 / 1e6,
        args.seed
    );
    Ok(0)
}

/// `labelflow model inspect`: what the batch job will read from a model.
pub fn inspect(path: &std::path::Path, ort_lib: Option<&std::path::Path>) -> anyhow::Result<u8> {
    labelflow::runtime::init(ort_lib)?;
    let model = labelflow::infer::ModelBytes::read(path)?;
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
        Some(p) => println!("preprocess:  {}", p.to_json()),
        None => println!("preprocess:  not declared (ImageNet defaults apply)"),
    }
    Ok(0)
}
