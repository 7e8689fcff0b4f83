//! Checkpoints: weights, optimiser state and run state each epoch, read back by `--resume`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::optim::{Optimizer, EMA, EXP_AVG, EXP_AVG_SQ, MOMENTUM};
use crate::error::TrainError;
use crate::train::metrics::EpochMetrics;
use crate::train::model::AlexNet;
use crate::Result;

/// Optimiser and schedule state saved with every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RunState {
    /// Epochs completed.
    pub(super) epoch: u32,
    pub(super) lr: f64,
    pub(super) best_val_loss: f64,
    pub(super) bad_epochs: usize,
    pub(super) metrics: Vec<EpochMetrics>,
    pub(super) classes: Vec<String>,
    pub(super) architecture: String,
    pub(super) width: f32,
    pub(super) input_size: usize,
    pub(super) head_only: bool,
    pub(super) seed: u64,
    /// The recipe's name (checkpoints from before recipes existed are the paper's).
    #[serde(default = "paper")]
    pub(super) recipe: String,
    /// The update rule's name (empty in checkpoints from before it could be chosen:
    /// then the recipe's).
    #[serde(default)]
    pub(super) optimiser: String,
    #[serde(default)]
    pub(super) batch_norm: bool,
    /// The moving average's decay (0: none).
    #[serde(default)]
    pub(super) ema: f64,
    /// Optimiser updates made so far.
    #[serde(default)]
    pub(super) steps: u64,
}

fn paper() -> String {
    "paper".to_owned()
}

/// The update rule a checkpoint was made with: checkpoints from before it could be
/// chosen name none, and used their recipe's.
fn saved_optimiser(state: &RunState) -> String {
    if !state.optimiser.is_empty() {
        return state.optimiser.clone();
    }
    state
        .recipe
        .parse::<crate::train::config::Recipe>()
        .map(|r| r.defaults().optimiser.name().to_owned())
        .unwrap_or_default()
}

const CKPT_WEIGHTS: &str = "last.safetensors";
const CKPT_STATE: &str = "last.json";

/// Saves `last.*` (weights, optimiser state, run state) and, when `keep_epochs` > 0, a
/// copy of this epoch's weights (`epoch-NNN.safetensors`, no optimiser state), removing
/// all but the newest `keep_epochs` such copies.
pub(super) fn save_checkpoint(
    dir: &Path,
    model: &AlexNet,
    opt: &Optimizer,
    state: &RunState,
    keep_epochs: usize,
) -> Result<()> {
    let ck = |reason: String| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| ck(e.to_string()))?;
    let live: Vec<(String, Tensor)> = model
        .parameters()
        .into_iter()
        .map(|(n, t)| Ok((n, t.f_detach()?.f_to_device(tch::Device::Cpu)?)))
        .collect::<Result<_, TrainError>>()?;
    let mut cpu: Vec<(String, Tensor)> = live
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    // An epoch's copy holds what would be exported: the moving averages, when kept.
    let weights: Vec<(String, Tensor)> = live
        .iter()
        .map(|(n, t)| match opt.state.get(&format!("{EMA}{n}")) {
            Some(avg) => Ok((n.clone(), avg.f_detach()?.f_to_device(tch::Device::Cpu)?)),
            None => Ok((n.clone(), t.shallow_clone())),
        })
        .collect::<Result<_, TrainError>>()?;
    for (key, t) in &opt.state {
        cpu.push((key.clone(), t.f_detach()?.f_to_device(tch::Device::Cpu)?));
    }
    let tmp = dir.join(format!("{CKPT_WEIGHTS}.tmp"));
    Tensor::write_safetensors(&cpu, &tmp).map_err(|e| ck(e.to_string()))?;
    let text = serde_json::to_string_pretty(state).map_err(|e| ck(e.to_string()))?;
    let tmp_state = dir.join(format!("{CKPT_STATE}.tmp"));
    std::fs::write(&tmp_state, text).map_err(|e| ck(e.to_string()))?;
    // Weights first, then the state that names their epoch.
    std::fs::rename(&tmp, dir.join(CKPT_WEIGHTS)).map_err(|e| ck(e.to_string()))?;
    std::fs::rename(&tmp_state, dir.join(CKPT_STATE)).map_err(|e| ck(e.to_string()))?;
    if keep_epochs == 0 {
        return Ok(());
    }
    // The weights of the newest epochs, so an earlier epoch can still be imported
    // (`labelflow model import`) after a later one overfits. Weights only: with AdamW's
    // two moments the optimiser state is twice the model, and at full size a copy per
    // epoch would fill a disk over a long run.
    let name = format!("epoch-{:03}.safetensors", state.epoch);
    let tmp = dir.join(format!("{name}.tmp"));
    Tensor::write_safetensors(&weights, &tmp).map_err(|e| ck(e.to_string()))?;
    std::fs::rename(&tmp, dir.join(&name)).map_err(|e| ck(e.to_string()))?;
    let mut epochs: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| ck(e.to_string()))?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let n = path
                .file_name()?
                .to_str()?
                .strip_prefix("epoch-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((n, path))
        })
        .collect();
    epochs.sort();
    let surplus = epochs.len().saturating_sub(keep_epochs);
    for (_, old) in epochs.into_iter().take(surplus) {
        std::fs::remove_file(&old).map_err(|e| ck(format!("{}: {e}", old.display())))?;
    }
    Ok(())
}

pub(super) fn load_checkpoint(
    dir: &Path,
    model: &mut AlexNet,
    opt: &mut Optimizer,
    expect: &RunState,
) -> Result<RunState> {
    let ck = |reason: String| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        reason,
    };
    let state_path = dir.join(CKPT_STATE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| {
        ck(format!(
            "--resume needs {} from an earlier run with the same --out: {e}",
            state_path.display()
        ))
    })?;
    let state: RunState =
        serde_json::from_str(&text).map_err(|e| ck(format!("{}: {e}", state_path.display())))?;
    if state.classes != expect.classes
        || state.architecture != expect.architecture
        || state.input_size != expect.input_size
        || state.width != expect.width
        || state.head_only != expect.head_only
        || state.recipe != expect.recipe
        || saved_optimiser(&state) != expect.optimiser
        || state.batch_norm != expect.batch_norm
        || state.ema != expect.ema
    {
        return Err(ck(format!(
            "the checkpoint was made for {} (width {}, input {}, classes {:?}, head-only {}, recipe {}, optimiser {}, batch norm {}, ema {}); this run is {} (width {}, input {}, classes {:?}, head-only {}, recipe {}, optimiser {}, batch norm {}, ema {}): resume with the flags of the interrupted run",
            state.architecture, state.width, state.input_size, state.classes, state.head_only, state.recipe, saved_optimiser(&state), state.batch_norm, state.ema,
            expect.architecture, expect.width, expect.input_size, expect.classes, expect.head_only, expect.recipe, expect.optimiser, expect.batch_norm, expect.ema
        ))
        .into());
    }
    let saved: BTreeMap<String, Tensor> = Tensor::read_safetensors(dir.join(CKPT_WEIGHTS))
        .map_err(|e| ck(e.to_string()))?
        .into_iter()
        .collect();
    model.load(&saved)?;
    opt.state.clear();
    let names: Vec<String> = opt.params.iter().map(|(n, _)| n.clone()).collect();
    // Moving averages may exist for weights the optimiser does not update (batch
    // normalisation's statistics).
    for (name, _) in model.parameters() {
        let key = format!("{EMA}{name}");
        if let Some(t) = saved.get(&key) {
            opt.state.insert(key, t.f_to_device(model.device())?);
        }
    }
    for name in names {
        for prefix in [MOMENTUM, EXP_AVG, EXP_AVG_SQ] {
            let key = format!("{prefix}{name}");
            if let Some(t) = saved.get(&key) {
                opt.state.insert(key, t.f_to_device(model.device())?);
            }
        }
    }
    opt.steps = state.steps;
    Ok(state)
}
