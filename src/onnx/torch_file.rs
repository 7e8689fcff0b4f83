//! Reading the tensors of a `torch.save` file (`.pth`/`.pt`) without PyTorch: both the
//! zip layout (PyTorch 1.6 and later: `<name>/data.pkl` plus one `<name>/data/<key>`
//! record per storage) and the older single-stream layout (torchvision's own
//! `alexnet-owt-7be5be79.pth`: five pickles, then the storages' bytes).
//!
//! Only what a `state_dict` holds is understood: dictionaries (`OrderedDict` too) of
//! names to tensors rebuilt by `torch._utils._rebuild_tensor_v2` from typed storages
//! (float, half, bfloat16, double), nested dictionaries, and plain values. The pickle
//! machine below runs no code: a global it does not know becomes an opaque value,
//! never a call. Tensors must be contiguous.

use std::collections::BTreeMap;

use super::writer::F32Tensor;

/// A decoded pickle value (the subset a `state_dict` uses).
#[derive(Debug, Clone)]
enum Value {
    None,
    /// A value a state_dict's tensors never depend on (booleans, floats, bytes).
    Other,
    Int(i64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// `module.name` of a global (never resolved to code).
    Global(String),
    /// A persistent id (a storage reference).
    Persistent(Box<Value>),
    Tensor(TensorRef),
    /// The result of calling a global this reader does not know.
    Opaque(String),
    Mark,
}

#[derive(Debug, Clone)]
struct TensorRef {
    key: String,
    dtype: Dtype,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    Float(FloatKind),
    /// Not floating point (its element width): read past, not returned.
    Other(usize),
}

impl Dtype {
    fn of_storage(name: &str) -> Self {
        match name.rsplit('.').next().unwrap_or_default() {
            "FloatStorage" => Self::Float(FloatKind::F32),
            "HalfStorage" => Self::Float(FloatKind::F16),
            "BFloat16Storage" => Self::Float(FloatKind::Bf16),
            "DoubleStorage" => Self::Float(FloatKind::F64),
            "LongStorage" => Self::Other(8),
            "IntStorage" => Self::Other(4),
            "ShortStorage" => Self::Other(2),
            _ => Self::Other(1),
        }
    }

    fn width(self) -> usize {
        match self {
            Self::Float(kind) => kind.width(),
            Self::Other(w) => w,
        }
    }
}

/// Read every floating-point tensor of a `torch.save` file, by its dotted name (a
/// nested dictionary's keys are joined with `.`, so `{"model": state_dict}` reads as
/// `model.features.0.weight`).
pub fn read(bytes: &[u8]) -> Result<BTreeMap<String, F32Tensor>, String> {
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip_layout(bytes)
    } else {
        read_legacy_layout(bytes)
    }
}

/// The error for a file whose top object is not a dictionary of tensors.
fn not_a_state_dict(root: &Value) -> Option<String> {
    match root {
        Value::Dict(_) => None,
        Value::Opaque(class) => Some(format!(
            "the file holds a pickled `{class}` object, not a state_dict: save `model.state_dict()` instead"
        )),
        _ => Some("the file holds no dictionary of tensors (a state_dict)".to_string()),
    }
}

fn read_zip_layout(bytes: &[u8]) -> Result<BTreeMap<String, F32Tensor>, String> {
    let records = zip_records(bytes)?;
    let (pickle_name, pickle) = records
        .iter()
        .find(|(name, _)| name.ends_with("data.pkl"))
        .ok_or("no data.pkl in the archive: not a torch.save file")?;
    let prefix = pickle_name.trim_end_matches("data.pkl");
    let mut reader = Pickle::new(pickle);
    let root = reader.load()?;
    if let Some(e) = not_a_state_dict(&root) {
        return Err(e);
    }
    let mut out = BTreeMap::new();
    collect(&root, "", &mut |name, t| {
        let record = format!("{prefix}data/{}", t.key);
        let data = records
            .iter()
            .find(|(n, _)| *n == record)
            .map(|(_, d)| *d)
            .ok_or_else(|| format!("{name}: storage record {record} is missing"))?;
        out.insert(name.to_string(), tensor(name, t, data)?);
        Ok(())
    })?;
    Ok(out)
}

fn read_legacy_layout(bytes: &[u8]) -> Result<BTreeMap<String, F32Tensor>, String> {
    let mut reader = Pickle::new(bytes);
    match reader.load()? {
        Value::Int(_) => {}
        _ => return Err("neither a zip archive nor PyTorch's older format".into()),
    }
    let _protocol = reader.load()?;
    let _sys_info = reader.load()?;
    let root = reader.load()?;
    if let Some(e) = not_a_state_dict(&root) {
        return Err(e);
    }
    let keys = match reader.load()? {
        Value::List(keys) => keys,
        _ => return Err("the storage key list is missing".into()),
    };
    // The storages follow, in the key list's order: an 8-byte element count, then the
    // elements.
    let mut pos = reader.pos;
    let mut storages: BTreeMap<String, &[u8]> = BTreeMap::new();
    let mut widths: BTreeMap<String, usize> = BTreeMap::new();
    collect_storage_widths(&root, &mut widths);
    for key in keys {
        let Value::Str(key) = key else {
            return Err("a storage key is not a string".into());
        };
        let count = bytes
            .get(pos..pos + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| format!("storage {key}: the file ends early"))?;
        let width = widths.get(&key).copied().unwrap_or(4);
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(width))
            .ok_or_else(|| format!("storage {key}: size out of range"))?;
        let data = bytes
            .get(pos + 8..pos + 8 + len)
            .ok_or_else(|| format!("storage {key}: the file ends early"))?;
        storages.insert(key, data);
        pos += 8 + len;
    }
    let mut out = BTreeMap::new();
    collect(&root, "", &mut |name, t| {
        let data = storages
            .get(&t.key)
            .ok_or_else(|| format!("{name}: storage {} is missing", t.key))?;
        out.insert(name.to_string(), tensor(name, t, data)?);
        Ok(())
    })?;
    Ok(out)
}

fn collect_storage_widths(v: &Value, widths: &mut BTreeMap<String, usize>) {
    match v {
        Value::Tensor(t) => {
            widths.insert(t.key.clone(), t.dtype.width());
        }
        Value::Dict(items) => items
            .iter()
            .for_each(|(_, v)| collect_storage_widths(v, widths)),
        Value::List(items) | Value::Tuple(items) => {
            items.iter().for_each(|v| collect_storage_widths(v, widths))
        }
        _ => {}
    }
}

/// Call `f` with every floating-point tensor under `v`, named by its dotted path.
fn collect(
    v: &Value,
    prefix: &str,
    f: &mut dyn FnMut(&str, &TensorRef) -> Result<(), String>,
) -> Result<(), String> {
    match v {
        Value::Tensor(t) if !matches!(t.dtype, Dtype::Other(_)) => f(prefix, t),
        Value::Dict(items) => {
            for (k, v) in items {
                let key = match k {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    _ => continue,
                };
                let name = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                collect(v, &name, f)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn tensor(name: &str, t: &TensorRef, data: &[u8]) -> Result<F32Tensor, String> {
    let count: usize = t.shape.iter().product();
    // Row-major strides of the shape: anything else is a view this reader refuses.
    let mut expected = vec![0usize; t.shape.len()];
    let mut acc = 1;
    for (i, d) in t.shape.iter().enumerate().rev() {
        expected[i] = acc;
        acc *= d;
    }
    if count > 1 && t.stride != expected {
        return Err(format!(
            "{name}: stride {:?} for shape {:?} (not contiguous; save `tensor.contiguous()`)",
            t.stride, t.shape
        ));
    }
    let w = t.dtype.width();
    let raw = data
        .get(t.offset * w..(t.offset + count) * w)
        .ok_or_else(|| format!("{name}: shape {:?} runs past its storage", t.shape))?;
    let values = match t.dtype {
        Dtype::Float(kind) => kind.decode(raw),
        Dtype::Other(_) => return Err(format!("{name}: not a floating-point tensor")),
    };
    F32Tensor::new(t.shape.clone(), values).map_err(|e| format!("{name}: {e}"))
}

/// The stored (uncompressed) records of a zip archive, by name, as slices of `bytes`
/// (the `zip` crate reads the central directory, zip64 included). `torch.save` stores
/// every record uncompressed.
fn zip_records(bytes: &[u8]) -> Result<Vec<(String, &[u8])>, String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a readable zip archive: {e}"))?;
    let mut out = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let record = archive
            .by_index_raw(i)
            .map_err(|e| format!("zip record {i}: {e}"))?;
        let name = record.name().to_string();
        if record.compression() != zip::CompressionMethod::Stored {
            return Err(format!(
                "{name} is compressed ({}); torch.save stores records uncompressed",
                record.compression()
            ));
        }
        let start = usize::try_from(record.data_start()).unwrap_or(usize::MAX);
        let size = usize::try_from(record.compressed_size()).unwrap_or(usize::MAX);
        let data = start
            .checked_add(size)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| format!("{name}: runs past the end of the archive"))?;
        out.push((name, data));
    }
    Ok(out)
}

/// A pickle machine for the opcodes `torch.save` emits (protocols 2 to 4).
struct Pickle<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Pickle<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .bytes
            .get(self.pos..self.pos + n)
            .ok_or("the pickle ends early")?;
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<usize, String> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_le_bytes([b[0], b[1]])))
    }

    fn u32(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("the pickle ends early")?;
        self.pos += end + 1;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    }

    /// Run one pickle to its STOP and return its value.
    fn load(&mut self) -> Result<Value, String> {
        let mut stack: Vec<Value> = Vec::new();
        let mut memo: BTreeMap<usize, Value> = BTreeMap::new();
        let pop_mark = |stack: &mut Vec<Value>| -> Result<Vec<Value>, String> {
            let at = stack
                .iter()
                .rposition(|v| matches!(v, Value::Mark))
                .ok_or("MARK missing")?;
            let items = stack.split_off(at + 1);
            stack.pop();
            Ok(items)
        };
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'.' => return stack.pop().ok_or_else(|| "empty pickle".to_string()),
                b'(' => stack.push(Value::Mark),
                b'}' => stack.push(Value::Dict(Vec::new())),
                b']' => stack.push(Value::List(Vec::new())),
                b')' => stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = pop_mark(&mut stack)?;
                    stack.push(Value::Tuple(items));
                }
                b'l' => {
                    let items = pop_mark(&mut stack)?;
                    stack.push(Value::List(items));
                }
                b'd' => {
                    let items = pop_mark(&mut stack)?;
                    stack.push(Value::Dict(pairs(items)));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let at = stack.len().checked_sub(n).ok_or("stack underflow")?;
                    let items = stack.split_off(at);
                    stack.push(Value::Tuple(items));
                }
                b'N' => stack.push(Value::None),
                0x88 | 0x89 => stack.push(Value::Other),
                b'K' => {
                    let v = self.u8()?;
                    stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = self.u16()?;
                    stack.push(Value::Int(v as i64));
                }
                b'J' => {
                    let b = self.take(4)?;
                    stack.push(Value::Int(i64::from(i32::from_le_bytes([
                        b[0], b[1], b[2], b[3],
                    ]))));
                }
                0x8a => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    let mut v: i64 = 0;
                    for (i, byte) in b.iter().enumerate().take(8) {
                        v |= i64::from(*byte) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    stack.push(Value::Int(v));
                }
                b'G' => {
                    self.take(8)?;
                    stack.push(Value::Other);
                }
                b'X' => {
                    let n = self.u32()?;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    stack.push(Value::Str(s));
                }
                0x8c => {
                    let n = usize::from(self.u8()?);
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    stack.push(Value::Str(s));
                }
                b'T' => {
                    let n = self.u32()?;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    stack.push(Value::Str(s));
                }
                b'U' => {
                    let n = usize::from(self.u8()?);
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    stack.push(Value::Str(s));
                }
                b'C' => {
                    let n = usize::from(self.u8()?);
                    self.take(n)?;
                    stack.push(Value::Other);
                }
                b'B' => {
                    let n = self.u32()?;
                    self.take(n)?;
                    stack.push(Value::Other);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    stack.push(Value::Global(format!("{module}.{name}")));
                }
                0x93 => {
                    let name = stack.pop().ok_or("stack underflow")?;
                    let module = stack.pop().ok_or("stack underflow")?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => {
                            stack.push(Value::Global(format!("{m}.{n}")))
                        }
                        _ => return Err("STACK_GLOBAL without strings".into()),
                    }
                }
                b'q' => {
                    let i = usize::from(self.u8()?);
                    memo.insert(i, stack.last().cloned().ok_or("stack underflow")?);
                }
                b'r' => {
                    let i = self.u32()?;
                    memo.insert(i, stack.last().cloned().ok_or("stack underflow")?);
                }
                0x94 => {
                    let i = memo.len();
                    memo.insert(i, stack.last().cloned().ok_or("stack underflow")?);
                }
                b'h' => {
                    let i = usize::from(self.u8()?);
                    stack.push(memo.get(&i).cloned().ok_or("memo miss")?);
                }
                b'j' => {
                    let i = self.u32()?;
                    stack.push(memo.get(&i).cloned().ok_or("memo miss")?);
                }
                b'Q' => {
                    let pid = stack.pop().ok_or("stack underflow")?;
                    stack.push(Value::Persistent(Box::new(pid)));
                }
                b'R' | 0x81 => {
                    let args = stack.pop().ok_or("stack underflow")?;
                    let callable = stack.pop().ok_or("stack underflow")?;
                    stack.push(call(callable, args)?);
                }
                b'b' => {
                    // BUILD: an object's state (e.g. a state_dict's `_metadata`); kept out.
                    stack.pop().ok_or("stack underflow")?;
                }
                b's' => {
                    let v = stack.pop().ok_or("stack underflow")?;
                    let k = stack.pop().ok_or("stack underflow")?;
                    match stack.last_mut() {
                        Some(Value::Dict(items)) => items.push((k, v)),
                        _ => return Err("SETITEM outside a dict".into()),
                    }
                }
                b'u' => {
                    let items = pop_mark(&mut stack)?;
                    match stack.last_mut() {
                        Some(Value::Dict(d)) => d.extend(pairs(items)),
                        _ => return Err("SETITEMS outside a dict".into()),
                    }
                }
                b'a' => {
                    let v = stack.pop().ok_or("stack underflow")?;
                    match stack.last_mut() {
                        Some(Value::List(l)) => l.push(v),
                        _ => return Err("APPEND outside a list".into()),
                    }
                }
                b'e' => {
                    let items = pop_mark(&mut stack)?;
                    match stack.last_mut() {
                        Some(Value::List(l)) => l.extend(items),
                        _ => return Err("APPENDS outside a list".into()),
                    }
                }
                other => {
                    return Err(format!(
                        "pickle opcode 0x{other:02x} at byte {} is not one a state_dict uses",
                        self.pos - 1
                    ))
                }
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> Vec<(Value, Value)> {
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

/// What calling a global gives, for the globals a `state_dict` uses; any other global
/// is not called (an opaque value).
fn call(callable: Value, args: Value) -> Result<Value, String> {
    let Value::Global(name) = callable else {
        return Ok(Value::Opaque("call of a non-global".into()));
    };
    let args = match args {
        Value::Tuple(a) => a,
        other => vec![other],
    };
    match name.as_str() {
        "collections.OrderedDict" | "builtins.dict" | "__builtin__.dict" => {
            Ok(Value::Dict(Vec::new()))
        }
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
            let storage = match args.first() {
                Some(Value::Persistent(pid)) => pid.as_ref().clone(),
                _ => return Err("a tensor without a storage".into()),
            };
            let Value::Tuple(pid) = storage else {
                return Err("a storage reference that is not a tuple".into());
            };
            let dtype = match pid.get(1) {
                Some(Value::Global(g)) => Dtype::of_storage(g),
                _ => Dtype::Other(1),
            };
            let key = match pid.get(2) {
                Some(Value::Str(k)) => k.clone(),
                Some(Value::Int(k)) => k.to_string(),
                _ => return Err("a storage without a key".into()),
            };
            let int = |v: Option<&Value>| match v {
                Some(Value::Int(i)) => {
                    usize::try_from(*i).map_err(|_| "a negative size".to_string())
                }
                _ => Err("a tensor size that is not a number".to_string()),
            };
            let ints = |v: Option<&Value>| -> Result<Vec<usize>, String> {
                match v {
                    Some(Value::Tuple(items)) | Some(Value::List(items)) => {
                        items.iter().map(|i| int(Some(i))).collect()
                    }
                    _ => Err("a tensor shape that is not a tuple".to_string()),
                }
            };
            Ok(Value::Tensor(TensorRef {
                key,
                dtype,
                offset: int(args.get(1))?,
                shape: ints(args.get(2))?,
                stride: ints(args.get(3))?,
            }))
        }
        other => Ok(Value::Opaque(other.to_string())),
    }
}

/// A floating-point element type stored little-endian in weight files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloatKind {
    F32,
    F64,
    F16,
    Bf16,
}

impl FloatKind {
    /// Bytes per element.
    pub(crate) fn width(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F64 => 8,
            Self::F16 | Self::Bf16 => 2,
        }
    }

    /// The elements of `raw` (a whole number of them) as f32.
    pub(crate) fn decode(self, raw: &[u8]) -> Vec<f32> {
        match self {
            Self::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Self::F64 => raw
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            Self::Bf16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Self::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_globals_are_never_called() {
        // GLOBAL os.system, args ("echo",), REDUCE, STOP
        let pickle = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R.";
        let v = Pickle::new(pickle).load().unwrap();
        assert!(
            matches!(v, Value::Opaque(ref n) if n == "os.system"),
            "{v:?}"
        );
    }

    #[test]
    fn plain_values_decode() {
        // {"a": [1, 2.5, True], "b": -3}
        let pickle = b"\x80\x02}q\x00(X\x01\x00\x00\x00a]q\x01(K\x01G@\x04\x00\x00\x00\x00\x00\x00\x88eX\x01\x00\x00\x00bJ\xfd\xff\xff\xffu.";
        let v = Pickle::new(pickle).load().unwrap();
        let Value::Dict(items) = v else {
            panic!("{v:?}")
        };
        assert_eq!(items.len(), 2);
        assert!(matches!(&items[0].1, Value::List(l) if l.len() == 3));
        assert!(matches!(items[1].1, Value::Int(-3)));
    }
}
