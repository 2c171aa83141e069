//! Forwarding.
