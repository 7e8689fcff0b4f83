//! Preprocessed images → fixed-shape batches for the inference sessions.
//!
//! A session always sees the same input shape: `batch_size` inputs of `input_len`
//! values. With test-time augmentation an image is `views` consecutive inputs and a
//! batch holds whole images only, so a batch is `batch_size / views` images (at least
//! one) and the inputs past the real ones are zero padding — as is the tail of the last
//! batch of a run.
//!
//! Values are `f32` for models that take a normalised float tensor, or `u8` (packed
//! RGB, NHWC) for models that normalise in their own graph — a quarter of the bytes
//! through memory, and later through PCIe. [`Values`] is the one place a batch's
//! storage is named, so a device-resident batch is one more variant here.

/// The element type of a model's image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Element {
    /// A normalised float tensor (NCHW or NHWC, as the model says).
    #[default]
    F32,
    /// Raw RGB bytes, NHWC; the model's first nodes cast and normalise them.
    U8,
}

keyword_enum!(Element, "input type", "uint8" | "u8" => Element::U8, "float32" | "f32" | "float" => Element::F32);

/// Input values in host memory, of one of the [`Element`] types.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Values {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

impl Values {
    /// `len` zeros of `element`.
    pub fn zeros(element: Element, len: usize) -> Self {
        match element {
            Element::F32 => Values::F32(vec![0.0; len]),
            Element::U8 => Values::U8(vec![0; len]),
        }
    }

    /// An empty buffer of `element` with room for `capacity` values.
    pub fn with_capacity(element: Element, capacity: usize) -> Self {
        match element {
            Element::F32 => Values::F32(Vec::with_capacity(capacity)),
            Element::U8 => Values::U8(Vec::with_capacity(capacity)),
        }
    }

    pub fn element(&self) -> Element {
        match self {
            Values::F32(_) => Element::F32,
            Values::U8(_) => Element::U8,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the values take.
    pub fn byte_len(&self) -> usize {
        match self {
            Values::F32(v) => v.len() * 4,
            Values::U8(v) => v.len(),
        }
    }

    /// Appends `other`'s values; `false` (and nothing appended) when the element types
    /// differ.
    pub fn extend_from(&mut self, other: &Values) -> bool {
        match (self, other) {
            (Values::F32(a), Values::F32(b)) => a.extend_from_slice(b),
            (Values::U8(a), Values::U8(b)) => a.extend_from_slice(b),
            _ => return false,
        }
        true
    }

    /// Pads (or cuts) to `len` values with zeros.
    fn resize(&mut self, len: usize) {
        match self {
            Values::F32(v) => v.resize(len, 0.0),
            Values::U8(v) => v.resize(len, 0),
        }
    }

    /// The values as `f32`, when they are.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            Values::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The values as `u8`, when they are.
    pub fn as_u8(&self) -> Option<&[u8]> {
        match self {
            Values::U8(v) => Some(v),
            _ => None,
        }
    }
}

impl From<Vec<f32>> for Values {
    fn from(v: Vec<f32>) -> Self {
        Values::F32(v)
    }
}

impl From<Vec<u8>> for Values {
    fn from(v: Vec<u8>) -> Self {
        Values::U8(v)
    }
}

/// A batch of preprocessed images, padded to the session's batch size.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchInput {
    /// `batch_size × input_len` values; inputs past `real` are padding.
    pub data: Values,
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
    element: Element,
    data: Values,
    items: Vec<T>,
}

/// An image whose tensor does not fit the batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WrongTensor {
    #[error("an image tensor has {got} values, the batch expects {expected}")]
    Length { got: usize, expected: usize },
    #[error("an image tensor holds {got} values, the batch {expected}")]
    Element { got: Element, expected: Element },
}

impl<T> Batcher<T> {
    /// Batches of `shape` holding `element` values.
    pub fn new(shape: BatchShape, element: Element) -> Self {
        Batcher {
            shape,
            element,
            data: Values::with_capacity(element, shape.batch_len()),
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
    pub fn push(&mut self, tensor: &Values, item: T) -> Result<Option<Batch<T>>, WrongTensor> {
        let expected = self.shape.image_len();
        if tensor.len() != expected {
            return Err(WrongTensor::Length {
                got: tensor.len(),
                expected,
            });
        }
        if !self.data.extend_from(tensor) {
            return Err(WrongTensor::Element {
                got: tensor.element(),
                expected: self.element,
            });
        }
        self.items.push(item);
        Ok((self.items.len() == self.shape.images_per_batch()).then(|| self.take()))
    }

    /// The images still pending as a last, padded batch (`None` when there are none).
    pub fn finish(&mut self) -> Option<Batch<T>> {
        (!self.items.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Batch<T> {
        let real = self.items.len() * self.shape.views.max(1);
        let mut data = std::mem::replace(
            &mut self.data,
            Values::with_capacity(self.element, self.shape.batch_len()),
        );
        data.resize(self.shape.batch_len());
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

    fn image(value: f32, shape: BatchShape) -> Values {
        Values::F32(vec![value; shape.image_len()])
    }

    fn f32s(batch: &Batch<impl Sized>) -> &[f32] {
        batch.input.data.as_f32().unwrap()
    }

    #[test]
    fn full_batches_come_out_in_order() {
        let shape = BatchShape {
            batch_size: 3,
            views: 1,
            input_len: 2,
        };
        let mut b = Batcher::new(shape, Element::F32);
        assert!(b.push(&image(1.0, shape), "a").unwrap().is_none());
        assert!(b.push(&image(2.0, shape), "b").unwrap().is_none());
        let batch = b.push(&image(3.0, shape), "c").unwrap().unwrap();
        assert_eq!(batch.items, ["a", "b", "c"]);
        assert_eq!(batch.input.real, 3);
        assert_eq!(f32s(&batch), [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
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
        let mut b = Batcher::new(shape, Element::F32);
        b.push(&image(5.0, shape), 1).unwrap();
        let batch = b.finish().unwrap();
        assert_eq!(batch.items, [1]);
        assert_eq!(batch.input.real, 1);
        assert_eq!(f32s(&batch), [5.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
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
        let mut b = Batcher::new(shape, Element::F32);
        let batch = b.push(&image(7.0, shape), "x").unwrap().unwrap();
        assert_eq!(batch.input.real, 10);
        assert_eq!(batch.input.data.len(), 12);
        assert_eq!(&f32s(&batch)[..10], &[7.0; 10]);
        assert_eq!(&f32s(&batch)[10..], &[0.0; 2]);

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
        let mut b = Batcher::new(shape, Element::F32);
        assert_eq!(
            b.push(&Values::F32(vec![0.0; 4]), ()).unwrap_err(),
            WrongTensor::Length {
                got: 4,
                expected: 3
            }
        );
        assert_eq!(
            b.push(&Values::U8(vec![0; 3]), ()).unwrap_err(),
            WrongTensor::Element {
                got: Element::U8,
                expected: Element::F32
            }
        );
        assert_eq!(b.pending(), 0);
    }

    #[test]
    fn byte_batches_pad_with_zero_bytes() {
        let shape = BatchShape {
            batch_size: 3,
            views: 1,
            input_len: 2,
        };
        let mut b = Batcher::new(shape, Element::U8);
        b.push(&Values::U8(vec![200, 17]), 'a').unwrap();
        let batch = b.finish().unwrap();
        assert_eq!(batch.input.real, 1);
        assert_eq!(batch.input.data, Values::U8(vec![200, 17, 0, 0, 0, 0]));
        assert_eq!(batch.input.data.byte_len(), 6);
        assert!(b.push(&Values::F32(vec![0.0; 2]), 'b').is_err());
    }
}
