//! A request built with `x509-tsp`, answered, and the reply taken apart with `x509-tsp` and `cms`: every field
//! RFC 3161 and the Sigstore clients look at, and the signature checked with the leaf's public key.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use cairn_tsa::{Authority, Curve};
use cms::content_info::CmsVersion;
use cms::signed_data::SignerIdentifier;
use common::*;
use der::asn1::SetOfVec;
use der::{Decode, Encode};
use p256::ecdsa::signature::Verifier;
use sha2::Digest;
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::name::GeneralName;

/// A time inside the certificates' validity, half a second past a whole second (genTime must drop it), and
/// that second formatted by `date` as GeneralizedTime and as UTCTime (the independent expected values).
struct Clock {
    now: SystemTime,
    generalized: String,
    utc: String,
}

fn clock() -> anyhow::Result<Clock> {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 60;
    let generalized = date(seconds, "+%Y%m%d%H%M%SZ")?;
    let utc = date(seconds, "+%y%m%d%H%M%SZ")?;
    Ok(Clock {
        now: UNIX_EPOCH + Duration::from_millis(seconds * 1000 + 500),
        generalized,
        utc,
    })
}

fn date(seconds: u64, format: &str) -> anyhow::Result<String> {
    let output = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{seconds}"), format])
        .output()?;
    ensure!(output.status.success(), "date failed");
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

fn attribute<'a>(attributes: &'a SetOfVec<Attribute>, dotted: &str) -> anyhow::Result<&'a [u8]> {
    let found: Vec<_> = attributes.iter().filter(|a| a.oid == oid(dotted)).collect();
    ensure!(found.len() == 1, "{} attributes {dotted}", found.len());
    ensure!(
        found[0].values.len() == 1,
        "attribute {dotted} has {} values",
        found[0].values.len()
    );
    Ok(found[0].values.get(0).map(|v| v.value()).unwrap_or_default())
}

/// Checks everything about one granted reply to `request`.
fn check_reply(
    authority: &Authority,
    clock: &Clock,
    request: &Req,
    reply: Vec<u8>,
) -> anyhow::Result<Vec<u8>> {
    let reply = leak(reply);
    let granted = parse_granted(reply)?;
    let leaf_der = &authority.chain_der()[0];
    let leaf = Certificate::from_der(leaf_der)?;
    let p384 = authority.curve() == Curve::P384;
    let (digest_oid, signature_oid) = if p384 {
        (SHA384, ECDSA_WITH_SHA384)
    } else {
        (SHA256, ECDSA_WITH_SHA256)
    };

    // ContentInfo(SignedData), version 3, one digest algorithm, eContent a TSTInfo.
    ensure!(granted.token.content_type == oid(ID_SIGNED_DATA));
    let sd = &granted.signed_data;
    ensure!(
        sd.version == CmsVersion::V3,
        "SignedData version {:?}",
        sd.version
    );
    let digests: Vec<_> = sd.digest_algorithms.iter().collect();
    ensure!(digests.len() == 1 && digests[0].oid == oid(digest_oid) && digests[0].parameters.is_none());
    ensure!(sd.encap_content_info.econtent_type == oid(ID_CT_TST_INFO));
    ensure!(sd.crls.is_none());

    // Certificates: the leaf with certReq, none without.
    match &sd.certificates {
        Some(set) => {
            ensure!(request.cert_req, "certificates without certReq");
            let certs: Vec<_> = set.0.iter().collect();
            ensure!(certs.len() == 1, "{} certificates", certs.len());
            ensure!(certs[0].to_der()? == *leaf_der, "the certificate is not the leaf");
        }
        None => ensure!(!request.cert_req, "certReq but no certificates"),
    }

    // TSTInfo: version 1, our policy, the imprint and nonce copied, genTime in whole seconds, accuracy 1 s.
    let tst = &granted.tst;
    ensure!(tst.version == x509_tsp::TspVersion::V1);
    ensure!(
        tst.policy == oid("1.3.6.1.4.1.32473.3161.1"),
        "policy {}",
        tst.policy
    );
    ensure!(tst.message_imprint.hash_algorithm.oid == oid(request.hash));
    ensure!(tst.message_imprint.hashed_message.as_bytes() == request.digest.as_slice());
    ensure!(
        tst.nonce.as_ref().map(|n| n.as_bytes().to_vec()) == request.nonce,
        "nonce {:?}",
        tst.nonce
    );
    let gen_time = [&[0x18, 15][..], clock.generalized.as_bytes()].concat();
    ensure!(
        tst.gen_time.to_der()? == gen_time,
        "genTime {:?}, want {}",
        tst.gen_time,
        clock.generalized
    );
    let accuracy = tst.accuracy.as_ref().context("no accuracy")?;
    ensure!(accuracy.seconds == Some(1) && accuracy.millis.is_none() && accuracy.micros.is_none());
    ensure!(!tst.ordering && tst.tsa.is_none() && tst.extensions.is_none());
    let serial = tst.serial_number.as_bytes();
    ensure!(
        !serial.is_empty() && serial[0] & 0x80 == 0 && serial.len() <= 20,
        "serial {serial:02x?}"
    );

    // Exactly one SignerInfo, naming the leaf by issuer and serial number.
    let signers: Vec<_> = sd.signer_infos.0.iter().collect();
    ensure!(signers.len() == 1, "{} SignerInfos", signers.len());
    let si = signers[0];
    ensure!(si.version == CmsVersion::V1);
    match &si.sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => {
            ensure!(ias.issuer == leaf.tbs_certificate.issuer);
            ensure!(ias.serial_number == leaf.tbs_certificate.serial_number);
        }
        other => anyhow::bail!("sid {other:?}"),
    }
    ensure!(si.digest_alg.oid == oid(digest_oid) && si.digest_alg.parameters.is_none());
    ensure!(
        si.signature_algorithm.oid == oid(signature_oid),
        "{}",
        si.signature_algorithm.oid
    );
    ensure!(si.signature_algorithm.parameters.is_none());
    ensure!(si.unsigned_attrs.is_none());

    // Signed attributes: these four, in DER order, exactly as emitted.
    let attrs = si.signed_attrs.as_ref().context("no signed attributes")?;
    ensure!(attrs.len() == 4, "{} signed attributes", attrs.len());
    let encodings: Vec<Vec<u8>> = attrs.iter().map(|a| a.to_der()).collect::<Result<_, _>>()?;
    ensure!(
        encodings.windows(2).all(|w| w[0] < w[1]),
        "signed attributes are not in DER order"
    );
    let set_der = attrs.to_der()?;
    let mut implicit = set_der.clone();
    implicit[0] = 0xa0;
    ensure!(
        reply.windows(implicit.len()).any(|w| w == implicit.as_slice()),
        "the reply's signed attributes are not the DER-sorted SET"
    );

    ensure!(attribute(attrs, CONTENT_TYPE)? == oid(ID_CT_TST_INFO).as_bytes());
    ensure!(
        attribute(attrs, SIGNING_TIME)? == clock.utc.as_bytes(),
        "signingTime, want {}",
        clock.utc
    );
    let tst_digest = if p384 {
        sha2::Sha384::digest(&granted.tst_der).to_vec()
    } else {
        sha2::Sha256::digest(&granted.tst_der).to_vec()
    };
    ensure!(
        attribute(attrs, MESSAGE_DIGEST)? == tst_digest.as_slice(),
        "messageDigest"
    );

    // signingCertificateV2: the SHA-256 of the leaf (hashAlgorithm left to its default) and issuerSerial.
    let ess = attrs
        .iter()
        .find(|a| a.oid == oid(SIGNING_CERTIFICATE_V2))
        .context("no ESS attribute")?;
    let ess: SigningCertificateV2 = ess.values.get(0).context("no ESS value")?.decode_as()?;
    ensure!(ess.certs.len() == 1 && ess.policies.is_none());
    let id = &ess.certs[0];
    ensure!(
        id.hash_algorithm.is_none(),
        "hashAlgorithm must be left to DEFAULT sha256"
    );
    ensure!(
        id.cert_hash.as_bytes() == sha2::Sha256::digest(leaf_der).as_slice(),
        "ESS certHash"
    );
    let issuer_serial = id.issuer_serial.as_ref().context("no issuerSerial")?;
    ensure!(issuer_serial.issuer == vec![GeneralName::DirectoryName(leaf.tbs_certificate.issuer.clone())]);
    ensure!(issuer_serial.serial_number == leaf.tbs_certificate.serial_number);

    // The signature over the DER of the SET, with the leaf's key.
    let spki = leaf
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let signature = si.signature.as_bytes();
    if p384 {
        let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(spki)?;
        key.verify(&set_der, &p384::ecdsa::DerSignature::from_bytes(signature)?)?;
    } else {
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(spki)?;
        key.verify(&set_der, &p256::ecdsa::DerSignature::from_bytes(signature)?)?;
        let mut tampered = set_der.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        ensure!(
            key.verify(&tampered, &p256::ecdsa::DerSignature::from_bytes(signature)?)
                .is_err()
        );
    }
    Ok(serial.to_vec())
}

#[test]
fn granted_reply_with_and_without_certificates() -> anyhow::Result<()> {
    let authority = Authority::generate("Cairn test TSA", Duration::from_secs(3600))?;
    let clock = clock()?;
    let digest: [u8; 32] = sha2::Sha256::digest(b"an artifact").into();
    let mut serials = Vec::new();
    for cert_req in [true, false] {
        let request = Req {
            cert_req,
            ..Req::sha256(digest)
        };
        let reply = authority.timestamp(&request.der(), clock.now)?;
        serials.push(
            check_reply(&authority, &clock, &request, reply)
                .with_context(|| format!("certReq {cert_req}"))?,
        );
    }
    ensure!(serials[0] != serials[1], "serial numbers repeat");
    Ok(())
}

#[test]
fn every_accepted_hash_without_nonce_or_null_parameters() -> anyhow::Result<()> {
    let authority = Authority::generate("Cairn test TSA", Duration::from_secs(3600))?;
    let clock = clock()?;
    for (hash, digest) in [
        (SHA256, sha2::Sha256::digest(b"x").to_vec()),
        (SHA384, sha2::Sha384::digest(b"x").to_vec()),
        (SHA512, sha2::Sha512::digest(b"x").to_vec()),
    ] {
        for null_params in [true, false] {
            let request = Req {
                hash,
                digest: digest.clone(),
                null_params,
                nonce: None,
                ..Req::sha256([0; 32])
            };
            let reply = authority.timestamp(&request.der(), clock.now)?;
            check_reply(&authority, &clock, &request, reply)
                .with_context(|| format!("{hash} NULL {null_params}"))?;
        }
    }
    Ok(())
}

#[test]
fn p384_authority_signs_with_sha384() -> anyhow::Result<()> {
    let authority = Authority::generate_with_curve(Curve::P384, "Cairn test TSA", Duration::from_secs(3600))?;
    let clock = clock()?;
    let request = Req::sha256(sha2::Sha256::digest(b"an artifact").into());
    let reply = authority.timestamp(&request.der(), clock.now)?;
    check_reply(&authority, &clock, &request, reply)?;
    Ok(())
}

#[test]
fn our_policy_may_be_requested_and_can_be_changed() -> anyhow::Result<()> {
    let authority = Authority::generate("Cairn test TSA", Duration::from_secs(3600))?;
    let clock = clock()?;
    let request = Req {
        policy: Some(cairn_tsa::DEFAULT_POLICY),
        ..Req::sha256([7; 32])
    };
    let reply = leak(authority.timestamp(&request.der(), clock.now)?);
    ensure!(parse_granted(reply)?.tst.policy == cairn_tsa::DEFAULT_POLICY);

    let other = oid("1.3.6.1.4.1.32473.7");
    let authority = authority.with_policy(other);
    let reply = leak(authority.timestamp(&Req::sha256([7; 32]).der(), clock.now)?);
    ensure!(parse_granted(reply)?.tst.policy == other);
    let asks_default = Req {
        policy: Some(cairn_tsa::DEFAULT_POLICY),
        ..Req::sha256([7; 32])
    };
    match authority.timestamp(&asks_default.der(), clock.now) {
        Err(cairn_tsa::TsaError::Rejected(r)) => {
            ensure!(r.failure() == cairn_tsa::FailureInfo::UnacceptedPolicy, "{r}")
        }
        other => anyhow::bail!("expected a rejection, got {other:?}"),
    }
    Ok(())
}

#[test]
fn no_timestamps_outside_the_certificate_validity() -> anyhow::Result<()> {
    let authority = Authority::generate("Cairn test TSA", Duration::from_secs(3600))?;
    let request = Req::sha256([5; 32]).der();
    let now = SystemTime::now();
    for at in [now + Duration::from_secs(7200), now - Duration::from_secs(7200)] {
        match authority.timestamp(&request, at) {
            Err(cairn_tsa::TsaError::CertificateNotValid { .. }) => {}
            other => anyhow::bail!("signed outside the validity: {other:?}"),
        }
    }
    // A bad request is still the caller's fault.
    ensure!(matches!(
        authority.timestamp(b"junk", now + Duration::from_secs(7200)),
        Err(cairn_tsa::TsaError::Rejected(_))
    ));
    Ok(())
}
