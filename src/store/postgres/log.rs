//! Reads and writes of the event log, delivery cursors and the audit log: the queries are
//! shared with the other dialect (`store/shared/log.rs`).

use super::PostgresStore;

impl_log_queries!(PostgresStore);
