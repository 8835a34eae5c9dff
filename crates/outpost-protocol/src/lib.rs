//! The wire types between an edge's admin API and its readers (the
//! `outpost` CLI, later the fleet manager). Empty until the status model
//! moves here.
