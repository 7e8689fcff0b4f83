//! `labelflow model init` and `labelflow model inspect`.

use labelflow::onnx::alexnet::{self, AlexNetSpec};

use super::{ModelImportArgs, ModelInitArgs};

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
        input: args.input_type,
    };
    let sha = labelflow::onnx::init_alexnet(&args.out, &spec, &classes)?;
    let params = spec
        .parameter_count()
        .map_err(|e| labelflow::onnx::model_error(&args.out, e))?;
    eprintln!(
        "wrote {} ({:?}, {} classes, width {}, input {}px {}, {:.1}M parameters, seed {})\nsha256 {sha}",
        args.out.display(),
        args.variant,
        classes.len(),
        args.width,
        args.input_size,
        args.input_type,
        params as f64 / 1e6,
        args.seed
    );
    Ok(0)
}

/// `labelflow model import`: an AlexNet from PyTorch or torchvision, written as the
/// model the batch job runs.
pub fn import(args: &ModelImportArgs) -> anyhow::Result<u8> {
    use labelflow::onnx::import;
    let started = std::time::Instant::now();
    let options = import::ImportOptions {
        class_names: args
            .class_names
            .as_deref()
            .map(labelflow::onnx::read_class_names)
            .transpose()?,
        input_size: args.input_size,
        input: Some(args.input_type),
    };
    let imported = import::read(&args.source, &options)
        .map_err(|e| labelflow::onnx::model_error(&args.source, e))?;
    let read_s = started.elapsed().as_secs_f64();
    let sha = import::write(&imported, &args.out)
        .map_err(|e| labelflow::onnx::model_error(&args.out, e))?;
    let spec = &imported.spec;
    eprintln!(
        "imported {} ({:?}, {:?} layout, {} classes, width {}, input {}px {}) in {read_s:.1} s\nwrote {} in {:.1} s total\nsha256 {sha}",
        args.source.display(),
        imported.format,
        spec.variant,
        spec.num_classes,
        spec.width,
        spec.input_size,
        spec.input,
        args.out.display(),
        started.elapsed().as_secs_f64(),
    );
    if !imported.ignored.is_empty() {
        eprintln!(
            "ignored {} tensors that are not part of the network (e.g. {})",
            imported.ignored.len(),
            imported.ignored[0]
        );
    }
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
    let feed = match info.element {
        labelflow::batch::Element::U8 => "uint8 RGB, Nhwc, normalised in the graph".to_string(),
        labelflow::batch::Element::F32 => format!("float32, {:?}", info.layout),
    };
    println!(
        "input:       {} ({feed}, batch {})",
        info.input_name,
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
