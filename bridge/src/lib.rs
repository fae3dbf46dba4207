//! The hybrid gateway: routing decisions between the overlay and DNS-based SIP domains (cross-registration, RFC 3263 or DHT, PSTN/ENUM). Filled in by the gateway issue.
