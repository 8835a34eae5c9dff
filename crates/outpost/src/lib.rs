//! The parts of the `outpost` binary that other targets (fuzzers) use: the
//! configuration file's parser and resolver.

pub mod config;
