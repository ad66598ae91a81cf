pub mod demo;
pub mod get;
pub mod load;
pub mod signal;
pub mod sink;
pub mod start;
pub mod status;
pub mod submit;
