//! Just enough DER to read back the CA certificate weerwal wrote.
//!
//! `load` has to know the CA's subject (leaves name it as their issuer, byte
//! for byte), its validity (`weerwal ca show`), its public key (to check that
//! `ca.key` belongs to `ca.pem`), its subject key identifier (leaves repeat it
//! as authority key identifier) and whether it is a CA at all. rcgen only
//! writes certificates, and x509-parser is a test-only dependency, so this
//! reader walks the few fields we need. Every read is bounds-checked and
//! returns an error instead of panicking: `ca.pem` is a file an administrator
//! can edit.

use std::time::{Duration, SystemTime};

const TAG_BOOLEAN: u8 = 0x01;
const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
/// `[0] EXPLICIT Version` in TBSCertificate.
const TAG_VERSION: u8 = 0xa0;
/// `[3] EXPLICIT Extensions` in TBSCertificate.
const TAG_EXTENSIONS: u8 = 0xa3;

/// 2.5.29.14, subjectKeyIdentifier (RFC 5280 §4.2.1.2).
const OID_SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
/// 2.5.29.19, basicConstraints (RFC 5280 §4.2.1.9).
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];

/// Why a certificate could not be read; shown to administrators as the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DerError(pub(crate) &'static str);

impl std::fmt::Display for DerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// One tag-length-value element.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub(crate) tag: u8,
    /// The contents, without tag and length.
    pub(crate) value: &'a [u8],
    /// The whole element, tag and length included.
    pub(crate) raw: &'a [u8],
}

/// Reads consecutive elements from a byte slice.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    pub(crate) fn read(&mut self) -> Result<Tlv<'a>, DerError> {
        let input = self.rest;
        let (&tag, after_tag) = input.split_first().ok_or(DerError("truncated"))?;
        if tag & 0x1f == 0x1f {
            return Err(DerError("multi-byte tags are not used in certificates"));
        }
        let (&first, after_len) = after_tag.split_first().ok_or(DerError("truncated"))?;
        let (len, body) = if first < 0x80 {
            (usize::from(first), after_len)
        } else {
            let count = usize::from(first & 0x7f);
            // 0x80 is BER's indefinite length, which DER forbids; more than
            // four length bytes would describe a certificate over 4 GiB.
            if count == 0 || count > 4 {
                return Err(DerError("unsupported length encoding"));
            }
            let len_bytes = after_len.get(..count).ok_or(DerError("truncated"))?;
            let len = len_bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &after_len[count..])
        };
        let value = body.get(..len).ok_or(DerError("truncated"))?;
        let header_len = input.len() - body.len();
        let raw = &input[..header_len + len];
        self.rest = &body[len..];
        Ok(Tlv { tag, value, raw })
    }

    pub(crate) fn expect(&mut self, tag: u8, what: &'static str) -> Result<Tlv<'a>, DerError> {
        let tlv = self.read()?;
        if tlv.tag != tag {
            return Err(DerError(what));
        }
        Ok(tlv)
    }

    /// Reads the next element only when it has `tag`.
    fn optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>, DerError> {
        if self.peek_tag() == Some(tag) {
            self.read().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// One attribute of a distinguished name, e.g. `CN = weerwal lokale CA`.
#[derive(Debug, Clone)]
pub(crate) struct NameAttribute<'a> {
    /// Content octets of the attribute type OID.
    pub(crate) oid: &'a [u8],
    /// String tag of the value (UTF8String, PrintableString, ...).
    pub(crate) tag: u8,
    pub(crate) value: &'a [u8],
}

/// A distinguished name as it appears in the certificate.
#[derive(Debug, Clone)]
pub(crate) struct Name<'a> {
    /// The whole `Name` element; an issuer must repeat it byte for byte.
    pub(crate) raw: &'a [u8],
    pub(crate) attributes: Vec<NameAttribute<'a>>,
    /// An RDN with more than one attribute (`CN=a+O=b`), which rcgen cannot write.
    pub(crate) multi_valued: bool,
}

/// The fields of a certificate that weerwal uses.
#[derive(Debug, Clone)]
pub(crate) struct Certificate<'a> {
    pub(crate) issuer: Name<'a>,
    pub(crate) subject: Name<'a>,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
    /// The whole SubjectPublicKeyInfo element.
    pub(crate) spki: &'a [u8],
    pub(crate) subject_key_id: Option<&'a [u8]>,
    /// basicConstraints cA is TRUE.
    pub(crate) is_ca: bool,
}

/// Reads an X.509 certificate (RFC 5280 §4.1).
pub(crate) fn parse_certificate(der: &[u8]) -> Result<Certificate<'_>, DerError> {
    let mut outer = Reader::new(der);
    let cert = outer.expect(TAG_SEQUENCE, "not a certificate")?;
    if !outer.is_empty() {
        return Err(DerError("trailing bytes after the certificate"));
    }
    let mut cert = Reader::new(cert.value);
    let tbs = cert.expect(TAG_SEQUENCE, "not a certificate")?;
    let mut tbs = Reader::new(tbs.value);
    tbs.optional(TAG_VERSION)?;
    tbs.expect(TAG_INTEGER, "serial number missing")?;
    tbs.expect(TAG_SEQUENCE, "signature algorithm missing")?;
    let issuer = parse_name(tbs.expect(TAG_SEQUENCE, "issuer missing")?)?;
    let validity = tbs.expect(TAG_SEQUENCE, "validity missing")?;
    let mut validity = Reader::new(validity.value);
    let not_before = parse_time(validity.read()?)?;
    let not_after = parse_time(validity.read()?)?;
    let subject = parse_name(tbs.expect(TAG_SEQUENCE, "subject missing")?)?;
    let spki = tbs.expect(TAG_SEQUENCE, "public key missing")?.raw;

    let mut subject_key_id = None;
    let mut is_ca = false;
    while !tbs.is_empty() {
        let field = tbs.read()?;
        if field.tag != TAG_EXTENSIONS {
            // issuerUniqueID / subjectUniqueID: not used by weerwal.
            continue;
        }
        let mut explicit = Reader::new(field.value);
        let list = explicit.expect(TAG_SEQUENCE, "malformed extensions")?;
        let mut list = Reader::new(list.value);
        while !list.is_empty() {
            let ext = list.expect(TAG_SEQUENCE, "malformed extension")?;
            let mut ext = Reader::new(ext.value);
            let oid = ext.expect(TAG_OID, "malformed extension")?.value;
            ext.optional(TAG_BOOLEAN)?;
            let value = ext.expect(TAG_OCTET_STRING, "malformed extension")?.value;
            if oid == OID_SUBJECT_KEY_ID {
                let id = Reader::new(value).expect(TAG_OCTET_STRING, "malformed key identifier")?;
                subject_key_id = Some(id.value);
            } else if oid == OID_BASIC_CONSTRAINTS {
                let constraints = Reader::new(value).expect(TAG_SEQUENCE, "malformed basicConstraints")?;
                let mut constraints = Reader::new(constraints.value);
                if let Some(flag) = constraints.optional(TAG_BOOLEAN)? {
                    is_ca = flag.value.first().is_some_and(|&b| b != 0);
                }
            }
        }
    }

    Ok(Certificate { issuer, subject, not_before, not_after, spki, subject_key_id, is_ca })
}

fn parse_name(name: Tlv<'_>) -> Result<Name<'_>, DerError> {
    let mut attributes = Vec::new();
    let mut multi_valued = false;
    let mut rdns = Reader::new(name.value);
    while !rdns.is_empty() {
        let rdn = rdns.expect(TAG_SET, "malformed name")?;
        let mut rdn = Reader::new(rdn.value);
        let mut count = 0;
        while !rdn.is_empty() {
            let attribute = rdn.expect(TAG_SEQUENCE, "malformed name")?;
            let mut attribute = Reader::new(attribute.value);
            let oid = attribute.expect(TAG_OID, "malformed name")?.value;
            let value = attribute.read()?;
            attributes.push(NameAttribute { oid, tag: value.tag, value: value.value });
            count += 1;
        }
        multi_valued |= count > 1;
    }
    Ok(Name { raw: name.raw, attributes, multi_valued })
}

/// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ`, the only
/// forms RFC 5280 §4.1.2.5 allows.
pub(crate) fn parse_time(tlv: Tlv<'_>) -> Result<SystemTime, DerError> {
    const BAD: DerError = DerError("malformed validity time");
    let text = tlv.value;
    let (year, rest) = match tlv.tag {
        TAG_UTC_TIME if text.len() == 13 => {
            let yy = i64::from(digits(&text[..2]).ok_or(BAD)?);
            // RFC 5280: YY >= 50 is 19YY, YY < 50 is 20YY.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        TAG_GENERALIZED_TIME if text.len() == 15 => (i64::from(digits(&text[..4]).ok_or(BAD)?), &text[4..]),
        _ => return Err(BAD),
    };
    if rest[10] != b'Z' {
        return Err(BAD);
    }
    let field = |at: usize| digits(&rest[at..at + 2]).map(i64::from).ok_or(BAD);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return Err(BAD);
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
    let since_epoch = Duration::from_secs(seconds.unsigned_abs());
    Ok(if seconds >= 0 { SystemTime::UNIX_EPOCH + since_epoch } else { SystemTime::UNIX_EPOCH - since_epoch })
}

fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0')))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`, chrono-compatible algorithms).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Decodes OID content octets into arcs, e.g. `55 04 03` -> `[2, 5, 4, 3]`.
pub(crate) fn oid_arcs(oid: &[u8]) -> Option<Vec<u64>> {
    let mut arcs = Vec::new();
    let mut current: u64 = 0;
    for (i, &byte) in oid.iter().enumerate() {
        if current > (u64::MAX >> 7) {
            return None;
        }
        current = (current << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 != 0 {
            if i + 1 == oid.len() {
                return None;
            }
            continue;
        }
        if arcs.is_empty() {
            let first = current.min(80) / 40;
            arcs.push(first);
            arcs.push(current - first * 40);
        } else {
            arcs.push(current);
        }
        current = 0;
    }
    (!arcs.is_empty()).then_some(arcs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(tag: u8, text: &str) -> Result<SystemTime, DerError> {
        let mut raw = vec![tag, text.len() as u8];
        raw.extend_from_slice(text.as_bytes());
        let tlv = Reader::new(&raw).read().unwrap();
        parse_time(tlv)
    }

    fn unix(t: SystemTime) -> i64 {
        match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    }

    #[test]
    fn utc_time_uses_the_rfc5280_century_window() {
        assert_eq!(unix(time(TAG_UTC_TIME, "700101000000Z").unwrap()), 0);
        assert_eq!(unix(time(TAG_UTC_TIME, "491231235959Z").unwrap()), 2_524_607_999);
        assert_eq!(unix(time(TAG_UTC_TIME, "500101000000Z").unwrap()), -631_152_000);
    }

    #[test]
    fn generalized_time_after_2050() {
        assert_eq!(unix(time(TAG_GENERALIZED_TIME, "20500101000000Z").unwrap()), 2_524_608_000);
        assert_eq!(unix(time(TAG_GENERALIZED_TIME, "20240229120000Z").unwrap()), 1_709_208_000);
    }

    #[test]
    fn malformed_times_are_errors() {
        for bad in ["7001010000Z", "700101000000+", "701301000000Z", "70010100000aZ", "700101240000Z"] {
            assert!(time(TAG_UTC_TIME, bad).is_err(), "{bad}");
        }
        assert!(time(TAG_INTEGER, "700101000000Z").is_err());
    }

    #[test]
    fn oid_arcs_decode_multi_byte_arcs() {
        assert_eq!(oid_arcs(&[0x55, 0x04, 0x03]), Some(vec![2, 5, 4, 3]));
        // 1.2.840.10045.2.1 (id-ecPublicKey)
        assert_eq!(oid_arcs(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]), Some(vec![1, 2, 840, 10045, 2, 1]));
        assert_eq!(oid_arcs(&[0x86]), None);
        assert_eq!(oid_arcs(&[]), None);
    }

    #[test]
    fn reader_rejects_lengths_past_the_end() {
        assert!(Reader::new(&[0x30, 0x05, 0x00]).read().is_err());
        assert!(Reader::new(&[0x30, 0x80, 0x00, 0x00]).read().is_err());
        assert!(Reader::new(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).read().is_err());
        assert!(Reader::new(&[0x30]).read().is_err());
    }
}
