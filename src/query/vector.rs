//! SQL functions over embedding vectors and binary codes, registered in every query
//! context:
//!
//! - `cosine_similarity(a, b)` → `DOUBLE`: a·b / (|a| |b|); NULL when either is NULL
//!   or has zero length. `cosine_similarity(a, b, centre)` measures the angle about
//!   `centre` instead of the origin: the cosine of a − centre and b − centre;
//! - `embedding_mean(v)` → the mean vector of a column (an aggregate; as a fixed-size
//!   list of single floats for a fixed-size list column), NULL rows and vectors holding
//!   a NULL left out. Features of a network (ReLU outputs especially) share a large
//!   common component, so every pair of images has a high plain cosine; measured about
//!   the collection's mean, distinct images fall apart while copies stay close
//!   (`sql/near_duplicates.sql`);
//! - `l2_distance(a, b)` → `DOUBLE`: |a − b|;
//! - `hamming(a, b)` → `INT`: the number of differing bits of two byte strings of the
//!   same length (binary codes);
//! - `code_bands(code, bits)` → `LIST<BIGINT>`: the code cut into bands of `bits` bits
//!   (1–32; the last band may be shorter), each as `band_index × 2³² + band_value`.
//!   Two codes within Hamming distance h share at least one band when they have more
//!   than h bands, so an equality join on `unnest(code_bands(...))` finds close pairs
//!   without comparing every pair (`sql/near_duplicates.sql`).
//!
//! Vectors may be `LIST`, `LARGE LIST` or `FIXED SIZE LIST` of half, single or double
//! floats (or integers); both arguments must have the same number of elements in every
//! row, else the query fails naming the function, the row and both lengths.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Float64Array, Float64Builder, Int32Builder,
    Int64Builder, ListBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type};
use datafusion::common::ScalarValue;
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

/// Which function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Cosine,
    L2,
    Hamming,
    Bands,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct VectorFn {
    kind: Kind,
    signature: Signature,
}

/// The scalar functions, ready for `SessionContext::register_udf`.
pub fn functions() -> Vec<ScalarUDF> {
    [Kind::Cosine, Kind::L2, Kind::Hamming, Kind::Bands]
        .into_iter()
        .map(|kind| {
            let signature = if kind == Kind::Cosine {
                Signature::one_of(
                    vec![TypeSignature::Any(2), TypeSignature::Any(3)],
                    Volatility::Immutable,
                )
            } else {
                Signature::any(2, Volatility::Immutable)
            };
            ScalarUDF::new_from_impl(VectorFn { kind, signature })
        })
        .collect()
}

/// The aggregate functions, ready for `SessionContext::register_udaf`.
pub fn aggregates() -> Vec<AggregateUDF> {
    vec![AggregateUDF::new_from_impl(MeanFn {
        signature: Signature::any(1, Volatility::Immutable),
    })]
}

fn is_vector(t: &DataType) -> bool {
    let numeric = |f: &Field| f.data_type().is_numeric();
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => numeric(f),
        DataType::Null => true,
        _ => false,
    }
}

fn is_bytes(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_)
            | DataType::Null
    )
}

impl ScalarUDFImpl for VectorFn {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Cosine => "cosine_similarity",
            Kind::L2 => "l2_distance",
            Kind::Hamming => "hamming",
            Kind::Bands => "code_bands",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        let ok = match self.kind {
            Kind::Cosine | Kind::L2 => args.iter().all(is_vector),
            Kind::Hamming => args.iter().all(is_bytes),
            Kind::Bands => {
                is_bytes(&args[0]) && (args[1].is_integer() || args[1] == DataType::Null)
            }
        };
        if !ok {
            let want = match self.kind {
                Kind::Hamming => "two binary codes (e.g. the `code` column)",
                Kind::Bands => "a binary code (e.g. the `code` column) and a number of bits",
                _ => "two lists of numbers (e.g. the `embedding` column), and for cosine_similarity optionally a third, the centre",
            };
            return plan_err!("{}() takes {want}, got {:?}", self.name(), args);
        }
        Ok(match self.kind {
            Kind::Hamming => DataType::Int32,
            Kind::Bands => DataType::List(Arc::new(Field::new_list_field(DataType::Int64, false))),
            _ => DataType::Float64,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // A constant centre (a bound parameter) stays one vector for every row rather
        // than being repeated into an array as long as the batch.
        let centre = match args.args.get(2) {
            Some(ColumnarValue::Scalar(c)) => Some(Centre::One(c.to_array_of_size(1)?)),
            Some(ColumnarValue::Array(c)) => Some(Centre::PerRow(c.clone())),
            None => None,
        };
        let rows = args.number_rows;
        let arrays = [args.args[0].to_array(rows)?, args.args[1].to_array(rows)?];
        let out: ArrayRef = match self.kind {
            Kind::Hamming => hamming(self.name(), &arrays[0], &arrays[1])?,
            Kind::Bands => bands(self.name(), &arrays[0], &arrays[1])?,
            kind => vectors(self.name(), kind, &arrays[0], &arrays[1], centre.as_ref())?,
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// The third argument of `cosine_similarity`: one vector for every row, or one per row.
enum Centre {
    One(ArrayRef),
    PerRow(ArrayRef),
}

impl Centre {
    fn array(&self) -> &ArrayRef {
        match self {
            Centre::One(a) | Centre::PerRow(a) => a,
        }
    }

    /// The centre's row for row `row` of the vectors.
    fn row(&self, row: usize) -> usize {
        match self {
            Centre::One(_) => 0,
            Centre::PerRow(_) => row,
        }
    }
}

/// `a` as a list of doubles.
fn as_f64_list(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(cast(a, &f64_list_type())?)
}

/// Whether the vector of `dim` values at `at` in `list` holds a NULL.
fn has_null_value(list: &arrow::array::FixedSizeListArray, at: usize, dim: usize) -> bool {
    list.values()
        .nulls()
        .is_some_and(|n| n.slice(at, dim).null_count() > 0)
}

/// The values of a fixed-size list of half or single floats (the `embedding` column),
/// read in place.
enum FixedFloats<'a> {
    Half(&'a [half::f16]),
    Single(&'a [f32]),
}

fn fixed_floats(a: &ArrayRef) -> Option<(&arrow::array::FixedSizeListArray, FixedFloats<'_>)> {
    let list = a.as_fixed_size_list_opt()?;
    let values = list.values();
    let floats = match values.data_type() {
        DataType::Float16 => FixedFloats::Half(
            values
                .as_primitive::<arrow::datatypes::Float16Type>()
                .values(),
        ),
        DataType::Float32 => FixedFloats::Single(
            values
                .as_primitive::<arrow::datatypes::Float32Type>()
                .values(),
        ),
        _ => return None,
    };
    Some((list, floats))
}

impl FixedFloats<'_> {
    fn get(&self, i: usize) -> f32 {
        match self {
            FixedFloats::Half(v) => v[i].to_f32(),
            FixedFloats::Single(v) => v[i],
        }
    }
}

/// The fast path of [`vectors`]: both arguments fixed-size lists of half or single
/// floats of one length, computed in place (f32 products summed in f64) instead of
/// through a cast of every vector to a list of doubles.
fn fixed_vectors(
    kind: Kind,
    a: &ArrayRef,
    b: &ArrayRef,
    centre: Option<&Centre>,
) -> Option<ArrayRef> {
    let ((la, va), (lb, vb)) = (fixed_floats(a)?, fixed_floats(b)?);
    if la.value_length() != lb.value_length() || la.len() != lb.len() {
        return None;
    }
    let centre = match centre {
        Some(c) => {
            let (lc, vc) = fixed_floats(c.array())?;
            let rows_fit = matches!(c, Centre::One(_)) || lc.len() == la.len();
            if lc.value_length() != la.value_length() || !rows_fit {
                return None;
            }
            Some((c, lc, vc))
        }
        None => None,
    };
    let dim = la.value_length() as usize;
    let mut out = Float64Builder::with_capacity(la.len());
    for row in 0..la.len() {
        if la.is_null(row) || lb.is_null(row) {
            out.append_null();
            continue;
        }
        let (oa, ob) = (la.value_offset(row) as usize, lb.value_offset(row) as usize);
        // A null inside a vector makes the result NULL, as in the general path.
        let holes =
            |list: &arrow::array::FixedSizeListArray, at: usize| has_null_value(list, at, dim);
        if holes(la, oa) || holes(lb, ob) {
            out.append_null();
            continue;
        }
        let v = match &centre {
            Some((c, lc, vc)) => {
                let rc = c.row(row);
                let oc = lc.value_offset(rc) as usize;
                if lc.is_null(rc) || holes(lc, oc) {
                    out.append_null();
                    continue;
                }
                measure(
                    kind,
                    (0..dim).map(|i| {
                        let c = f64::from(vc.get(oc + i));
                        (f64::from(va.get(oa + i)) - c, f64::from(vb.get(ob + i)) - c)
                    }),
                )
            }
            None => measure(
                kind,
                (0..dim).map(|i| (f64::from(va.get(oa + i)), f64::from(vb.get(ob + i)))),
            ),
        };
        match v {
            Some(v) => out.append_value(v),
            None => out.append_null(),
        }
    }
    Some(Arc::new(out.finish()))
}

fn vectors(
    name: &str,
    kind: Kind,
    a: &ArrayRef,
    b: &ArrayRef,
    centre: Option<&Centre>,
) -> Result<ArrayRef> {
    if let Some(done) = fixed_vectors(kind, a, b, centre) {
        return Ok(done);
    }
    let (a, b) = (as_f64_list(a)?, as_f64_list(b)?);
    let (a, b) = (a.as_list::<i32>(), b.as_list::<i32>());
    let centre_list = centre.map(|c| as_f64_list(c.array())).transpose()?;
    let centre_list = centre_list.as_ref().map(|c| c.as_list::<i32>());
    let centre_row = |row: usize| centre.map_or(row, |c| c.row(row));
    let mut out = Float64Builder::with_capacity(a.len());
    for row in 0..a.len() {
        if a.is_null(row)
            || b.is_null(row)
            || centre_list.is_some_and(|c| c.is_null(centre_row(row)))
        {
            out.append_null();
            continue;
        }
        let (x, y) = (a.value(row), b.value(row));
        let (x, y): (&Float64Array, &Float64Array) = (
            x.as_primitive::<Float64Type>(),
            y.as_primitive::<Float64Type>(),
        );
        if x.len() != y.len() {
            return exec_err!(
                "{name}(): row {row} has vectors of {} and {} elements; both must have the same length",
                x.len(),
                y.len()
            );
        }
        if x.null_count() > 0 || y.null_count() > 0 {
            out.append_null();
            continue;
        }
        let pairs = x.values().iter().copied().zip(y.values().iter().copied());
        let v = match centre_list {
            Some(c) => {
                let c = c.value(centre_row(row));
                let c: &Float64Array = c.as_primitive::<Float64Type>();
                if c.len() != x.len() {
                    return exec_err!(
                        "{name}(): row {row} has vectors of {} elements and a centre of {}; all three must have the same length",
                        x.len(),
                        c.len()
                    );
                }
                if c.null_count() > 0 {
                    out.append_null();
                    continue;
                }
                measure(
                    kind,
                    pairs
                        .zip(c.values().iter())
                        .map(|((p, q), m)| (p - m, q - m)),
                )
            }
            None => measure(kind, pairs),
        };
        match v {
            Some(v) => out.append_value(v),
            None => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// Cosine similarity or L2 distance of two vectors given as pairs of elements; `None`
/// for the cosine of a zero vector (it has no direction).
fn measure(kind: Kind, pairs: impl Iterator<Item = (f64, f64)>) -> Option<f64> {
    match kind {
        Kind::Cosine => {
            let (mut dot, mut nx, mut ny) = (0.0, 0.0, 0.0);
            for (p, q) in pairs {
                dot += p * q;
                nx += p * p;
                ny += q * q;
            }
            (nx != 0.0 && ny != 0.0).then(|| dot / (nx.sqrt() * ny.sqrt()))
        }
        _ => Some(pairs.map(|(p, q)| (p - q) * (p - q)).sum::<f64>().sqrt()),
    }
}

/// `embedding_mean(v)`: the element-wise mean of the vectors of a column.
#[derive(Debug, PartialEq, Eq, Hash)]
struct MeanFn {
    signature: Signature,
}

/// `LIST<DOUBLE>`: what the general path computes in and `embedding_mean` keeps its
/// sums as.
fn f64_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
}

/// One list of doubles as a scalar.
fn f64_list_scalar(values: impl Iterator<Item = f64>) -> ScalarValue {
    ScalarValue::List(Arc::new(arrow::array::ListArray::from_iter_primitive::<
        Float64Type,
        _,
        _,
    >([Some(values.map(Some))])))
}

impl AggregateUDFImpl for MeanFn {
    fn name(&self) -> &str {
        "embedding_mean"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match &args[0] {
            DataType::FixedSizeList(f, n) if f.data_type().is_numeric() => {
                Ok(DataType::FixedSizeList(
                    Arc::new(Field::new_list_field(DataType::Float32, true)),
                    *n,
                ))
            }
            t if is_vector(t) => Ok(f64_list_type()),
            t => plan_err!(
                "embedding_mean() takes a list of numbers (e.g. the `embedding` column), got {t:?}"
            ),
        }
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(MeanAcc {
            out: args.return_field.data_type().clone(),
            sum: Vec::new(),
            count: 0,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<arrow::datatypes::FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format!("{}[sum]", args.name),
                f64_list_type(),
                true,
            )),
            Arc::new(Field::new(
                format!("{}[count]", args.name),
                DataType::UInt64,
                true,
            )),
        ])
    }
}

#[derive(Debug)]
struct MeanAcc {
    out: DataType,
    sum: Vec<f64>,
    count: u64,
}

impl MeanAcc {
    /// Add one vector (`weight` of them, for merged partial sums).
    fn add(&mut self, v: impl ExactSizeIterator<Item = f64>, weight: u64) -> Result<()> {
        if weight == 0 {
            return Ok(());
        }
        if self.count == 0 && self.sum.is_empty() {
            self.sum = vec![0.0; v.len()];
        }
        if v.len() != self.sum.len() {
            return exec_err!(
                "embedding_mean(): vectors of {} and {} elements; all must have the same length",
                self.sum.len(),
                v.len()
            );
        }
        for (s, x) in self.sum.iter_mut().zip(v) {
            *s += x;
        }
        self.count += weight;
        Ok(())
    }
}

impl Accumulator for MeanAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let a = &values[0];
        if let Some((list, floats)) = fixed_floats(a) {
            let dim = list.value_length() as usize;
            for row in 0..list.len() {
                let at = list.value_offset(row) as usize;
                if list.is_null(row) || has_null_value(list, at, dim) {
                    continue;
                }
                self.add((at..at + dim).map(|i| f64::from(floats.get(i))), 1)?;
            }
            return Ok(());
        }
        let a = as_f64_list(a)?;
        let a = a.as_list::<i32>();
        for row in 0..a.len() {
            if a.is_null(row) {
                continue;
            }
            let v = a.value(row);
            let v: &Float64Array = v.as_primitive::<Float64Type>();
            if v.null_count() == 0 {
                self.add(v.values().iter().copied(), 1)?;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.count == 0 {
            return ScalarValue::try_from(&self.out);
        }
        let n = self.count as f64;
        Ok(match &self.out {
            DataType::FixedSizeList(field, len) => {
                let values = arrow::array::Float32Array::from_iter_values(
                    self.sum.iter().map(|s| (s / n) as f32),
                );
                if *len as usize != values.len() {
                    return exec_err!(
                        "embedding_mean(): vectors of {} elements in a column of {len}",
                        values.len()
                    );
                }
                ScalarValue::FixedSizeList(Arc::new(arrow::array::FixedSizeListArray::new(
                    field.clone(),
                    *len,
                    Arc::new(values),
                    None,
                )))
            }
            _ => f64_list_scalar(self.sum.iter().map(|s| s / n)),
        })
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.sum.capacity() * std::mem::size_of::<f64>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            f64_list_scalar(self.sum.iter().copied()),
            ScalarValue::UInt64(Some(self.count)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let sums = as_f64_list(&states[0])?;
        let sums = sums.as_list::<i32>();
        let counts = states[1].as_primitive::<arrow::datatypes::UInt64Type>();
        for row in 0..sums.len() {
            if sums.is_null(row) || counts.is_null(row) || counts.value(row) == 0 {
                continue;
            }
            let v = sums.value(row);
            let v: &Float64Array = v.as_primitive::<Float64Type>();
            // A partial sum counts as `count` vectors: added once, weighted.
            self.add(v.values().iter().copied(), counts.value(row))?;
        }
        Ok(())
    }
}

fn hamming(name: &str, a: &ArrayRef, b: &ArrayRef) -> Result<ArrayRef> {
    let (a, b) = (cast(a, &DataType::Binary)?, cast(b, &DataType::Binary)?);
    let a: &BinaryArray = a.as_binary::<i32>();
    let b: &BinaryArray = b.as_binary::<i32>();
    let mut out = Int32Builder::with_capacity(a.len());
    for row in 0..a.len() {
        if a.is_null(row) || b.is_null(row) {
            out.append_null();
            continue;
        }
        let (x, y) = (a.value(row), b.value(row));
        if x.len() != y.len() {
            return exec_err!(
                "{name}(): row {row} has codes of {} and {} bytes; both must have the same length",
                x.len(),
                y.len()
            );
        }
        let bits: u32 = x.iter().zip(y).map(|(p, q)| (p ^ q).count_ones()).sum();
        out.append_value(bits as i32);
    }
    Ok(Arc::new(out.finish()))
}

fn bands(name: &str, codes: &ArrayRef, bits: &ArrayRef) -> Result<ArrayRef> {
    let codes = cast(codes, &DataType::Binary)?;
    let codes: &BinaryArray = codes.as_binary::<i32>();
    let bits = cast(bits, &DataType::Int64)?;
    let bits = bits.as_primitive::<arrow::datatypes::Int64Type>();
    let mut out = ListBuilder::new(Int64Builder::new())
        .with_field(Arc::new(Field::new_list_field(DataType::Int64, false)));
    for row in 0..codes.len() {
        if codes.is_null(row) || bits.is_null(row) {
            out.append_null();
            continue;
        }
        let width = bits.value(row);
        if !(1..=32).contains(&width) {
            return exec_err!("{name}(): bands of {width} bits; use 1 to 32");
        }
        let width = width as usize;
        let code = codes.value(row);
        let total = code.len() * 8;
        let bit = |i: usize| (code[i / 8] >> (7 - i % 8)) & 1;
        for (band, start) in (0..total).step_by(width).enumerate() {
            let mut value: i64 = 0;
            for i in start..(start + width).min(total) {
                value = (value << 1) | i64::from(bit(i));
            }
            out.values().append_value(((band as i64) << 32) | value);
        }
        out.append(true);
    }
    Ok(Arc::new(out.finish()))
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn one(sql: &str) -> std::result::Result<String, String> {
        let ctx = SessionContext::new();
        for f in functions() {
            ctx.register_udf(f);
        }
        for f in aggregates() {
            ctx.register_udaf(f);
        }
        let batches = ctx
            .sql(sql)
            .await
            .map_err(|e| e.to_string())?
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string())
    }

    fn cell(table: &str) -> String {
        table
            .lines()
            .nth(3)
            .unwrap()
            .trim_matches(|c| c == '|' || c == ' ')
            .to_owned()
    }

    #[tokio::test]
    async fn code_bands_cut_a_code_into_tagged_bands() {
        // 0xA5 0x0F in bands of 4 bits: 1010 0101 0000 1111.
        let t = one("SELECT code_bands(X'A50F', 4) AS v").await.unwrap();
        let want = [0xA_i64, (1 << 32) | 0x5, 2 << 32, (3 << 32) | 0xF];
        let want: Vec<String> = want.iter().map(|v| v.to_string()).collect();
        assert_eq!(cell(&t), format!("[{}]", want.join(", ")), "{t}");
        // The last band may be shorter; codes sharing a band share its element.
        let t = one("SELECT code_bands(X'FF', 5) AS v").await.unwrap();
        assert_eq!(cell(&t), format!("[31, {}]", (1_i64 << 32) | 7), "{t}");
        let t = one(
            "SELECT count(*) AS v FROM (SELECT unnest(code_bands(X'FF00', 8)) AS b) x \
             JOIN (SELECT unnest(code_bands(X'FF01', 8)) AS b) y ON x.b = y.b",
        )
        .await
        .unwrap();
        assert_eq!(cell(&t), "1", "{t}");
        let e = one("SELECT code_bands(X'FF', 0) AS v").await.unwrap_err();
        assert!(e.contains("code_bands(): bands of 0 bits"), "{e}");
    }

    #[tokio::test]
    async fn the_three_functions_compute_what_their_names_say() {
        let t = one("SELECT cosine_similarity([1.0, 0.0], [1.0, 1.0]) AS v")
            .await
            .unwrap();
        let v: f64 = cell(&t).parse().unwrap();
        assert!((v - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12, "{t}");
        let t = one("SELECT l2_distance([0.0, 3.0], [4.0, 0.0]) AS v")
            .await
            .unwrap();
        assert_eq!(cell(&t), "5.0", "{t}");
        // Half floats in fixed-size lists, as the embedding column stores them.
        let t = one(
            "SELECT cosine_similarity(arrow_cast([2.0, 0.0], 'FixedSizeList(2, Float16)'), \
             arrow_cast([-3.0, 0.0], 'FixedSizeList(2, Float16)')) AS v",
        )
        .await
        .unwrap();
        assert_eq!(cell(&t), "-1.0", "{t}");
        let t = one("SELECT hamming(X'0F00', X'FF01') AS v").await.unwrap();
        assert_eq!(cell(&t), "5", "{t}");
        let t = one(
            "SELECT hamming(arrow_cast(X'FF', 'FixedSizeBinary(1)'), arrow_cast(X'00', 'FixedSizeBinary(1)')) AS v",
        )
        .await
        .unwrap();
        assert_eq!(cell(&t), "8", "{t}");
        // NULL in, NULL out; a zero vector has no direction.
        let t = one("SELECT cosine_similarity([0.0, 0.0], [1.0, 1.0]) AS v")
            .await
            .unwrap();
        assert_eq!(cell(&t), "", "{t}");
        // Fixed-size lists of single floats are read in place too; a null inside a
        // vector gives NULL as in the general path.
        let t = one(
            "SELECT l2_distance(arrow_cast([0.0, 3.0], 'FixedSizeList(2, Float32)'), \
             arrow_cast([4.0, 0.0], 'FixedSizeList(2, Float32)')) AS v",
        )
        .await
        .unwrap();
        assert_eq!(cell(&t), "5.0", "{t}");
        let t = one(
            "SELECT cosine_similarity(arrow_cast([1.0, NULL], 'FixedSizeList(2, Float32)'), \
             arrow_cast([1.0, 0.0], 'FixedSizeList(2, Float32)')) AS v",
        )
        .await
        .unwrap();
        assert_eq!(cell(&t), "", "{t}");
    }

    #[tokio::test]
    async fn the_mean_of_a_column_and_the_cosine_about_it() {
        // Fixed-size half floats, a NULL row and a vector holding a NULL are left out.
        let rows = "SELECT arrow_cast(v, 'FixedSizeList(2, Float16)') AS v FROM (VALUES \
                    ([1.0, 3.0]), ([3.0, 5.0]), (NULL), ([100.0, NULL])) t(v)";
        let t = one(&format!(
            "SELECT embedding_mean(v) AS v, arrow_typeof(embedding_mean(v)) AS t FROM ({rows})"
        ))
        .await
        .unwrap();
        assert!(
            t.contains("| [2.0, 4.0] | FixedSizeList(2 x Float32) |"),
            "{t}"
        );
        // Plain lists give a list of doubles; no row gives NULL.
        let t = one("SELECT embedding_mean(v) AS v FROM (VALUES ([1.0, 2.0]), ([2.0, 2.0])) t(v)")
            .await
            .unwrap();
        assert_eq!(cell(&t), "[1.5, 2.0]", "{t}");
        let t = one("SELECT embedding_mean(v) AS v FROM (VALUES ([1.0, 2.0])) t(v) WHERE false")
            .await
            .unwrap();
        assert_eq!(cell(&t), "", "{t}");
        // Two vectors that share a large common part: close about the origin,
        // opposite about their mean.
        let close = |t: &str, want: f64| {
            let v: f64 = cell(t).parse().unwrap();
            assert!((v - want).abs() < 1e-12, "{t}");
        };
        let t = one("SELECT cosine_similarity([10.0, 1.0], [10.0, -1.0]) AS v")
            .await
            .unwrap();
        close(&t, 99.0 / 101.0);
        let t = one("SELECT cosine_similarity([10.0, 1.0], [10.0, -1.0], [10.0, 0.0]) AS v")
            .await
            .unwrap();
        close(&t, -1.0);
        let t = one(&format!(
            "WITH m AS (SELECT embedding_mean(v) AS c FROM ({rows})) \
             SELECT cosine_similarity(arrow_cast([1.0, 3.0], 'FixedSizeList(2, Float16)'), \
                                      arrow_cast([3.0, 5.0], 'FixedSizeList(2, Float16)'), m.c) AS v FROM m"
        ))
        .await
        .unwrap();
        close(&t, -1.0);
        // Constant vectors about a centre that is a column: one result per row.
        let t = one(
            "SELECT count(v) AS v FROM (SELECT cosine_similarity([10.0, 1.0], [10.0, -1.0], c) AS v \
             FROM (VALUES ([10.0, 0.0]), ([0.0, 0.0]), ([10.0, 0.0])) t(c))",
        )
        .await
        .unwrap();
        assert_eq!(cell(&t), "3", "{t}");
        let e = one("SELECT cosine_similarity([1.0, 2.0], [1.0, 2.0], [1.0]) AS v")
            .await
            .unwrap_err();
        assert!(e.contains("a centre of 1"), "{e}");
        let e = one("SELECT embedding_mean(v) AS v FROM (VALUES ([1.0, 2.0]), ([2.0])) t(v)")
            .await
            .unwrap_err();
        assert!(
            e.contains("embedding_mean(): vectors of 2 and 1 elements"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn mismatched_or_wrong_arguments_are_clear_errors() {
        let e = one("SELECT l2_distance([1.0, 2.0], [1.0]) AS v")
            .await
            .unwrap_err();
        assert!(
            e.contains("l2_distance(): row 0 has vectors of 2 and 1 elements"),
            "{e}"
        );
        let e = one("SELECT hamming(X'00', X'0000') AS v")
            .await
            .unwrap_err();
        assert!(e.contains("codes of 1 and 2 bytes"), "{e}");
        let e = one("SELECT cosine_similarity('a', 'b') AS v")
            .await
            .unwrap_err();
        assert!(e.contains("takes two lists of numbers"), "{e}");
        let e = one("SELECT hamming([1.0], [2.0]) AS v").await.unwrap_err();
        assert!(e.contains("takes two binary codes"), "{e}");
    }
}
