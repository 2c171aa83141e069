//! All integration tests in one binary (one link, shared helpers); each test owns its temp dir.

mod decode_real;
mod scan;
mod support;
