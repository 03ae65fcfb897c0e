//! DER for ECDSA signatures: PKCS#11's `CKM_ECDSA` returns raw `r || s` (two big-endian
//! integers of the curve's size), while TLS and X.509 want `Ecdsa-Sig-Value ::= SEQUENCE {
//! r INTEGER, s INTEGER }` (RFC 3279). This is the whole encoder: no ASN.1 library is needed.

/// `raw` is not `r || s` of two equal, non-empty halves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("raw ECDSA signature of {0} bytes is not r || s")]
pub struct RawSignatureError(pub usize);

/// DER-encodes a raw `r || s` ECDSA signature as `SEQUENCE { INTEGER r, INTEGER s }`.
pub fn ecdsa_signature_to_der(raw: &[u8]) -> Result<Vec<u8>, RawSignatureError> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(RawSignatureError(raw.len()));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = Vec::with_capacity(raw.len() + 6);
    push_integer(&mut body, r);
    push_integer(&mut body, s);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(0x30);
    push_length(&mut out, body.len());
    out.extend_from_slice(&body);
    Ok(out)
}

/// An unsigned big-endian integer as a DER INTEGER: minimal (leading zero bytes dropped, one
/// zero byte kept for zero), with a `00` prefix when the top bit is set (DER integers are
/// signed).
fn push_integer(out: &mut Vec<u8>, be: &[u8]) {
    let start = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    let digits = &be[start..];
    out.push(0x02);
    match digits.first() {
        None => {
            push_length(out, 1);
            out.push(0);
        }
        Some(&first) if first & 0x80 != 0 => {
            push_length(out, digits.len() + 1);
            out.push(0);
            out.extend_from_slice(digits);
        }
        Some(_) => {
            push_length(out, digits.len());
            out.extend_from_slice(digits);
        }
    }
}

/// A DER length: short form below 128, long form (`0x80 | n`, then n bytes) above.
fn push_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len() - 1);
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(r: &[u8; 32], s: &[u8; 32]) -> Vec<u8> {
        [r.as_slice(), s.as_slice()].concat()
    }

    #[test]
    fn small_values_are_minimal() {
        let mut r = [0u8; 32];
        r[31] = 1;
        let mut s = [0u8; 32];
        s[31] = 0x7f;
        assert_eq!(
            ecdsa_signature_to_der(&raw(&r, &s)),
            Ok(vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x7f])
        );
    }

    #[test]
    fn high_bit_gets_a_zero_prefix() {
        let r = [0xffu8; 32];
        let mut s = [0u8; 32];
        s[31] = 0x80;
        let der = ecdsa_signature_to_der(&raw(&r, &s)).expect("even");
        let mut expected = vec![0x30, 0x27, 0x02, 0x21, 0x00];
        expected.extend_from_slice(&[0xff; 32]);
        expected.extend_from_slice(&[0x02, 0x02, 0x00, 0x80]);
        assert_eq!(der, expected);
    }

    #[test]
    fn leading_zeros_are_dropped_then_the_high_bit_rule_applies() {
        let mut r = [0u8; 32];
        r[2] = 0x90; // after two zero bytes, a byte with the top bit set
        r[31] = 0x01;
        let mut s = [0u8; 32];
        s[1] = 0x10;
        let der = ecdsa_signature_to_der(&raw(&r, &s)).expect("even");
        // r: 30 bytes from 0x90 on, plus a 00 prefix = 31; s: 31 bytes from 0x10 on.
        assert_eq!(&der[..5], &[0x30, 2 + 31 + 2 + 31, 0x02, 31, 0x00]);
        assert_eq!(der[5], 0x90);
        assert_eq!(&der[5 + 30..5 + 30 + 3], &[0x02, 31, 0x10]);
        assert_eq!(der.len(), 2 + 2 + 31 + 2 + 31);
    }

    #[test]
    fn zero_is_one_zero_byte() {
        let der = ecdsa_signature_to_der(&[0u8; 64]).expect("even");
        assert_eq!(der, vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]);
    }

    #[test]
    fn maximum_p256_length_is_72() {
        let der = ecdsa_signature_to_der(&[0x80u8; 64]).expect("even");
        assert_eq!(der.len(), 72);
        assert_eq!(&der[..2], &[0x30, 70]);
    }

    #[test]
    fn long_form_length_for_big_curves() {
        // P-521: 66-byte halves with the top bit set: two 67-byte INTEGERs, a 138-byte body.
        let der = ecdsa_signature_to_der(&[0xffu8; 132]).expect("even");
        assert_eq!(&der[..3], &[0x30, 0x81, 138]);
        assert_eq!(&der[3..6], &[0x02, 67, 0x00]);
        assert_eq!(der.len(), 3 + 138);
    }

    #[test]
    fn odd_or_empty_input_is_refused() {
        assert_eq!(ecdsa_signature_to_der(&[]), Err(RawSignatureError(0)));
        assert_eq!(ecdsa_signature_to_der(&[1; 63]), Err(RawSignatureError(63)));
    }

    #[test]
    fn length_encoding() {
        let mut out = Vec::new();
        push_length(&mut out, 0x7f);
        push_length(&mut out, 0x80);
        push_length(&mut out, 0x1234);
        assert_eq!(out, vec![0x7f, 0x81, 0x80, 0x82, 0x12, 0x34]);
    }

    #[test]
    fn ring_accepts_the_encoding_of_its_own_fixed_signatures() {
        use ring::rand::SystemRandom;
        use ring::signature::{self, EcdsaKeyPair, KeyPair};
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("keygen");
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .expect("pkcs8");
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_ASN1,
            pair.public_key().as_ref().to_vec(),
        );
        // Many signatures, so that leading zeros and high bits both occur.
        for i in 0..64u8 {
            let msg = [i; 7];
            let fixed = pair.sign(&rng, &msg).expect("sign");
            let der = ecdsa_signature_to_der(fixed.as_ref()).expect("64 bytes");
            assert!(public.verify(&msg, &der).is_ok(), "signature {i}");
        }
    }
}
