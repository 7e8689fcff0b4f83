//! The `metadata_props` contract between the models this project writes and the code
//! that runs them. Keys and value formats here must not change silently.

use crate::preprocess::PreprocessSpec;

/// JSON array of class-name strings; its length is the model's number of outputs.
pub const CLASSES: &str = "labelflow.classes";
/// JSON object describing the input transform: [`PreprocessSpec`]'s serde form.
pub const PREPROCESS: &str = "labelflow.preprocess";
/// What the output tensor holds; always `"logits"` for models made here.
pub const OUTPUT: &str = "labelflow.output";
/// `"alexnet"` (torchvision layout) or `"alexnet-paper"` (the 2012 paper's).
pub const ARCHITECTURE: &str = "labelflow.architecture";
/// The channel width multiplier, as a decimal string (`"1"`, `"0.25"`).
pub const WIDTH: &str = "labelflow.width";
/// The square input size in pixels, as a decimal string (`"224"`).
pub const INPUT_SIZE: &str = "labelflow.input_size";
/// The seed the initial weights were drawn from, as a decimal string.
pub const SEED: &str = "labelflow.seed";
/// `fp16` for a half-precision copy (`--precision fp16`); absent for float32.
pub const PRECISION: &str = "labelflow.precision";
/// How the image input is fed: [`INPUT_UINT8`] when the model takes RGB bytes and
/// normalises them in its graph as [`PREPROCESS`] says; absent for a float input
/// (the normalised tensor, fed as [`PREPROCESS`] says).
pub const INPUT: &str = "labelflow.input";
/// The value of [`INPUT`] for a `uint8` `[N, crop, crop, 3]` RGB input whose first
/// nodes are Transpose → Cast → Sub(mean), with 1/std folded into the first
/// convolution's weights.
pub const INPUT_UINT8: &str = "uint8-rgb-nhwc, normalised in the graph";

/// The value of [`OUTPUT`] for models whose output is unnormalised class scores.
pub const OUTPUT_LOGITS: &str = "logits";
/// The value of [`OUTPUT`] for models whose output already sums to 1 per row
/// (`"probs"` is read as the same).
pub const OUTPUT_PROBABILITIES: &str = "probabilities";

/// The value stored under [`PREPROCESS`] (see [`PreprocessSpec`]'s JSON form).
pub fn preprocess_to_json(spec: &PreprocessSpec) -> String {
    spec.to_json()
}

/// Parses the value stored under [`PREPROCESS`].
pub fn preprocess_from_json(text: &str) -> Result<PreprocessSpec, crate::error::OnnxError> {
    PreprocessSpec::from_json(text).map_err(|reason| crate::error::OnnxError::Metadata {
        key: PREPROCESS.to_owned(),
        reason,
    })
}

/// The JSON text stored under [`CLASSES`].
pub fn classes_to_json(names: &[String]) -> String {
    serde_json::to_string(names).unwrap_or_default()
}

/// Parses the JSON text stored under [`CLASSES`].
pub fn classes_from_json(text: &str) -> Result<Vec<String>, crate::error::OnnxError> {
    serde_json::from_str(text).map_err(|e| crate::error::OnnxError::Metadata {
        key: CLASSES.to_owned(),
        reason: format!("expected a JSON array of strings: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_json_is_the_documented_contract() {
        assert_eq!(
            preprocess_to_json(&PreprocessSpec::imagenet(224)),
            r#"{"resize":256,"crop":224,"mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225],"channel_order":"rgb","layout":"nchw","pixel_range":"unit"}"#
        );
        assert_eq!(PreprocessSpec::imagenet(64).resize, 73);
        let back =
            preprocess_from_json(&preprocess_to_json(&PreprocessSpec::imagenet(96))).unwrap();
        assert_eq!(back, PreprocessSpec::imagenet(96));
        // Fields left out take ImageNet's values; unknown fields and bad values are refused,
        // naming the key.
        let partial =
            preprocess_from_json(r#"{"crop": 64, "resize": 73, "channel_order": "bgr"}"#).unwrap();
        assert_eq!(partial.crop, 64);
        assert_eq!(partial.channel_order, crate::preprocess::ChannelOrder::Bgr);
        assert_eq!(partial.mean, PreprocessSpec::default().mean);
        for bad in [
            r#"{"crop": "big"}"#,
            r#"{"crop": 64, "interpolation": "bicubic"}"#,
        ] {
            let e = preprocess_from_json(bad).unwrap_err().to_string();
            assert!(e.contains(PREPROCESS), "{e}");
        }
        let unknown = preprocess_from_json(r#"{"interpolation": "bicubic"}"#)
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("interpolation"), "{unknown}");
    }
}
