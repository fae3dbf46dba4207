//! Answering questions from the served zones: the most specific zone, the
//! RRset (following in-zone CNAMEs), NODATA / NXDOMAIN with the SOA, and the
//! additional section (SRV targets' addresses; for NAPTR the SRV records and
//! their targets).

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use super::{ZoneData, Zones, parse_domain, sort_key};

/// The outcome of looking a question up in the served zones.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Not inside any served zone.
    Refused,
    /// Records found (answers, additional section).
    Found {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name exists but has no data of that type; SOA for the authority section.
    NoData { soa: Record },
    /// The name does not exist; SOA for the authority section.
    NxDomain { soa: Record },
}

impl ZoneData {
    fn rrset(&self, name: &Name, rtype: RecordType) -> Vec<Record> {
        self.records
            .get(&LowerName::new(name))
            .map(|v| {
                v.iter()
                    .filter(|r| rtype == RecordType::ANY || r.record_type() == rtype)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Addresses (in-zone) of a host, for the additional section.
    fn addresses(&self, host: &Name, out: &mut Vec<Record>) {
        out.extend(self.rrset(host, RecordType::A));
        out.extend(self.rrset(host, RecordType::AAAA));
    }

    pub(crate) fn lookup(&self, qname: &Name, qtype: RecordType) -> Answer {
        let mut answers = Vec::new();
        let mut name = qname.clone();
        // Follow in-zone CNAMEs (static records only) a few steps.
        for _ in 0..8 {
            let lower = LowerName::new(&name);
            if !self.names.contains(&lower) {
                if answers.is_empty() {
                    return Answer::NxDomain {
                        soa: self.soa.clone(),
                    };
                }
                break;
            }
            let found = self.rrset(&name, qtype);
            if !found.is_empty() {
                answers.extend(found);
                break;
            }
            let cname = self.rrset(&name, RecordType::CNAME);
            match cname.first().map(|r| r.data.clone()) {
                Some(RData::CNAME(target)) if qtype != RecordType::CNAME => {
                    answers.extend(cname);
                    if !self.origin.zone_of(&target.0) {
                        break;
                    }
                    name = target.0.clone();
                }
                _ => break,
            }
        }
        if answers.is_empty() {
            return Answer::NoData {
                soa: self.soa.clone(),
            };
        }
        // Additional section: SRV targets' addresses; for NAPTR the SRV records
        // of the replacements and their targets' addresses (RFC 3263 §4.1
        // encourages this; it saves a resolver two round trips).
        let mut additionals = Vec::new();
        for r in &answers {
            match &r.data {
                RData::SRV(srv) => self.addresses(&srv.target, &mut additionals),
                RData::NAPTR(naptr) => {
                    let srvs = self.rrset(&naptr.replacement, RecordType::SRV);
                    for s in &srvs {
                        if let RData::SRV(srv) = &s.data {
                            self.addresses(&srv.target, &mut additionals);
                        }
                    }
                    additionals.splice(0..0, srvs);
                }
                RData::NS(ns) => self.addresses(&ns.0, &mut additionals),
                _ => {}
            }
        }
        additionals.sort_by_cached_key(sort_key);
        additionals.dedup_by(|a, b| sort_key(a) == sort_key(b));
        // Answer records carry the question's spelling of the owner name
        // (resolvers that randomise case compare it).
        for r in answers.iter_mut() {
            if r.name == *qname {
                r.name = qname.clone();
            }
        }
        Answer::Found {
            answers,
            additionals,
        }
    }
}

impl Zones {
    /// Answer a question from the served zones (used by the server; public for
    /// tests and for in-process lookups without a socket).
    pub(crate) fn answer(&self, qname: &Name, qtype: RecordType) -> Answer {
        match self.zone_for(qname) {
            None => Answer::Refused,
            Some(zone) => zone.lookup(qname, qtype),
        }
    }

    /// Records this node would answer for `name`/`rtype` (empty for NODATA,
    /// NXDOMAIN and names outside the served zones). In-process, no socket.
    pub fn lookup(&self, name: &str, rtype: RecordType) -> Vec<Record> {
        let Ok(qname) = parse_domain(name) else {
            return Vec::new();
        };
        match self.answer(&qname, rtype) {
            Answer::Found { answers, .. } => answers,
            _ => Vec::new(),
        }
    }
}
