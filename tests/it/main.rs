//! The integration tests, one binary with a module per area: the crate is linked once, not once
//! per file. Each test starts what it needs (the real app on a random port, a fresh PostgreSQL
//! database or SQLite file, the mock upstream on loopback), so tests run in parallel.

mod auth;
mod cli;
mod common;
mod durability;
mod errors;
mod eval;
mod gateway;
mod load;
mod logs_api;
mod passthrough;
mod proptest_parsing;
mod reliability;
mod security;
