//! Preprocessed images → fixed-shape batches for the inference sessions.
//!
//! A session always sees the same input shape: `batch_size` inputs of `input_len`
//! values. With test-time augmentation an image is `views` consecutive inputs and a
//! batch holds whole images only, so a batch is `batch_size / views` images (at least
//! one) and the inputs past the real ones are zero padding — as is the tail of the last
//! batch of a run.

/// A batch of preprocessed images, padded to the session's batch size.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchInput {
    /// `batch_size × input_len` values; inputs past `real` are padding.
    pub data: Vec<f32>,
    /// Number of real inputs at the front (images × views).
    pub real: usize,
}

/// The shape every batch has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchShape {
    /// Inputs per inference call (the session's batch dimension).
    pub batch_size: usize,
    /// Inputs per image (1, or 10 with ten-crop test-time augmentation).
    pub views: usize,
    /// Values in one input (`3 × crop × crop`).
    pub input_len: usize,
}

impl BatchShape {
    /// Whole images per batch (at least one).
    pub fn images_per_batch(&self) -> usize {
        (self.batch_size / self.views.max(1)).max(1)
    }

    /// Values per image (all its views).
    pub fn image_len(&self) -> usize {
        self.input_len * self.views.max(1)
    }

    /// Values per padded batch.
    pub fn batch_len(&self) -> usize {
        self.batch_size.max(self.views) * self.input_len
    }
}

/// One full (or, at the end, padded) batch and the items its images came from, in order.
#[derive(Debug)]
pub struct Batch<T> {
    pub input: BatchInput,
    pub items: Vec<T>,
}

/// Collects images into batches of one shape; `T` is whatever identifies an image
/// (its object, its size).
pub struct Batcher<T> {
    shape: BatchShape,
    data: Vec<f32>,
    items: Vec<T>,
}

/// An image whose tensor does not have the batch's image length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an image tensor has {got} values, the batch expects {expected}")]
pub struct WrongLength {
    pub got: usize,
    pub expected: usize,
}

impl<T> Batcher<T> {
    pub fn new(shape: BatchShape) -> Self {
        Batcher {
            shape,
            data: Vec::with_capacity(shape.batch_len()),
            items: Vec::with_capacity(shape.images_per_batch()),
        }
    }

    pub fn shape(&self) -> BatchShape {
        self.shape
    }

    /// Images waiting for the next batch.
    pub fn pending(&self) -> usize {
        self.items.len()
    }

    /// Adds one image (all its views); returns the batch it completes, if any.
    pub fn push(&mut self, tensor: &[f32], item: T) -> Result<Option<Batch<T>>, WrongLength> {
        let expected = self.shape.image_len();
        if tensor.len() != expected {
            return Err(WrongLength {
                got: tensor.len(),
                expected,
            });
        }
        self.data.extend_from_slice(tensor);
        self.items.push(item);
        Ok((self.items.len() == self.shape.images_per_batch()).then(|| self.take()))
    }

    /// The images still pending as a last, padded batch (`None` when there are none).
    pub fn finish(&mut self) -> Option<Batch<T>> {
        (!self.items.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Batch<T> {
        let real = self.items.len() * self.shape.views.max(1);
        let mut data =
            std::mem::replace(&mut self.data, Vec::with_capacity(self.shape.batch_len()));
        data.resize(self.shape.batch_len(), 0.0);
        let items = std::mem::replace(
            &mut self.items,
            Vec::with_capacity(self.shape.images_per_batch()),
        );
        Batch {
            input: BatchInput { data, real },
            items,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(value: f32, shape: BatchShape) -> Vec<f32> {
        vec![value; shape.image_len()]
    }

    #[test]
    fn full_batches_come_out_in_order() {
        let shape = BatchShape {
            batch_size: 3,
            views: 1,
            input_len: 2,
        };
        let mut b = Batcher::new(shape);
        assert!(b.push(&image(1.0, shape), "a").unwrap().is_none());
        assert!(b.push(&image(2.0, shape), "b").unwrap().is_none());
        let batch = b.push(&image(3.0, shape), "c").unwrap().unwrap();
        assert_eq!(batch.items, ["a", "b", "c"]);
        assert_eq!(batch.input.real, 3);
        assert_eq!(batch.input.data, [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
        assert_eq!(b.pending(), 0);
        assert!(b.finish().is_none());
    }

    #[test]
    fn the_last_batch_is_padded_to_the_same_shape() {
        let shape = BatchShape {
            batch_size: 4,
            views: 1,
            input_len: 2,
        };
        let mut b = Batcher::new(shape);
        b.push(&image(5.0, shape), 1).unwrap();
        let batch = b.finish().unwrap();
        assert_eq!(batch.items, [1]);
        assert_eq!(batch.input.real, 1);
        assert_eq!(batch.input.data, [5.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert!(b.finish().is_none());
    }

    #[test]
    fn views_keep_images_whole_and_pad_the_rest() {
        // A fixed batch of 12 inputs with ten views per image: one image per batch,
        // two padding inputs.
        let shape = BatchShape {
            batch_size: 12,
            views: 10,
            input_len: 1,
        };
        assert_eq!(shape.images_per_batch(), 1);
        let mut b = Batcher::new(shape);
        let batch = b.push(&image(7.0, shape), "x").unwrap().unwrap();
        assert_eq!(batch.input.real, 10);
        assert_eq!(batch.input.data.len(), 12);
        assert_eq!(&batch.input.data[..10], &[7.0; 10]);
        assert_eq!(&batch.input.data[10..], &[0.0; 2]);

        // 32 inputs of 10 views: three images, two padding inputs.
        let shape = BatchShape {
            batch_size: 32,
            views: 10,
            input_len: 1,
        };
        assert_eq!(shape.images_per_batch(), 3);
        assert_eq!(shape.batch_len(), 32);
    }

    #[test]
    fn a_tensor_of_the_wrong_length_is_refused() {
        let shape = BatchShape {
            batch_size: 2,
            views: 1,
            input_len: 3,
        };
        let mut b = Batcher::new(shape);
        assert_eq!(
            b.push(&[0.0; 4], ()).unwrap_err(),
            WrongLength {
                got: 4,
                expected: 3
            }
        );
        assert_eq!(b.pending(), 0);
    }
}
