//! Certificates made at run time for the TLS tests: a CA and leaf
//! certificates for 127.0.0.1, written as PEM files. Each file is padded to
//! a fixed size, so a test can swap a certificate without changing the
//! file's length (and, by restoring its mtime, without the change showing).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// Every PEM file this writes is exactly this long.
pub const PEM_FILE_BYTES: usize = 4096;

pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub pem: String,
}

/// A leaf's files.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn write_padded(path: &Path, text: &str) {
    let mut bytes = text.as_bytes().to_vec();
    assert!(bytes.len() <= PEM_FILE_BYTES, "PEM longer than the padding");
    bytes.resize(PEM_FILE_BYTES, b'\n');
    std::fs::write(path, bytes).unwrap();
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = issuer.pem();
        Ca { issuer, pem }
    }

    /// Writes the CA certificate to `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        write_padded(path, &self.pem);
        path.to_path_buf()
    }

    /// A certificate for 127.0.0.1 and localhost named `name`, as PEM
    /// (certificate, key).
    pub fn leaf_pem(&self, name: &str) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a leaf to `<dir>/<name>.crt` and `<dir>/<name>.key`.
    pub fn leaf(&self, dir: &Path, name: &str) -> Leaf {
        let (cert, key) = self.leaf_pem(name);
        let leaf = Leaf {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        write_padded(&leaf.cert, &cert);
        write_padded(&leaf.key, &key);
        leaf
    }
}
