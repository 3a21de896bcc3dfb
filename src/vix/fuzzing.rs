//! Oracles for the `vix_request` fuzz target and the property tests. Not part of the API.

use super::client;
use super::property::PropertyList;
use super::proto::{encode_request, split_relayed, Command, Credentials, Reply, Request};

/// Decodes arbitrary bytes every way the guest does (TCLO framing, request, body, credentials,
/// property list) and the host does (reply, listings); whatever decodes re-encodes to
/// something that decodes the same. Panics on a mismatch, never on bad input.
pub fn vix_request(data: &[u8]) {
    if let Ok(r) = split_relayed(data) {
        assert!(r.request_name.len() + r.message.len() < data.len());
        request(r.message);
    }
    request(data);
    if let Ok(list) = PropertyList::decode(data) {
        assert_eq!(PropertyList::decode(&list.encode()).as_ref(), Ok(&list));
    }
    for binary in [false, true] {
        if let Ok(reply) = Reply::decode(data, binary) {
            let again = Reply::decode(&reply.encode(binary), binary).expect("re-encoded reply");
            assert_eq!(again, reply);
        }
    }
    let _ = client::parse_list_files(data);
    let _ = client::parse_file_info(data);
    let _ = client::parse_tools_state(data);
}

fn request(message: &[u8]) {
    let Ok(req) = Request::parse(message) else {
        return;
    };
    let h = req.header;
    assert!(req.body.len() + req.credential.len() <= message.len());
    if let Ok(cmd) = Command::decode(h.op, req.body) {
        assert_eq!(cmd.op(), h.op);
        let body = cmd.encode_body();
        assert_eq!(Command::decode(h.op, &body).as_ref(), Ok(&cmd));
        let rebuilt = encode_request(
            h.op,
            h.cookie,
            h.common_flags,
            h.credential_type,
            &body,
            req.credential,
        );
        let again = Request::parse(&rebuilt).expect("re-encoded request parses");
        assert_eq!(again.header.op, h.op);
        assert_eq!(again.header.cookie, h.cookie);
        assert_eq!(again.credential, req.credential);
        assert_eq!(Command::decode(h.op, again.body).as_ref(), Ok(&cmd));
    }
    if let Ok(c) = Credentials::decode(h.credential_type, req.credential) {
        assert_eq!(
            Credentials::decode(h.credential_type, &c.encode()).as_ref(),
            Ok(&c)
        );
    }
}
