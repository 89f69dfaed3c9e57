//! The certificate chain (RFC 5280 profile, RFC 3161 §2.3) and the authority's files.

mod common;

use std::time::{Duration, SystemTime};

use anyhow::{Context, ensure};
use cairn_tsa::{Authority, CHAIN_FILE, Curve, KEY_FILE, TsaError};
use common::*;
use der::Encode;
use der::asn1::ObjectIdentifier;
use p256::ecdsa::signature::Verifier;
use x509_cert::Certificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};

const BASIC_CONSTRAINTS: &str = "2.5.29.19";
const KEY_USAGE: &str = "2.5.29.15";
const EXT_KEY_USAGE: &str = "2.5.29.37";
const SUBJECT_KEY_ID: &str = "2.5.29.14";
const AUTHORITY_KEY_ID: &str = "2.5.29.35";

fn extension<'a>(certificate: &'a Certificate, dotted: &str) -> anyhow::Result<&'a Extension> {
    let extensions = certificate
        .tbs_certificate
        .extensions
        .as_deref()
        .unwrap_or_default();
    let found: Vec<_> = extensions.iter().filter(|e| e.extn_id == oid(dotted)).collect();
    ensure!(found.len() == 1, "{} extensions {dotted}", found.len());
    Ok(found[0])
}

fn decode<T: for<'a> der::Decode<'a>>(extension: &Extension) -> anyhow::Result<T> {
    Ok(T::from_der(extension.extn_value.as_bytes())?)
}

#[test]
fn leaf_may_only_timestamp_and_chains_to_the_root() -> anyhow::Result<()> {
    for curve in [Curve::P256, Curve::P384] {
        let authority = Authority::generate_with_curve(curve, "Cairn test TSA", Duration::from_secs(3600))?;
        let [leaf, root] = authority.chain() else {
            anyhow::bail!("chain of {}", authority.chain().len())
        };

        // Leaf: CA:FALSE; keyUsage digitalSignature only, critical; EKU exactly timeStamping, critical.
        let bc = extension(leaf, BASIC_CONSTRAINTS)?;
        ensure!(!decode::<BasicConstraints>(bc)?.ca);
        let ku = extension(leaf, KEY_USAGE)?;
        ensure!(ku.critical && decode::<KeyUsage>(ku)?.0 == KeyUsages::DigitalSignature);
        let eku = extension(leaf, EXT_KEY_USAGE)?;
        ensure!(eku.critical, "the leaf's EKU is not critical");
        let purposes: Vec<ObjectIdentifier> = decode::<ExtendedKeyUsage>(eku)?.0;
        ensure!(purposes == vec![oid(TIME_STAMPING)], "EKU {purposes:?}");
        ensure!(
            leaf.tbs_certificate.extensions.as_ref().map(Vec::len) == Some(5),
            "unexpected extensions"
        );

        // Root: CA:TRUE critical, keyCertSign, self-issued.
        let bc = extension(root, BASIC_CONSTRAINTS)?;
        ensure!(bc.critical && decode::<BasicConstraints>(bc)?.ca);
        let ku = decode::<KeyUsage>(extension(root, KEY_USAGE)?)?;
        ensure!(ku.0.contains(KeyUsages::KeyCertSign));
        ensure!(root.tbs_certificate.subject == root.tbs_certificate.issuer);

        // The leaf names the root: issuer and key identifiers.
        ensure!(leaf.tbs_certificate.issuer == root.tbs_certificate.subject);
        let aki = decode::<AuthorityKeyIdentifier>(extension(leaf, AUTHORITY_KEY_ID)?)?;
        let ski = decode::<SubjectKeyIdentifier>(extension(root, SUBJECT_KEY_ID)?)?;
        ensure!(
            aki.key_identifier.as_ref() == Some(&ski.0),
            "AKI does not match the root's SKI"
        );
        extension(leaf, SUBJECT_KEY_ID)?;

        // The root's key signed the leaf (and itself).
        for (certificate, algorithm) in [
            (leaf, &leaf.signature_algorithm),
            (root, &root.signature_algorithm),
        ] {
            let tbs = certificate.tbs_certificate.to_der()?;
            let signature = certificate.signature.raw_bytes();
            let root_key = root
                .tbs_certificate
                .subject_public_key_info
                .subject_public_key
                .raw_bytes();
            match curve {
                Curve::P256 => {
                    ensure!(algorithm.oid == oid(ECDSA_WITH_SHA256) && algorithm.parameters.is_none());
                    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(root_key)?;
                    key.verify(&tbs, &p256::ecdsa::DerSignature::from_bytes(signature)?)?;
                }
                Curve::P384 => {
                    ensure!(algorithm.oid == oid(ECDSA_WITH_SHA384) && algorithm.parameters.is_none());
                    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(root_key)?;
                    key.verify(&tbs, &p384::ecdsa::DerSignature::from_bytes(signature)?)?;
                }
            }
        }
        let not_after = leaf.tbs_certificate.validity.not_after.to_system_time();
        ensure!(
            not_after > SystemTime::now() + Duration::from_secs(3000),
            "validity"
        );
    }
    Ok(())
}

#[test]
fn load_or_generate_keeps_the_authority() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tsa_dir = dir.path().join("tsa");
    let first = Authority::load_or_generate(&tsa_dir, "Cairn test TSA")?;
    let second = Authority::load_or_generate(&tsa_dir, "another name, ignored")?;
    ensure!(
        first.chain_pem() == second.chain_pem(),
        "a second start made a new chain"
    );
    ensure!(first.chain_der() == second.chain_der());
    ensure!(second.chain_pem().matches("BEGIN CERTIFICATE").count() == 2);
    let on_disk = std::fs::read_to_string(tsa_dir.join(CHAIN_FILE))?;
    ensure!(
        on_disk == first.chain_pem(),
        "the chain file is not leaf then root"
    );

    let key = std::fs::read_to_string(tsa_dir.join(KEY_FILE))?;
    ensure!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "not PKCS#8 PEM");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tsa_dir.join(KEY_FILE))?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "key file mode {mode:o}");
    }

    // The reloaded key signs what the first one's certificate names: openssl-free check via a round trip.
    let reply = second.timestamp(&Req::sha256([3; 32]).der(), SystemTime::now())?;
    let granted = parse_granted(leak(reply))?;
    let si = granted.signed_data.signer_infos.0.get(0).context("no signer")?;
    let leaf = Certificate::load_pem_chain(first.chain_pem().as_bytes())?.remove(0);
    let key = leaf
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key)?;
    let signed = si
        .signed_attrs
        .as_ref()
        .context("no signed attributes")?
        .to_der()?;
    key.verify(
        &signed,
        &p256::ecdsa::DerSignature::from_bytes(si.signature.as_bytes())?,
    )?;

    // Saving over an existing key is refused.
    match first.to_pem_files(&tsa_dir) {
        Err(TsaError::BadKeyMaterial { reason, .. }) => ensure!(reason.contains("refusing"), "{reason}"),
        other => anyhow::bail!("overwrote a key: {other:?}"),
    }
    Ok(())
}

#[test]
fn load_refuses_a_readable_key_and_a_foreign_chain() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    Authority::generate("A", Duration::from_secs(3600))?.to_pem_files(&a)?;
    Authority::generate_with_curve(Curve::P384, "B", Duration::from_secs(3600))?.to_pem_files(&b)?;
    ensure!(Authority::load(&b)?.curve() == Curve::P384);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(a.join(KEY_FILE), std::fs::Permissions::from_mode(0o644))?;
        match Authority::load(&a) {
            Err(TsaError::BadKeyMaterial { reason, .. }) => ensure!(reason.contains("chmod 600"), "{reason}"),
            other => anyhow::bail!("loaded a readable key: {other:?}"),
        }
        std::fs::set_permissions(a.join(KEY_FILE), std::fs::Permissions::from_mode(0o600))?;
    }

    // A's key with B's chain.
    std::fs::copy(b.join(CHAIN_FILE), a.join(CHAIN_FILE))?;
    match Authority::load(&a) {
        Err(TsaError::BadKeyMaterial { path, reason }) => {
            ensure!(
                path.ends_with(CHAIN_FILE) && reason.contains("not the signing key's"),
                "{reason}"
            )
        }
        other => anyhow::bail!("loaded a chain of another key: {other:?}"),
    }
    // No chain at all.
    std::fs::remove_file(a.join(CHAIN_FILE))?;
    ensure!(matches!(Authority::load(&a), Err(TsaError::Io { .. })));
    Ok(())
}
