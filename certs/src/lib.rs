//! Development certificate authority for TLS tests (never keys of real deployments). Filled in by the TLS issue.
