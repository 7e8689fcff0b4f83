//! The interactive prompt: statements end with `;` and may span lines; `\q` quits,
//! `\d` lists the tables, `\n` lists the named queries. History is kept in the user's
//! data folder (`$XDG_DATA_HOME/labelflow/history`) or `~/.labelflow_history`.

use std::path::PathBuf;

use datafusion::prelude::SessionContext;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

use labelflow::query::{NamedQuery, TextFormat};
use labelflow::{Error, Result};

const HELP: &str = "\
Enter SQL ending with ';' (it may span lines). Tables: predictions, latest, and any
--table. Commands: \\d tables, \\n named queries, \\q quit.";

fn history_file() -> Option<PathBuf> {
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(data).join("labelflow").join("history"));
    }
    let home = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE"))?;
    Some(PathBuf::from(home).join(".labelflow_history"))
}

fn readline_err(e: ReadlineError) -> Error {
    Error::Query(format!("cannot read from the terminal: {e}"))
}

/// Run the prompt until `\q` or end of input. Errors in a statement are printed and
/// the prompt goes on; only a terminal failure ends it with an error.
pub async fn run(ctx: &SessionContext, format: TextFormat) -> Result<u64> {
    let mut editor = DefaultEditor::new().map_err(readline_err)?;
    let history = history_file();
    if let Some(h) = &history {
        // A first start has no history yet.
        let _ = editor.load_history(h);
    }
    eprintln!("{HELP}");
    let mut rows = 0u64;
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "labelflow> "
        } else {
            "       ...> "
        };
        let (ed, line) = tokio::task::spawn_blocking(move || {
            let line = editor.readline(prompt);
            (editor, line)
        })
        .await?;
        editor = ed;
        let line = match line {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(readline_err(e)),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            match trimmed {
                "\\q" | "\\quit" => break,
                "\\d" => {
                    let sql = "SELECT table_name, table_type FROM information_schema.tables \
                               WHERE table_schema = 'public' ORDER BY table_name";
                    if let Err(e) = super::print_statements(ctx, sql, &[], format).await {
                        eprintln!("{e}");
                    }
                }
                "\\n" => match NamedQuery::builtins() {
                    Ok(all) => {
                        for q in all {
                            print!("{}", q.usage());
                        }
                    }
                    Err(e) => eprintln!("{e}"),
                },
                _ => eprintln!("{HELP}"),
            }
            continue;
        }
        if trimmed.is_empty() && buffer.is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let sql = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(sql.trim());
        match super::print_statements(ctx, &sql, &[], format).await {
            Ok(n) => rows += n,
            Err(e) => eprintln!("{e}"),
        }
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = editor.save_history(h) {
            tracing::debug!(path = %h.display(), error = %e, "history not saved");
        }
    }
    Ok(rows)
}
