//! TLS for Verge's listeners.
