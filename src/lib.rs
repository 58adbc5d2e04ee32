//! cgbot — a city-management camera robot. The library is the one data path
//! `source → decode → detect` with the tracking stage and case-event sinks beside it; each module is one
//! stage, and [`pipeline`] wires them together for every command.

pub mod annotate;
pub mod decode;
pub mod detect;
pub mod geometry;
pub mod models;
pub mod pipeline;
pub mod sinks;
pub mod source;
pub mod track;
