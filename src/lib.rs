//! cgbot — a city-management camera robot. The library is the one data path
//! `source → decode → detect` (tracking, rules and cases build on it); each module is one
//! stage, and [`pipeline`] wires them together for every command.

pub mod annotate;
pub mod decode;
pub mod detect;
pub mod models;
pub mod pipeline;
pub mod source;
