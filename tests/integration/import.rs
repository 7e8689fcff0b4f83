//! `labelflow model import`: the same network from a safetensors state_dict, a
//! `torch.save` file (zip and legacy layouts, written without PyTorch by
//! tests/data/make_torch_state_dict.py) and an ONNX file gives a model identical,
//! byte for byte, to the one the weights came from; ImageNet's class names are the
//! default for a 1 000-class network; what is not an AlexNet is refused by name.

use std::path::Path;

use labelflow::onnx::alexnet::read_alexnet;
use labelflow::onnx::import::{write_safetensors, NamedTensors};

use super::common::*;

fn import(source: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    labelflow()
        .args(["model", "import"])
        .arg(source)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// The weights of `model` as a state_dict with a DataParallel prefix and an extra
/// tensor that is not part of the network.
fn state_dict_of(model: &Path) -> NamedTensors {
    let m = read_alexnet(model).unwrap();
    let mut named: NamedTensors = m
        .weights
        .iter()
        .map(|(n, t)| (format!("module.{n}"), t.clone()))
        .collect();
    named.insert(
        "module.extra.num_batches".into(),
        labelflow::onnx::F32Tensor::zeros(vec![1]),
    );
    named
}

/// `labelflow model init` at width 0.25 with `classes` outputs and `input` pixels.
fn quarter_width_alexnet(dir: &Path, classes: usize, input: usize) -> std::path::PathBuf {
    let path = dir.join("original.onnx");
    let o = labelflow()
        .args(["model", "init", "--width", "0.25", "--out"])
        .arg(&path)
        .args([
            "--classes",
            &classes.to_string(),
            "--input-size",
            &input.to_string(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    path
}

#[test]
fn every_format_imports_to_the_same_model() {
    let Some(py) = require_python("the standard library") else {
        return;
    };
    let dir = scratch("import-formats");
    let original = quarter_width_alexnet(&dir, 10, 96);
    let safetensors = dir.join("weights.safetensors");
    write_safetensors(&safetensors, &state_dict_of(&original)).unwrap();
    let mut sources = vec![safetensors.clone(), original.clone()];
    for (name, flag) in [("zip.pth", None), ("legacy.pth", Some("--legacy"))] {
        let path = dir.join(name);
        let mut c = std::process::Command::new(&py);
        c.arg(data("make_torch_state_dict.py"));
        if let Some(f) = flag {
            c.arg(f);
        }
        let o = c.arg(&safetensors).arg(&path).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        sources.push(path);
    }
    let want = std::fs::read(&original).unwrap();
    for source in &sources {
        let out = dir.join(format!(
            "from-{}.onnx",
            source.file_name().unwrap().to_string_lossy()
        ));
        let o = import(source, &out, &["--input-size", "96"]);
        assert!(o.status.success(), "{}: {}", source.display(), stderr(&o));
        let err = stderr(&o);
        if source.extension().is_some_and(|e| e != "onnx") {
            assert!(err.contains("ignored 1 tensors"), "{err}");
        }
        // The same spec, weights, class names and seed: the same bytes.
        assert!(
            std::fs::read(&out).unwrap() == want,
            "{} does not import to the original model",
            source.display()
        );
    }
}

#[test]
fn a_thousand_class_network_gets_imagenet_names_unless_told_otherwise() {
    let dir = scratch("import-imagenet");
    let original = quarter_width_alexnet(&dir, 1000, 64);
    let weights = dir.join("w.safetensors");
    write_safetensors(&weights, &state_dict_of(&original)).unwrap();
    let out = dir.join("imagenet.onnx");
    let o = import(&weights, &out, &["--input-size", "64"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = read_alexnet(&out).unwrap();
    assert_eq!(m.class_names.len(), 1000);
    assert_eq!(m.class_names[0], "tench");
    assert_eq!(m.spec.input_size, 64);

    let names = dir.join("names.txt");
    let custom: Vec<String> = (0..1000).map(|i| format!("thing {i}")).collect();
    std::fs::write(&names, custom.join("\n")).unwrap();
    let out = dir.join("custom.onnx");
    let o = import(
        &weights,
        &out,
        &[
            "--input-size",
            "64",
            "--class-names",
            names.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_alexnet(&out).unwrap().class_names, custom);

    // The imported model labels images.
    let preds = dir.join("preds");
    RunCmd::new(data("photos"), &preds)
        .model(dir.join("imagenet.onnx"))
        .ok();
    assert_eq!(preds_count(&preds), files_under(&data("photos")).len());
}

fn preds_count(dir: &Path) -> usize {
    read_parts(dir).iter().map(|b| b.num_rows()).sum()
}

#[test]
fn what_is_not_an_alexnet_is_refused_by_name() {
    let dir = scratch("import-refused");
    let mut named = NamedTensors::new();
    named.insert(
        "conv1.weight".into(),
        labelflow::onnx::F32Tensor::zeros(vec![64, 3, 7, 7]),
    );
    let resnet = dir.join("resnet.safetensors");
    write_safetensors(&resnet, &named).unwrap();
    let o = import(&resnet, &dir.join("x.onnx"), &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("not an AlexNet") && err.contains("features.0.weight"),
        "{err}"
    );
    assert!(!dir.join("x.onnx").exists());

    let unknown = dir.join("model.h5");
    std::fs::write(&unknown, b"x").unwrap();
    let o = import(&unknown, &dir.join("y.onnx"), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(".safetensors"), "{}", stderr(&o));
}
