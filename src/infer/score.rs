//! A model's output row → probabilities → the best classes; ten-crop views averaged.

use super::info::OutputKind;

/// One top-k entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub index: usize,
    pub score: f32,
}

/// In-place softmax of one row (numerically stable).
pub fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    if sum > 0.0 {
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

fn looks_like_probabilities(row: &[f32]) -> bool {
    let sum: f32 = row.iter().sum();
    row.iter().all(|v| (0.0..=1.0).contains(v)) && (sum - 1.0).abs() < 1e-3
}

/// Softmax `row` in place unless `kind` says it already holds probabilities.
fn to_probabilities(row: &mut [f32], kind: OutputKind) {
    let needs_softmax = match kind {
        OutputKind::Logits => true,
        OutputKind::Probabilities => false,
        OutputKind::Unknown => !looks_like_probabilities(row),
    };
    if needs_softmax {
        softmax(row);
    }
}

/// Probabilities of one image seen as `rows.len() / classes` views (test-time
/// augmentation): each view's row is turned into probabilities (per `kind`), then
/// the rows are averaged, as the 2012 paper averaged its ten crops' softmax outputs.
/// `rows` is overwritten.
pub fn average_views(rows: &mut [f32], classes: usize, kind: OutputKind) -> Vec<f32> {
    let mut mean = vec![0f32; classes];
    let mut views = 0usize;
    for row in rows.chunks_exact_mut(classes.max(1)) {
        to_probabilities(row, kind);
        for (m, v) in mean.iter_mut().zip(row.iter()) {
            *m += *v;
        }
        views += 1;
    }
    if views > 1 {
        for m in mean.iter_mut() {
            *m /= views as f32;
        }
    }
    mean
}

/// The `k` best classes of each of `images` images from one batch's raw outputs:
/// `views × classes` values an image, its views averaged as probabilities (test-time
/// augmentation). Errs when the model returned fewer values than that.
pub fn classify(
    scores: &mut [f32],
    images: usize,
    classes: usize,
    views: usize,
    kind: OutputKind,
    k: usize,
) -> crate::Result<Vec<Vec<Scored>>> {
    let per_image = classes * views;
    if scores.len() < images * per_image {
        return Err(crate::Error::Inference(format!(
            "the model returned {} values for {images} images of {classes} classes",
            scores.len()
        )));
    }
    Ok(scores
        .chunks_mut(per_image.max(1))
        .take(images)
        .map(|row| {
            if views == 1 {
                top_k(row, kind, k)
            } else {
                let mut mean = average_views(row, classes, kind);
                top_k(&mut mean, OutputKind::Probabilities, k)
            }
        })
        .collect())
}

/// Turn one output row into probabilities (per `kind`) and return the `k` best,
/// highest first; ties keep the lower index first.
pub fn top_k(row: &mut [f32], kind: OutputKind, k: usize) -> Vec<Scored> {
    to_probabilities(row, kind);
    let k = k.min(row.len());
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let cmp = |a: &usize, b: &usize| {
        row[*b]
            .partial_cmp(&row[*a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(b))
    };
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx.into_iter()
        .take(k)
        .map(|index| Scored {
            index,
            score: row[index],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_then_top_k_orders_by_probability() {
        let mut row = vec![1.0, 3.0, 2.0, 3.0];
        let top = top_k(&mut row, OutputKind::Logits, 3);
        assert_eq!(
            top.iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![1, 3, 2]
        );
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
        assert!((top[0].score - top[1].score).abs() < 1e-7);
    }

    #[test]
    fn views_are_averaged_after_softmax() {
        // Two views of three classes: softmax each, then the mean.
        let mut rows = vec![0.0, 0.0, 0.0, 2.0f32.ln(), 0.0, 0.0];
        let p = average_views(&mut rows, 3, OutputKind::Logits);
        let expect = [(1.0 / 3.0 + 0.5) / 2.0, (1.0 / 3.0 + 0.25) / 2.0];
        assert!((p[0] - expect[0]).abs() < 1e-6, "{p:?}");
        assert!((p[1] - expect[1]).abs() < 1e-6 && (p[2] - p[1]).abs() < 1e-6);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let mut probs = vec![1.0, 0.0, 0.0, 1.0];
        assert_eq!(
            average_views(&mut probs, 2, OutputKind::Probabilities),
            [0.5, 0.5]
        );
    }

    #[test]
    fn probabilities_are_not_softmaxed_twice() {
        let mut row = vec![0.1, 0.7, 0.2];
        let top = top_k(&mut row, OutputKind::Unknown, 5);
        assert_eq!(top.len(), 3);
        assert_eq!(
            top[0],
            Scored {
                index: 1,
                score: 0.7
            }
        );
    }
}
