//! The SIP wire form of overlay messages (see `docs/protocol.md`).

// TEMPORARY integration stubs (replaced by the ring branch's codec).
pub fn is_overlay(_r: &crate::sip::message::Request) -> bool {
    false
}
pub fn decode_request(_r: &crate::sip::message::Request) -> Result<super::RingRequest, String> {
    Err("stub".into())
}
pub fn decode_response(_r: &crate::sip::message::Response) -> Result<super::RingResponse, String> {
    Err("stub".into())
}
pub fn encode_request(
    _r: &super::RingRequest,
    _me: &super::Peer,
    _to: std::net::SocketAddr,
) -> crate::sip::message::Request {
    unimplemented!()
}
pub fn encode_response(
    o: &crate::sip::message::Request,
    _r: &super::RingResponse,
) -> crate::sip::message::Response {
    o.response(500)
}
