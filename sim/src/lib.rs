pub mod log_model;
