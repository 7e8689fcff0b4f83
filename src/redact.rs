//! Keeping credentials out of everything labelflow prints or writes.
//!
//! Store clients put secrets in places that can reach an error message: a SAS token
//! rides in request URLs, a misconfigured endpoint can echo a key. Every text that
//! leaves the process — fatal messages, log lines, the `error` column of a row — goes
//! through [`redact`], which replaces the values of the credential variables in the
//! environment and the signature parameters of signed URLs with `***`.

use std::borrow::Cow;
use std::sync::OnceLock;

/// Environment variables whose values are secrets.
pub const SECRET_VARIABLES: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_MASTER_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_TOKEN",
    "AZURE_CLIENT_SECRET",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
];

/// URL query parameters that carry a signature or a token.
const SECRET_PARAMETERS: &[&str] = &[
    "sig=",
    "X-Amz-Signature=",
    "X-Amz-Security-Token=",
    "X-Goog-Signature=",
    "Signature=",
];

fn secrets() -> &'static [String] {
    static SECRETS: OnceLock<Vec<String>> = OnceLock::new();
    SECRETS.get_or_init(|| {
        let mut found: Vec<String> = SECRET_VARIABLES
            .iter()
            .filter_map(|k| std::env::var(k).ok())
            .flat_map(|v| {
                // A SAS token is also seen without its leading '?' and per parameter.
                let v = v.trim().trim_start_matches('?').to_string();
                let mut parts = vec![v.clone()];
                parts.extend(
                    v.split('&')
                        .filter_map(|p| p.split_once('=').map(|(_, val)| val.to_string())),
                );
                parts
            })
            // Short values ("true", a one-letter test key) would redact ordinary text.
            .filter(|v| v.len() >= 8)
            .collect();
        found.sort_by_key(|s| std::cmp::Reverse(s.len()));
        found.dedup();
        found
    })
}

/// `text` with secrets replaced by `***`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let secrets = secrets();
    let needs = secrets.iter().any(|s| text.contains(s.as_str()))
        || SECRET_PARAMETERS.iter().any(|p| text.contains(p));
    if !needs {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(s.as_str(), "***");
    }
    for p in SECRET_PARAMETERS {
        out = redact_parameter(&out, p);
    }
    Cow::Owned(out)
}

/// Replace the value after every `param` (up to `&`, whitespace, a quote or `)`).
fn redact_parameter(text: &str, param: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(param) {
        let (head, tail) = rest.split_at(at + param.len());
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '&' || c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>'))
            .unwrap_or(tail.len());
        if end > 0 {
            out.push_str("***");
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A writer that redacts each write (log lines are written whole, one event a call).
pub struct RedactingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => {
                self.0.write_all(redact(text).as_bytes())?;
                Ok(buf.len())
            }
            Err(_) => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_parameters_are_masked() {
        let url = "https://a.blob.core.windows.net/c/x.jpg?sv=2022-11-02&sig=abc%2Fdef&se=1 failed";
        let r = redact(url);
        assert!(!r.contains("abc%2Fdef"), "{r}");
        assert!(r.contains("sig=***&se=1 failed"), "{r}");
        let s3 = "GET /b/k?X-Amz-Signature=deadbeef&X-Amz-Date=1";
        assert_eq!(redact(s3), "GET /b/k?X-Amz-Signature=***&X-Amz-Date=1");
        assert!(matches!(redact("nothing secret here"), Cow::Borrowed(_)));
    }
}
