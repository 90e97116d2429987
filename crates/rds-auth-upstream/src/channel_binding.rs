//! `tls-server-end-point` channel binding (RFC 5929 §4.1): the hash of the server's
//! certificate, with the hash of its signature algorithm, or SHA-256 for MD5 and SHA-1.

use aws_lc_rs::digest;

const SHA384_OIDS: [&str; 2] = ["1.2.840.113549.1.1.12", "1.2.840.10045.4.3.3"];
const SHA512_OIDS: [&str; 2] = ["1.2.840.113549.1.1.13", "1.2.840.10045.4.3.4"];

pub(crate) fn tls_server_end_point(cert_der: &[u8]) -> Vec<u8> {
    let oid = x509_parser::parse_x509_certificate(cert_der)
        .ok()
        .map(|(_, cert)| cert.signature_algorithm.algorithm.to_id_string());
    let algorithm = match oid.as_deref() {
        Some(oid) if SHA384_OIDS.contains(&oid) => &digest::SHA384,
        Some(oid) if SHA512_OIDS.contains(&oid) => &digest::SHA512,
        _ => &digest::SHA256,
    };
    digest::digest(algorithm, cert_der).as_ref().to_vec()
}
