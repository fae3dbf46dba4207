//! DNS for overlay domains: the authoritative server and the RFC 3263 resolver. Filled in by the gateway issue.
