//! All integration tests in one binary (one link, shared helpers); each test owns its temp dir.

mod behaviour;
mod decode_real;
mod golden;
mod hostile;
mod net;
mod orthanc;
mod reports;
mod review_page;
mod scan;
mod soak;
mod support;
mod watch;
