//! The `metadata_props` contract between the models this project writes and the code
//! that runs them. Keys and value formats here must not change silently.

use serde::{Deserialize, Serialize};

/// JSON array of class-name strings; its length is the model's number of outputs.
pub const CLASSES: &str = "labelflow.classes";
/// JSON object describing the input transform: see [`Preprocess`].
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

/// The value of [`OUTPUT`] for models whose output is unnormalised class scores.
pub const OUTPUT_LOGITS: &str = "logits";

/// How an image becomes model input: resize the short side to `resize`, centre-crop
/// `crop`×`crop`, scale pixels to `pixel_range`, subtract `mean` and divide by `std` per
/// channel, and lay out as `layout` in `channel_order`.
///
/// Serialised as the JSON object stored under [`PREPROCESS`], fields in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Target length of the shorter image side before cropping.
    pub resize: u32,
    /// Side of the square centre crop; equals the model's input size.
    pub crop: u32,
    /// Per-channel mean subtracted after scaling to `pixel_range`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after subtracting `mean`.
    pub std: [f32; 3],
    /// `"rgb"` or `"bgr"`.
    pub channel_order: String,
    /// `"nchw"` or `"nhwc"`.
    pub layout: String,
    /// `"unit"` (pixels in 0–1 before normalising) or `"byte"` (0–255).
    pub pixel_range: String,
}

impl Preprocess {
    /// torchvision's ImageNet evaluation transform for a `crop`-pixel input: resize to
    /// `round(crop · 256 / 224)`, centre crop, ImageNet mean/std on 0–1 RGB, NCHW.
    pub fn imagenet(crop: u32) -> Self {
        let resize = (f64::from(crop) * 256.0 / 224.0).round() as u32;
        Preprocess {
            resize,
            crop,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            channel_order: "rgb".to_owned(),
            layout: "nchw".to_owned(),
            pixel_range: "unit".to_owned(),
        }
    }

    /// The JSON text stored under [`PREPROCESS`].
    pub fn to_json(&self) -> String {
        // Serialising a struct of numbers and strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the JSON text stored under [`PREPROCESS`].
    pub fn from_json(text: &str) -> Result<Self, super::OnnxError> {
        serde_json::from_str(text).map_err(|e| super::OnnxError::Metadata {
            key: PREPROCESS.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// The JSON text stored under [`CLASSES`].
pub fn classes_to_json(names: &[String]) -> String {
    serde_json::to_string(names).unwrap_or_default()
}

/// Parses the JSON text stored under [`CLASSES`].
pub fn classes_from_json(text: &str) -> Result<Vec<String>, super::OnnxError> {
    serde_json::from_str(text).map_err(|e| super::OnnxError::Metadata {
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
            Preprocess::imagenet(224).to_json(),
            r#"{"resize":256,"crop":224,"mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225],"channel_order":"rgb","layout":"nchw","pixel_range":"unit"}"#
        );
        assert_eq!(Preprocess::imagenet(64).resize, 73);
        let back = Preprocess::from_json(&Preprocess::imagenet(96).to_json()).unwrap();
        assert_eq!(back, Preprocess::imagenet(96));
    }
}
