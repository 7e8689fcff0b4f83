//! Whether a failed fetch was the object's or the store's.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::sink::Row;
use crate::source::Origin;
use crate::store::{self, Location};

/// Failed fetches held back while the store may be down: written as error rows
/// once a fetch sent after the latest failure gets an answer (the failures were the
/// objects'), dropped when the store is declared unavailable (a rerun retries them).
/// Fetches run concurrently and finish out of order: an answer to a request sent
/// before the failure proves nothing about the store now.
pub(super) struct StoreHealth {
    held: Vec<Row>,
    /// When the latest held failure was seen.
    last_fault: Option<Instant>,
    max_failures: u32,
}

impl StoreHealth {
    /// Declares the store down after `max_failures` failures in a row (at least 1).
    pub fn new(max_failures: u32) -> Self {
        Self {
            held: Vec::new(),
            last_fault: None,
            max_failures: max_failures.max(1),
        }
    }

    /// Note a fetch failure that was the store's; `Err` once there are too many in a
    /// row, or at once for refused credentials.
    pub fn failed(&mut self, input: &Location, row: Row, fault: object_store::Error) -> Result<()> {
        // A manifest's object names its own store.
        let origin = row.object.origin.clone();
        let input = match &origin {
            Origin::Store(host) => host.location().unwrap_or(input),
            _ => input,
        };
        if store::is_credentials_error(&fault) {
            return Err(store::store_error(input, fault));
        }
        self.held.push(row);
        self.last_fault = Some(Instant::now());
        let failures = self.held.len() as u32;
        if failures >= self.max_failures {
            return Err(match store::store_error(input, fault) {
                e @ Error::Credentials { .. } => e,
                Error::Store { location, source } => Error::StoreUnavailable {
                    location,
                    failures,
                    source,
                },
                other => other,
            });
        }
        Ok(())
    }

    /// The store answered a fetch sent at `sent`: if that was after the latest held
    /// failure, the held failures were the objects' own.
    pub fn answered(&mut self, sent: Instant) -> Vec<Row> {
        if self.last_fault.is_some_and(|fault| sent < fault) {
            return Vec::new();
        }
        self.release()
    }

    /// The held failures, as error rows.
    pub fn release(&mut self) -> Vec<Row> {
        self.last_fault = None;
        std::mem::take(&mut self.held)
    }
}
