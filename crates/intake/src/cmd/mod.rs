pub mod get;
pub mod load;
pub mod start;
pub mod status;
pub mod submit;
