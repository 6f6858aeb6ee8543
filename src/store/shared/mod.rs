//! Queries written once for both dialects. Each file here is a macro that a dialect's module
//! instantiates for its store type; inside it, `param!(n)` (the n-th bound parameter), `ts!`
//! (a bound unix-millisecond timestamp) and the column-list macros of that dialect's
//! `columns.rs` give each query its dialect's spelling. What differs in more than spelling
//! (locking, upserts with dialect functions) stays in the dialect's own files.

#[macro_use]
mod log;
