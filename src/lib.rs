//! cgbot — a city-management camera robot. The library is the one data path
//! `source → decode → detect → track → rules → cases → store`; each module is one
//! stage, and [`pipeline`] wires them together for every command.

pub mod annotate;
pub mod api;
pub mod backoff;
pub mod bench;
pub mod cases;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod console;
pub mod decode;
pub mod detect;
pub mod duration;
pub mod eval;
pub mod evidence;
#[cfg(test)]
mod fuzz;
pub mod geometry;
pub mod install;
pub mod limits;
pub mod local_time;
pub mod metrics;
pub mod models;
pub mod patrol;
pub mod pipeline;
pub mod redact;
pub mod rules;
pub mod scene;
pub mod sim;
pub mod sinks;
pub mod source;
pub mod store;
pub mod track;
