use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::graph::adaptive_pool_matrix;
use super::spec::AvgPool;
use super::*;
use crate::batch::Element;
use crate::onnx::metadata;
use crate::onnx::reader::OnnxModel;
use crate::onnx::writer::{attr_int, model_proto, write_model_file, Dim, F32Tensor, GraphBuilder};
use crate::preprocess::PreprocessSpec;

fn sizes(spec: &AlexNetSpec) -> Vec<(String, usize)> {
    spec.trace()
        .unwrap()
        .into_iter()
        .map(|s| (s.layer, s.size))
        .collect()
}

fn size_after(spec: &AlexNetSpec, layer: &str) -> usize {
    sizes(spec)
        .into_iter()
        .find(|(l, _)| l == layer)
        .map(|(_, s)| s)
        .unwrap()
}

fn small(variant: Variant, seed: u64) -> AlexNetSpec {
    AlexNetSpec {
        variant,
        num_classes: 10,
        width: 0.25,
        input_size: 64,
        seed,
        input: Element::U8,
    }
}

#[test]
fn torchvision_224_matches_pytorch_shapes() {
    let spec = AlexNetSpec::default();
    let got: Vec<usize> = sizes(&spec).into_iter().map(|(_, s)| s).collect();
    assert_eq!(got, [55, 55, 27, 27, 27, 13, 13, 13, 13, 13, 13, 13, 6]);
    assert_eq!(spec.avgpool().unwrap(), AvgPool::Identity);
    assert_eq!(spec.conv_channels(), [64, 192, 384, 256, 256]);
    // torchvision.models.alexnet() has 61,100,840 parameters.
    assert_eq!(spec.parameter_count().unwrap(), 61_100_840);
    let shapes = spec.parameter_shapes().unwrap();
    assert_eq!(
        shapes[0],
        ("features.0.weight".to_owned(), vec![64, 3, 11, 11])
    );
    assert_eq!(
        shapes[2],
        ("features.3.weight".to_owned(), vec![192, 64, 5, 5])
    );
    assert_eq!(
        shapes[10],
        ("classifier.1.weight".to_owned(), vec![4096, 9216])
    );
    assert_eq!(shapes[15], ("classifier.6.bias".to_owned(), vec![1000]));
}

#[test]
fn small_inputs_shrink_to_one_pixel_and_are_pooled_up() {
    let spec = small(Variant::Torchvision, 0);
    assert_eq!(size_after(&spec, "features.0"), 15);
    assert_eq!(size_after(&spec, "features.2"), 7);
    assert_eq!(size_after(&spec, "features.5"), 3);
    assert_eq!(size_after(&spec, "features.12"), 1);
    assert_eq!(spec.avgpool().unwrap(), AvgPool::MatMul(1));
    assert_eq!(spec.conv_channels(), [16, 48, 96, 64, 64]);
    assert_eq!(spec.hidden_width(), 1024);
    // The classifier still sees C·6·6 features, as in PyTorch.
    let shapes = spec.parameter_shapes().unwrap();
    assert!(shapes.contains(&("classifier.1.weight".to_owned(), vec![1024, 64 * 36])));
}

#[test]
fn input_32_is_refused_naming_the_size_and_the_minimum() {
    for variant in [Variant::Torchvision, Variant::Paper] {
        let spec = AlexNetSpec {
            input_size: 32,
            ..small(variant, 0)
        };
        let err = spec.trace().unwrap_err().to_string();
        assert!(err.contains("input size 32 is too small"), "{err}");
        assert!(err.contains("is 1×1"), "{err}");
        assert!(err.contains("needs at least 3×3"), "{err}");
        assert!(
            err.contains("smallest input size that works is 63"),
            "{err}"
        );
        assert!(spec.random_weights().is_err());
    }
}

#[test]
fn smallest_input_is_63_for_both_variants() {
    for variant in [Variant::Torchvision, Variant::Paper] {
        assert_eq!(min_input_size(variant), 63);
        let ok = AlexNetSpec {
            input_size: 63,
            ..small(variant, 0)
        };
        assert_eq!(ok.feature_size().unwrap(), 1);
        let too_small = AlexNetSpec {
            input_size: 62,
            ..ok
        };
        assert!(too_small.validate().is_err());
    }
}

#[test]
fn paper_224_shapes_and_groups() {
    let spec = AlexNetSpec {
        variant: Variant::Paper,
        ..AlexNetSpec::default()
    };
    assert_eq!(size_after(&spec, "features.0"), 55);
    assert_eq!(size_after(&spec, "features.3"), 27);
    assert_eq!(size_after(&spec, "features.7"), 13);
    assert_eq!(size_after(&spec, "features.14"), 6);
    assert_eq!(spec.conv_channels(), [96, 256, 384, 384, 256]);
    let shapes: BTreeMap<String, Vec<usize>> =
        spec.parameter_shapes().unwrap().into_iter().collect();
    // Grouped convolutions see half the input channels.
    assert_eq!(shapes["features.4.weight"], [256, 48, 5, 5]);
    assert_eq!(shapes["features.8.weight"], [384, 256, 3, 3]);
    assert_eq!(shapes["features.10.weight"], [384, 192, 3, 3]);
    assert_eq!(shapes["features.12.weight"], [256, 192, 3, 3]);
    assert_eq!(shapes["classifier.1.weight"], [4096, 9216]);
}

#[test]
fn paper_width_keeps_grouped_channels_even() {
    let spec = AlexNetSpec {
        width: 0.3,
        ..small(Variant::Paper, 0)
    };
    for c in spec.conv_channels() {
        assert_eq!(c % 2, 0, "{:?}", spec.conv_channels());
    }
    let tiny = AlexNetSpec {
        width: 0.001,
        ..small(Variant::Paper, 0)
    };
    assert_eq!(tiny.conv_channels(), [2, 2, 2, 2, 2]);
    assert_eq!(tiny.hidden_width(), 4);
    tiny.random_weights().unwrap();
}

#[test]
fn paper_lrn_alpha_is_converted_to_onnx_semantics() {
    let spec = small(Variant::Paper, 0);
    let model = build_model(
        &spec,
        &spec.random_weights().unwrap(),
        &default_class_names(10),
    )
    .unwrap();
    let graph = model.graph.as_ref().unwrap();
    let lrns: Vec<_> = graph.node.iter().filter(|n| n.op_type == "LRN").collect();
    assert_eq!(lrns.len(), 2);
    let attr = |name: &str| lrns[0].attribute.iter().find(|a| a.name == name).unwrap();
    assert_eq!(attr("size").i, 5);
    assert_eq!(attr("alpha").f, 5e-4);
    assert_eq!(attr("beta").f, 0.75);
    assert_eq!(attr("bias").f, 2.0);
    let groups: Vec<i64> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .map(|n| n.attribute.iter().find(|a| a.name == "group").unwrap().i)
        .collect();
    assert_eq!(groups, [1, 2, 1, 2, 2]);
}

#[test]
fn adaptive_pool_matrix_follows_pytorch_bins() {
    assert_eq!(adaptive_pool_matrix(1, 6), vec![1.0; 6]);
    // in = 3: each output copies input floor(i / 2).
    let m = adaptive_pool_matrix(3, 6);
    for i in 0..6 {
        for j in 0..3 {
            assert_eq!(m[i * 3 + j], if j == i / 2 { 1.0 } else { 0.0 });
        }
    }
    // in = 7: bins [0,2) [1,3) [2,4) [3,5) [4,6) [5,7), overlapping as in PyTorch.
    let m = adaptive_pool_matrix(7, 6);
    for i in 0..6 {
        let row = &m[i * 7..(i + 1) * 7];
        let nonzero: Vec<usize> = (0..7).filter(|&j| row[j] != 0.0).collect();
        assert_eq!(nonzero, [i, i + 1]);
        assert!(row.iter().all(|&v| v == 0.0 || v == 0.5));
    }
}

#[test]
fn avgpool_uses_average_pool_when_divisible_and_matmul_otherwise() {
    let find = |f: usize| {
        (63..1200)
            .map(|s| AlexNetSpec {
                input_size: s,
                ..small(Variant::Torchvision, 0)
            })
            .find(|spec| spec.feature_size().unwrap() == f)
            .unwrap()
    };
    let ops = |spec: &AlexNetSpec| -> Vec<String> {
        let model = build_model(
            spec,
            &spec.random_weights().unwrap(),
            &default_class_names(10),
        )
        .unwrap();
        model
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type.clone())
            .collect()
    };
    let twelve = find(12);
    assert_eq!(twelve.avgpool().unwrap(), AvgPool::Uniform(2));
    assert!(ops(&twelve).contains(&"AveragePool".to_owned()));
    let seven = find(7);
    assert_eq!(seven.avgpool().unwrap(), AvgPool::MatMul(7));
    assert_eq!(ops(&seven).iter().filter(|o| *o == "MatMul").count(), 2);
    let six = ops(&AlexNetSpec {
        num_classes: 10,
        width: 0.25,
        ..AlexNetSpec::default()
    });
    assert!(!six.iter().any(|o| o == "AveragePool" || o == "MatMul"));
    assert!(!six.iter().any(|o| o == "Dropout"));
}

#[test]
fn bad_options_are_refused_with_the_option_named() {
    let err = |spec: AlexNetSpec| spec.validate().unwrap_err().to_string();
    assert!(err(AlexNetSpec {
        width: 0.0,
        ..AlexNetSpec::default()
    })
    .contains("width 0"));
    assert!(err(AlexNetSpec {
        width: f32::NAN,
        ..AlexNetSpec::default()
    })
    .contains("width NaN"));
    assert!(err(AlexNetSpec {
        num_classes: 0,
        ..AlexNetSpec::default()
    })
    .contains("num_classes"));
    let spec = small(Variant::Torchvision, 0);
    let weights = spec.random_weights().unwrap();
    let e = build_model(&spec, &weights, &default_class_names(9))
        .unwrap_err()
        .to_string();
    assert!(e.contains("9 class names given for 10 classes"), "{e}");
    assert_eq!("paper".parse::<Variant>().unwrap(), Variant::Paper);
    assert!("vgg"
        .parse::<Variant>()
        .unwrap_err()
        .to_string()
        .contains("\"vgg\""));
}

#[test]
fn weights_are_he_normal_with_zero_biases() {
    let spec = small(Variant::Torchvision, 5);
    let weights = spec.random_weights().unwrap();
    weights.check(&spec).unwrap();
    // classifier.1 is [1024, 64·36]; several blocks of 2^20 values, one stream each.
    let fc1 = weights.get("classifier.1.weight").unwrap().data();
    let var = fc1.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / fc1.len() as f64;
    let expected = 2.0 / 2304.0;
    assert!(
        (var / expected - 1.0).abs() < 0.01,
        "variance {var}, expected {expected}"
    );
    assert!(weights
        .get("features.0.bias")
        .unwrap()
        .data()
        .iter()
        .all(|&b| b == 0.0));
    // The convolutions do not depend on the number of classes.
    let other = AlexNetSpec {
        num_classes: 3,
        ..spec
    }
    .random_weights()
    .unwrap();
    assert_eq!(
        other.get("features.10.weight"),
        weights.get("features.10.weight")
    );
    assert_ne!(
        other.get("classifier.6.weight"),
        weights.get("classifier.6.weight")
    );
}

#[test]
fn weights_are_bit_identical_to_the_recorded_values() {
    // A fingerprint of the generator's output: if this changes, every seed gives
    // different models than before (and than on other machines).
    let weights = small(Variant::Paper, 7).random_weights().unwrap();
    let mut h = Sha256::new();
    for (name, t) in weights.iter() {
        h.update(name.as_bytes());
        for v in t.data() {
            h.update(v.to_le_bytes());
        }
    }
    let first = weights.get("features.0.weight").unwrap().data()[0];
    assert_eq!(
        (hex::encode(h.finalize()), first.to_bits()),
        (GOLDEN_SHA.to_owned(), GOLDEN_FIRST),
        "first value {first}"
    );
}
const GOLDEN_SHA: &str = "d4c397cef31fa7a149b65916cadb57b64d842186f14d3071bb10cf88c49f6567";
const GOLDEN_FIRST: u32 = 3_167_642_576; // -0.025194079

#[test]
fn same_seed_same_file_different_seed_different_file() {
    let dir = tempfile::tempdir().unwrap();
    let write = |seed: u64, file: &str| {
        let spec = small(Variant::Torchvision, seed);
        let path = dir.path().join(file);
        let sha = write_alexnet(
            &path,
            &spec,
            &spec.random_weights().unwrap(),
            &default_class_names(10),
        )
        .unwrap();
        assert_eq!(crate::onnx::writer::sha256_file(&path).unwrap(), sha);
        sha
    };
    let a = write(1, "a.onnx");
    let b = write(1, "b.onnx");
    let c = write(2, "c.onnx");
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Nothing but the models is left in the directory (no temporary files).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn round_trip_keeps_weights_metadata_and_shapes() {
    for variant in [Variant::Torchvision, Variant::Paper] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        let spec = small(variant, 3);
        let weights = spec.random_weights().unwrap();
        let names: Vec<String> = (0..10).map(|i| format!("kind \"{i}\" ✓")).collect();
        write_alexnet(&path, &spec, &weights, &names).unwrap();

        let model = OnnxModel::read(&path).unwrap();
        assert_eq!(model.producer_name, "labelflow");
        assert_eq!(model.ir_version, 8);
        assert_eq!(model.opset, Some(17));
        let expected_meta: BTreeMap<String, String> = spec.metadata(&names).into_iter().collect();
        assert_eq!(model.metadata, expected_meta);
        assert_eq!(
            model.metadata[metadata::ARCHITECTURE],
            variant.architecture()
        );
        assert_eq!(model.metadata[metadata::WIDTH], "0.25");
        assert_eq!(model.metadata[metadata::INPUT_SIZE], "64");
        assert_eq!(model.metadata[metadata::SEED], "3");
        assert_eq!(model.metadata[metadata::OUTPUT], "logits");
        assert_eq!(model.class_names().unwrap().unwrap(), names);
        assert_eq!(
            model.preprocess().unwrap().unwrap(),
            PreprocessSpec::imagenet(64)
        );
        assert_eq!(model.inputs.len(), 1);
        assert_eq!(model.inputs[0].name, "input");
        // RGB bytes in, normalised by the graph's first nodes.
        assert_eq!(model.inputs[0].elem_type, 2);
        assert_eq!(
            model.inputs[0].dims,
            [Dim::batch(), Dim::Fixed(64), Dim::Fixed(64), Dim::Fixed(3)]
        );
        assert_eq!(model.metadata[metadata::INPUT], metadata::INPUT_UINT8);
        assert_eq!(model.outputs[0].name, "logits");
        assert_eq!(model.outputs[0].dims, [Dim::batch(), Dim::Fixed(10)]);
        for (name, t) in weights.iter() {
            assert_eq!(model.initializer(name), Some(t), "{name}");
        }

        let back = read_alexnet(&path).unwrap();
        assert_eq!(back.spec, spec);
        assert_eq!(back.class_names, names);
        assert_eq!(back.weights, weights);
    }
}

#[test]
fn float_data_initializers_are_read_too() {
    let mut proto = build_model(
        &small(Variant::Torchvision, 0),
        &small(Variant::Torchvision, 0).random_weights().unwrap(),
        &default_class_names(10),
    )
    .unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let t = &mut graph.initializer[0];
    let values: Vec<f32> = t
        .raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    t.raw_data.clear();
    t.float_data = values.clone();
    let name = t.name.clone();
    let model = OnnxModel::from_proto(proto).unwrap();
    assert_eq!(model.initializer(&name).unwrap().data(), values.as_slice());
}

fn without(path: &Path, drop_name: &str, reshape: Option<(&str, Vec<usize>)>) -> OnnxModel {
    let mut model = OnnxModel::read(path).unwrap();
    model.initializers.remove(drop_name);
    if let Some((name, shape)) = reshape {
        let len = shape.iter().product();
        model.initializers.insert(
            name.to_owned(),
            F32Tensor::new(shape, vec![0.0; len]).unwrap(),
        );
    }
    model
}

#[test]
fn non_alexnet_models_are_refused_naming_the_initializer() {
    let dir = tempfile::tempdir().unwrap();

    // A one-layer linear classifier.
    let mut g = GraphBuilder::new("linear");
    g.input_f32("input", &[Dim::batch(), Dim::Fixed(4)]);
    g.output_f32("logits", &[Dim::batch(), Dim::Fixed(2)]);
    g.initializer(
        "fc.weight",
        &F32Tensor::new(vec![2, 4], vec![0.5; 8]).unwrap(),
    );
    g.initializer("fc.bias", &F32Tensor::zeros(vec![2]));
    g.node(
        "Gemm",
        "fc",
        &["input", "fc.weight", "fc.bias"],
        &["logits"],
        vec![attr_int("transB", 1)],
    );
    let linear = dir.path().join("linear.onnx");
    write_model_file(&model_proto(g.build(), &[]), &linear).unwrap();
    let err = detect(&OnnxModel::read(&linear).unwrap())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "not an AlexNet model: missing initializer `features.0.weight` (the first convolution)"
    );
    let crate_err: crate::Error = read_alexnet(&linear).unwrap_err().into();
    assert!(matches!(crate_err, crate::Error::Onnx { .. }));

    let path = dir.path().join("alexnet.onnx");
    let spec = small(Variant::Torchvision, 0);
    write_alexnet(
        &path,
        &spec,
        &spec.random_weights().unwrap(),
        &default_class_names(10),
    )
    .unwrap();

    let err = detect(&without(&path, "classifier.4.bias", None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing initializer `classifier.4.bias`"),
        "{err}"
    );
    assert!(err.contains("[1024]"), "{err}");

    let odd = without(&path, "", Some(("features.6.weight", vec![96, 48, 5, 5])));
    let err = detect(&odd).unwrap_err().to_string();
    assert!(
        err.contains("`features.6.weight` has shape [96, 48, 5, 5], expected [96, 48, 3, 3]"),
        "{err}"
    );

    let err = detect(&without(&path, "features.3.weight", None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("neither `features.3.weight`"), "{err}");

    let err = detect(&without(
        &path,
        "",
        Some(("features.0.weight", vec![16, 1, 11, 11])),
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("expected [C, 3, 11, 11]"), "{err}");

    // Not protobuf at all.
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"\xff\xff\xff not a model").unwrap();
    let err = OnnxModel::read(&junk).unwrap_err().to_string();
    assert!(
        err.contains("junk.onnx is not a readable ONNX model"),
        "{err}"
    );
}

#[test]
fn detection_without_labelflow_metadata_estimates_the_width() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    let spec = small(Variant::Paper, 0);
    write_alexnet(
        &path,
        &spec,
        &spec.random_weights().unwrap(),
        &default_class_names(10),
    )
    .unwrap();
    let mut model = OnnxModel::read(&path).unwrap();
    model.metadata.clear();
    let found = detect(&model).unwrap();
    assert_eq!(found, spec);
}

#[test]
fn weights_check_names_the_offending_tensor() {
    let spec = small(Variant::Torchvision, 0);
    let mut weights = spec.random_weights().unwrap();
    weights.insert("classifier.6.bias", F32Tensor::zeros(vec![11]));
    let err = weights.check(&spec).unwrap_err().to_string();
    assert!(
        err.contains("`classifier.6.bias` has shape [11], expected [10]"),
        "{err}"
    );
    let mut map = weights.into_inner();
    map.remove("classifier.6.bias");
    let err = AlexNetWeights::new(map)
        .check(&spec)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`classifier.6.bias` is missing"), "{err}");
}

#[test]
fn a_float_input_model_takes_the_normalised_tensor_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("float.onnx");
    let spec = AlexNetSpec {
        input: Element::F32,
        ..small(Variant::Torchvision, 5)
    };
    let weights = spec.random_weights().unwrap();
    write_alexnet(&path, &spec, &weights, &default_class_names(10)).unwrap();
    let model = OnnxModel::read(&path).unwrap();
    assert_eq!(model.inputs[0].elem_type, 1);
    assert_eq!(
        model.inputs[0].dims,
        [Dim::batch(), Dim::Fixed(3), Dim::Fixed(64), Dim::Fixed(64)]
    );
    assert!(!model.metadata.contains_key(metadata::INPUT));
    assert!(model.initializer("input.mean").is_none());
    assert_eq!(read_alexnet(&path).unwrap().spec, spec);
}
