//! Named queries: the SQL files in `sql/`, their header comments and their parameters.
//!
//! Each file starts with a comment block. Its first line is `-- NAME: what it answers`;
//! each parameter is declared on a line of the form
//!
//! ```text
//! -- param: threshold = 0.3 (float)
//! -- param: run_a = '' (string): the older run; empty means the second newest run
//! ```
//!
//! and is written in the SQL as a placeholder (`$threshold`). Values from `--param`
//! are parsed into the declared type and bound as typed [`ScalarValue`]s, so a value
//! is never pasted into the SQL text.
//!
//! A `computed` parameter is a value the query needs from the data before it runs,
//! given as a scalar SQL expression that may use the other parameters:
//!
//! ```text
//! -- param: centre = (SELECT embedding_mean(embedding) FROM latest) (computed)
//! ```
//!
//! It is evaluated once, before the query, and bound like the others (a vector stays
//! one value instead of being joined onto every row); `--param` cannot set it.

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::scalar::ScalarValue;

use crate::error::{Error, Result};

/// The queries shipped with the binary, `(name, sql)`; `sql/` is the source.
const BUILTIN: &[(&str, &str)] = &[
    ("by_prefix", include_str!("../../sql/by_prefix.sql")),
    ("class_counts", include_str!("../../sql/class_counts.sql")),
    ("confusion", include_str!("../../sql/confusion.sql")),
    ("errors", include_str!("../../sql/errors.sql")),
    (
        "low_confidence",
        include_str!("../../sql/low_confidence.sql"),
    ),
    ("model_compare", include_str!("../../sql/model_compare.sql")),
    (
        "near_duplicates",
        include_str!("../../sql/near_duplicates.sql"),
    ),
    (
        "relabel_candidates",
        include_str!("../../sql/relabel_candidates.sql"),
    ),
    ("runs", include_str!("../../sql/runs.sql")),
    ("similar", include_str!("../../sql/similar.sql")),
];

/// The type of a query parameter, as declared in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Float,
    Int,
    String,
    Bool,
    /// Evaluated from the data before the query runs (the default is the SQL).
    Computed,
}

impl ParamType {
    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "float" | "double" => Some(Self::Float),
            "int" | "integer" => Some(Self::Int),
            "string" | "text" => Some(Self::String),
            "bool" | "boolean" => Some(Self::Bool),
            "computed" => Some(Self::Computed),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Float => "float",
            Self::Int => "int",
            Self::String => "string",
            Self::Bool => "bool",
            Self::Computed => "computed",
        }
    }

    /// Parse a value given on the command line into this type.
    pub fn value(self, text: &str) -> std::result::Result<ScalarValue, String> {
        let t = text.trim();
        match self {
            Self::Float => t
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(|v| ScalarValue::Float64(Some(v)))
                .ok_or_else(|| format!("{text:?} is not a number")),
            Self::Int => t
                .parse::<i64>()
                .map(|v| ScalarValue::Int64(Some(v)))
                .map_err(|_| format!("{text:?} is not an integer")),
            Self::Bool => match t.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(ScalarValue::Boolean(Some(true))),
                "false" | "no" | "0" => Ok(ScalarValue::Boolean(Some(false))),
                _ => Err(format!("{text:?} is not true or false")),
            },
            Self::String => Ok(ScalarValue::Utf8(Some(text.to_string()))),
            Self::Computed => Err("it is computed from the data by the query".to_string()),
        }
    }
}

/// One declared parameter of a named query.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub kind: ParamType,
    /// The default, as text in the parameter's type (strings without their quotes).
    pub default: String,
    /// What the parameter means, when the header says.
    pub help: String,
}

/// A named query: its SQL and what its header declares.
#[derive(Debug, Clone)]
pub struct NamedQuery {
    pub name: String,
    /// The first header line: what the query answers.
    pub summary: String,
    /// The whole header comment, without the `-- ` markers.
    pub description: String,
    pub params: Vec<ParamSpec>,
    pub sql: String,
}

impl NamedQuery {
    /// Parse a query file's text; `name` is the file name without `.sql`.
    pub fn parse(name: &str, sql: &str) -> Result<Self> {
        let bad = |reason: String| Error::Query(format!("named query {name}: {reason}"));
        let header: Vec<&str> = sql
            .lines()
            .map(str::trim)
            .take_while(|l| l.starts_with("--"))
            .map(|l| l.trim_start_matches('-').trim())
            .collect();
        let first = header.first().ok_or_else(|| {
            bad("the file must start with a `-- name: what it answers` comment".into())
        })?;
        let first = first
            .strip_prefix(name)
            .and_then(|s| s.strip_prefix(':'))
            .map(str::trim)
            .ok_or_else(|| {
                bad(format!(
                    "the first comment line must start with `-- {name}:`"
                ))
            })?;
        // The first sentence, which may wrap over several comment lines.
        let mut text = first.to_string();
        for line in header.iter().skip(1) {
            if text.contains(". ") || text.ends_with('.') || line.starts_with("param:") {
                break;
            }
            text.push(' ');
            text.push_str(line);
        }
        let summary = match text.find(". ") {
            Some(i) => text[..=i].to_string(),
            None => text,
        };
        let params = declared_params(sql).map_err(bad)?;
        Ok(Self {
            name: name.to_string(),
            summary,
            description: header.join("\n"),
            params,
            sql: sql.to_string(),
        })
    }

    /// Whether the query reads the embedding columns (`labelflow run --embeddings`).
    pub fn needs_embeddings(&self) -> bool {
        let body: String = self
            .sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        body.contains(crate::schema::EMBEDDING) || body.contains("code_bands(")
    }

    /// A query shipped with the binary.
    pub fn builtin(name: &str) -> Option<Result<Self>> {
        BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, sql)| Self::parse(n, sql))
    }

    /// Every query shipped with the binary, by name.
    pub fn builtins() -> Result<Vec<Self>> {
        BUILTIN.iter().map(|(n, sql)| Self::parse(n, sql)).collect()
    }

    /// The names of the queries shipped with the binary.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// Every `*.sql` file in a folder, by name.
    pub fn from_dir(dir: &Path) -> Result<Vec<Self>> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("cannot read the SQL folder {}", dir.display()), e))?;
        let mut out = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| Error::io(format!("cannot read the SQL folder {}", dir.display()), e))?
                .path();
            if path.extension().and_then(|e| e.to_str()) != Some("sql") {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let sql = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
            out.push(Self::parse(name, &sql)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Find a query by name, in `dir` when given, else among the built-in ones.
    pub fn find(name: &str, dir: Option<&Path>) -> Result<Self> {
        let available: Vec<Self> = match dir {
            Some(d) => Self::from_dir(d)?,
            None => Self::builtins()?,
        };
        let names: Vec<&str> = available.iter().map(|q| q.name.as_str()).collect();
        let where_ = dir
            .map(|d| format!(" in {}", d.display()))
            .unwrap_or_default();
        let listing = names.join(", ");
        available
            .iter()
            .find(|q| q.name == name)
            .cloned()
            .ok_or_else(|| {
                Error::Query(format!(
                    "no named query {name:?}{where_}; available: {listing}"
                ))
            })
    }

    /// Typed values for every declared parameter: the given ones parsed into their
    /// declared types, the others from their defaults. An undeclared name or a value
    /// that does not parse is an error naming the parameter.
    pub fn bind(&self, given: &[(String, String)]) -> Result<Vec<(String, ScalarValue)>> {
        bind(&format!("named query {}", self.name), &self.params, given)
    }

    /// Help text: the header comment, with each parameter's type and default.
    pub fn usage(&self) -> String {
        let mut s = format!("{}\n", self.name);
        for line in self.description.lines() {
            if line.starts_with("param:") {
                continue;
            }
            let line = line
                .strip_prefix(self.name.as_str())
                .and_then(|l| l.strip_prefix(':'))
                .map(str::trim)
                .unwrap_or(line);
            s.push_str(&format!("    {line}\n"));
        }
        for p in &self.params {
            if p.kind == ParamType::Computed {
                s.push_str(&format!(
                    "    {}: computed from the data before the query: {}\n",
                    p.name, p.default
                ));
                continue;
            }
            let default = match p.kind {
                ParamType::String => format!("'{}'", p.default),
                _ => p.default.clone(),
            };
            s.push_str(&format!(
                "    --param {}=…  ({}, default {default})",
                p.name,
                p.kind.name()
            ));
            if !p.help.is_empty() {
                s.push_str(&format!(": {}", p.help));
            }
            s.push('\n');
        }
        s
    }
}

/// The parameters declared in the leading comment block of `sql`.
pub fn declared_params(sql: &str) -> std::result::Result<Vec<ParamSpec>, String> {
    let mut params: Vec<ParamSpec> = Vec::new();
    let header = sql
        .lines()
        .map(str::trim)
        .take_while(|l| l.starts_with("--"))
        .map(|l| l.trim_start_matches('-').trim());
    for line in header {
        if let Some(decl) = line.strip_prefix("param:") {
            let spec = parse_param(decl).map_err(|r| format!("{r} in `{line}`"))?;
            if params.iter().any(|p| p.name == spec.name) {
                return Err(format!("parameter {} is declared twice", spec.name));
            }
            params.push(spec);
        }
    }
    Ok(params)
}

/// Typed values for every declared parameter: the given ones parsed into their
/// declared types, the others from their defaults. An undeclared name or a value that
/// does not parse is an error naming the parameter; `what` names the query.
pub fn bind(
    what: &str,
    params: &[ParamSpec],
    given: &[(String, String)],
) -> Result<Vec<(String, ScalarValue)>> {
    let mut values: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in given {
        if params
            .iter()
            .any(|p| &p.name == k && p.kind == ParamType::Computed)
        {
            return Err(Error::Query(format!(
                "--param {k}: {what} computes {k} from the data before it runs; it cannot be set"
            )));
        }
        if !params.iter().any(|p| &p.name == k) {
            let declared: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
            let declared = if declared.is_empty() {
                "it takes none".to_string()
            } else {
                format!("it takes: {}", declared.join(", "))
            };
            return Err(Error::Query(format!(
                "{what} has no parameter {k:?}; {declared}"
            )));
        }
        values.insert(k, v);
    }
    params
        .iter()
        .filter(|p| p.kind != ParamType::Computed)
        .map(|p| {
            let text = values.get(p.name.as_str()).copied().unwrap_or(&p.default);
            p.kind
                .value(text)
                .map(|v| (p.name.clone(), v))
                .map_err(|reason| {
                    Error::Query(format!(
                        "--param {}: {reason}; expected a {}",
                        p.name,
                        p.kind.name()
                    ))
                })
        })
        .collect()
}

/// `NAME = DEFAULT (TYPE)` with an optional `: help` after it.
fn parse_param(decl: &str) -> std::result::Result<ParamSpec, String> {
    let (name, rest) = decl
        .split_once('=')
        .ok_or("expected `param: NAME = DEFAULT (TYPE)`")?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("invalid parameter name {name:?}"));
    }
    let open = rest.rfind('(').ok_or("missing `(TYPE)`")?;
    let close = rest[open..]
        .find(')')
        .map(|i| open + i)
        .ok_or("missing `)`")?;
    let kind_text = &rest[open + 1..close];
    let kind = ParamType::parse(kind_text).ok_or_else(|| format!("unknown type {kind_text:?}"))?;
    let mut default = rest[..open].trim().to_string();
    if kind == ParamType::String {
        default = default
            .strip_prefix('\'')
            .and_then(|d| d.strip_suffix('\''))
            .map(str::to_string)
            .unwrap_or(default);
    }
    if kind == ParamType::Computed {
        if default.is_empty() {
            return Err(format!(
                "computed parameter {name} needs its SQL as the default"
            ));
        }
    } else {
        kind.value(&default)
            .map_err(|r| format!("default of {name}: {r}"))?;
    }
    let help = rest[close + 1..]
        .trim()
        .trim_start_matches(':')
        .trim()
        .to_string();
    Ok(ParamSpec {
        name: name.to_string(),
        kind,
        default,
        help,
    })
}

/// Split a `--param k=v` argument.
pub fn parse_param_arg(s: &str) -> std::result::Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("expected NAME=VALUE, got {s:?}"));
    }
    Ok((k.trim_start_matches('$').to_string(), v.to_string()))
}

/// Values for a query that declares no types (SQL given on the command line): an
/// integer, else a float, else `true`/`false`, else the text as it is.
pub fn infer_params(given: &[(String, String)]) -> Vec<(String, ScalarValue)> {
    given
        .iter()
        .map(|(k, v)| {
            let value = [ParamType::Int, ParamType::Float, ParamType::Bool]
                .iter()
                .find_map(|t| {
                    // Only words a person would mean as booleans, not 0/1.
                    if *t == ParamType::Bool && !matches!(v.trim(), "true" | "false") {
                        return None;
                    }
                    t.value(v).ok()
                })
                .unwrap_or_else(|| ScalarValue::Utf8(Some(v.clone())));
            (k.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_query_parses() {
        let all = NamedQuery::builtins().unwrap();
        assert_eq!(all.len(), BUILTIN.len());
        for q in all {
            assert!(q.summary.ends_with('.'), "{}: {:?}", q.name, q.summary);
        }
        let q = NamedQuery::builtin("by_prefix").unwrap().unwrap();
        assert_eq!(
            q.summary,
            "how many images of each label per folder of `key`, in the newest run of every image."
        );
    }

    #[test]
    fn header_declares_typed_params_with_defaults() {
        let q = NamedQuery::builtin("low_confidence").unwrap().unwrap();
        assert_eq!(q.params.len(), 1);
        assert_eq!(q.params[0].name, "threshold");
        assert_eq!(q.params[0].kind, ParamType::Float);
        assert_eq!(q.params[0].default, "0.3");
        let bound = q.bind(&[]).unwrap();
        assert_eq!(
            bound,
            vec![("threshold".into(), ScalarValue::Float64(Some(0.3)))]
        );

        let q = NamedQuery::builtin("model_compare").unwrap().unwrap();
        assert_eq!(q.params[0].default, "");
        assert!(q.params[0].help.contains("older run"), "{:?}", q.params[0]);
    }

    #[test]
    fn computed_parameters_are_left_to_the_query_and_cannot_be_set() {
        let q = NamedQuery::builtin("near_duplicates").unwrap().unwrap();
        let centre = q.params.iter().find(|p| p.name == "centre").unwrap();
        assert_eq!(centre.kind, ParamType::Computed);
        assert_eq!(
            centre.default,
            "(SELECT embedding_mean(embedding) FROM latest)"
        );
        let bound = q.bind(&[]).unwrap();
        assert!(bound.iter().all(|(n, _)| n != "centre"), "{bound:?}");
        let err = q
            .bind(&[("centre".into(), "[1, 2]".into())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("computes centre from the data"), "{err}");
        assert!(
            q.usage().contains("centre: computed from the data"),
            "{}",
            q.usage()
        );
        let err = declared_params("-- x: y\n-- param: c = (computed)\nSELECT 1").unwrap_err();
        assert!(err.contains("needs its SQL"), "{err}");
    }

    #[test]
    fn values_must_parse_as_the_declared_type() {
        let q = NamedQuery::builtin("low_confidence").unwrap().unwrap();
        let err = q
            .bind(&[("threshold".into(), "0.3; DROP TABLE x".into())])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("threshold") && err.contains("not a number"),
            "{err}"
        );
        let err = q
            .bind(&[("treshold".into(), "0.3".into())])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("treshold") && err.contains("threshold"),
            "{err}"
        );
    }

    #[test]
    fn a_file_without_a_header_is_refused() {
        let err = NamedQuery::parse("x", "SELECT 1").unwrap_err().to_string();
        assert!(err.contains("-- x:") || err.contains("comment"), "{err}");
        let err = NamedQuery::parse("x", "-- x: y\n-- param: t = abc (float)\nSELECT 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a number"), "{err}");
    }

    #[test]
    fn untyped_params_are_inferred() {
        let v = infer_params(&[
            ("a".into(), "3".into()),
            ("b".into(), "0.5".into()),
            ("c".into(), "cat".into()),
            ("d".into(), "true".into()),
        ]);
        assert_eq!(v[0].1, ScalarValue::Int64(Some(3)));
        assert_eq!(v[1].1, ScalarValue::Float64(Some(0.5)));
        assert_eq!(v[2].1, ScalarValue::Utf8(Some("cat".into())));
        assert_eq!(v[3].1, ScalarValue::Boolean(Some(true)));
    }

    #[test]
    fn param_args_split_at_the_first_equals() {
        assert_eq!(
            parse_param_arg("k=a=b").unwrap(),
            ("k".into(), "a=b".into())
        );
        assert!(parse_param_arg("novalue").is_err());
    }
}
