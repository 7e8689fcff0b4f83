//! Query results as text while they stream: an aligned table, CSV, or JSON lines,
//! written to any [`Write`] the caller gives (the library never picks stdout). No
//! writer holds more than one record batch.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;

use crate::error::{Error, Result};

/// How results are written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    /// An aligned table for people.
    Table,
    /// CSV with a header row; list and struct cells as JSON text.
    Csv,
    /// One JSON object per line.
    Json,
}

/// Cells longer than this are cut in the table view (never in CSV, JSON or Parquet).
const MAX_CELL_CHARS: usize = 80;

fn query_err(e: datafusion::error::DataFusionError) -> Error {
    Error::Query(e.to_string())
}

/// Write a result stream to `out` as text; returns the number of rows. A closed pipe
/// (`| head`) ends the output quietly.
pub async fn write_text(
    mut stream: SendableRecordBatchStream,
    format: TextFormat,
    out: &mut dyn Write,
) -> Result<u64> {
    let schema = stream.schema();
    let mut writer = TextWriter::new(format, &schema);
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(query_err)?;
        rows += batch.num_rows() as u64;
        if closed_pipe(writer.batch(&batch, out))? {
            return Ok(rows);
        }
    }
    closed_pipe(writer.finish(rows, out))?;
    Ok(rows)
}

/// `Ok(true)` when the reader went away, which is not an error for a pager or `head`.
fn closed_pipe(r: Result<()>) -> Result<bool> {
    match r {
        Ok(()) => Ok(false),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(true)
        }
        Err(Error::Arrow(arrow::error::ArrowError::IoError(_, source)))
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

enum TextWriter {
    Table(TableWriter),
    Csv { schema: SchemaRef, wrote: bool },
    Json,
}

impl TextWriter {
    fn new(format: TextFormat, schema: &SchemaRef) -> Self {
        match format {
            TextFormat::Table => Self::Table(TableWriter::new(schema)),
            TextFormat::Csv => Self::Csv {
                schema: schema.clone(),
                wrote: false,
            },
            TextFormat::Json => Self::Json,
        }
    }

    fn batch(&mut self, batch: &RecordBatch, out: &mut dyn Write) -> Result<()> {
        match self {
            Self::Table(t) => t.batch(batch, out),
            Self::Csv { wrote, .. } => {
                write_csv(batch, !*wrote, out)?;
                *wrote = true;
                Ok(())
            }
            Self::Json => {
                let mut w = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(&mut *out);
                w.write(batch)?;
                w.finish()?;
                Ok(())
            }
        }
    }

    fn finish(&mut self, rows: u64, out: &mut dyn Write) -> Result<()> {
        match self {
            Self::Table(t) => t.finish(rows, out)?,
            // A header even when nothing matched, so the file is still a table.
            Self::Csv { schema, wrote } if !*wrote => {
                write_csv(&RecordBatch::new_empty(schema.clone()), true, out)?;
            }
            _ => {}
        }
        out.flush().map_err(|e| Error::io("writing results", e))
    }
}

fn write_csv(batch: &RecordBatch, header: bool, out: &mut dyn Write) -> Result<()> {
    let batch = flatten_nested(batch)?;
    let mut w = arrow::csv::WriterBuilder::new()
        .with_header(header)
        .build(&mut *out);
    w.write(&batch)?;
    Ok(())
}

/// CSV has no lists or structs: such columns (e.g. `top_k`) become their text form.
fn flatten_nested(batch: &RecordBatch) -> Result<RecordBatch> {
    let needs = |t: &DataType| {
        matches!(
            t,
            DataType::List(_)
                | DataType::LargeList(_)
                | DataType::FixedSizeList(_, _)
                | DataType::ListView(_)
                | DataType::LargeListView(_)
                | DataType::Struct(_)
                | DataType::Map(_, _)
                | DataType::Union(_, _)
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
                | DataType::FixedSizeBinary(_)
        )
    };
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| needs(f.data_type())) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if needs(field.data_type()) {
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(to_text(column.as_ref())?));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn to_text(column: &dyn Array) -> Result<arrow::array::StringArray> {
    let options = FormatOptions::new();
    let fmt = ArrayFormatter::try_new(column, &options)?;
    let mut b = StringBuilder::with_capacity(column.len(), column.len() * 16);
    for i in 0..column.len() {
        if column.is_null(i) {
            b.append_null();
        } else {
            b.append_value(fmt.value(i).to_string());
        }
    }
    Ok(b.finish())
}

/// An aligned table. Column widths come from the header and the first batch and only
/// grow afterwards, so output starts with the first batch and memory stays one batch.
struct TableWriter {
    names: Vec<String>,
    right: Vec<bool>,
    widths: Vec<usize>,
    started: bool,
}

impl TableWriter {
    fn new(schema: &SchemaRef) -> Self {
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let right = schema
            .fields()
            .iter()
            .map(|f| f.data_type().is_numeric())
            .collect();
        let widths = names.iter().map(|n| n.chars().count()).collect();
        Self {
            names,
            right,
            widths,
            started: false,
        }
    }

    fn border(&self) -> String {
        let mut s = String::from("+");
        for w in &self.widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    }

    fn line(&self, cells: &[String], right: &[bool]) -> String {
        let mut s = String::from("|");
        for ((cell, w), r) in cells.iter().zip(&self.widths).zip(right) {
            let pad = w.saturating_sub(cell.chars().count());
            if *r {
                s.push_str(&format!(" {}{} |", " ".repeat(pad), cell));
            } else {
                s.push_str(&format!(" {}{} |", cell, " ".repeat(pad)));
            }
        }
        s.push('\n');
        s
    }

    fn start(&mut self, out: &mut dyn Write) -> Result<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        let left = vec![false; self.names.len()];
        let text = format!(
            "{}{}{}",
            self.border(),
            self.line(&self.names, &left),
            self.border()
        );
        out.write_all(text.as_bytes())
            .map_err(|e| Error::io("writing results", e))
    }

    fn batch(&mut self, batch: &RecordBatch, out: &mut dyn Write) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let options = FormatOptions::new().with_null("");
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let rows: Vec<Vec<String>> = (0..batch.num_rows())
            .map(|r| {
                formatters
                    .iter()
                    .map(|f| cell(&f.value(r).to_string()))
                    .collect()
            })
            .collect();
        if !self.started {
            for row in &rows {
                for (w, c) in self.widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        self.start(out)?;
        let mut text = String::new();
        for row in &rows {
            text.push_str(&self.line(row, &self.right));
        }
        out.write_all(text.as_bytes())
            .map_err(|e| Error::io("writing results", e))
    }

    fn finish(&mut self, rows: u64, out: &mut dyn Write) -> Result<()> {
        self.start(out)?;
        let noun = if rows == 1 { "row" } else { "rows" };
        let text = format!("{}{rows} {noun}\n", self.border());
        out.write_all(text.as_bytes())
            .map_err(|e| Error::io("writing results", e))
    }
}

/// One table cell: on one line, and cut when very long.
fn cell(s: &str) -> String {
    let one_line = s
        .replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace('\t', " ");
    if one_line.chars().count() > MAX_CELL_CHARS {
        let mut cut: String = one_line.chars().take(MAX_CELL_CHARS - 1).collect();
        cut.push('…');
        cut
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, StringArray};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("label", DataType::Utf8, true),
            Field::new("score", DataType::Float32, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("cat"), None])),
                Arc::new(Float32Array::from(vec![0.5, 0.25])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn table_aligns_and_counts_rows() {
        let b = batch();
        let mut t = TableWriter::new(&b.schema());
        let mut out = Vec::new();
        t.batch(&b, &mut out).unwrap();
        t.finish(2, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let expected = "\
+-------+-------+
| label | score |
+-------+-------+
| cat   |   0.5 |
|       |  0.25 |
+-------+-------+
2 rows
";
        assert_eq!(text, expected);
    }

    #[test]
    fn long_cells_are_cut_in_the_table_only() {
        let long = "x".repeat(200);
        assert_eq!(cell(&long).chars().count(), MAX_CELL_CHARS);
        assert_eq!(cell("a\nb"), "a\\nb");
    }
}
