//! Standard Webhooks secrets and signatures.
//!
//! A secret is `whsec_` + base64 of 32 random bytes; the HMAC key is the
//! decoded bytes. A signature is `v1,` + base64 of HMAC-SHA256 over
//! `<webhook-id>.<webhook-timestamp>.<body>`. At rest a secret is sealed
//! with AES-256-GCM ([`SecretBox`]) so the delivery worker can sign while a
//! copy of the table cannot.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The prefix of every secret.
pub const PREFIX: &str = "whsec_";

/// 32 random bytes from the operating system.
pub fn new_secret() -> Result<[u8; 32], getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(bytes)
}

/// The secret as shown to the admin once: `whsec_<base64>`.
pub fn encode_secret(bytes: &[u8]) -> String {
    format!("{PREFIX}{}", STANDARD.encode(bytes))
}

/// `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` keyed by `key`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length: new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per key, space-separated.
pub fn signature_header(keys: &[&[u8]], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| sign(key, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Seals endpoint secrets at rest: AES-256-GCM under a key derived from the
/// deployment's secret, a random nonce per seal, the endpoint's id as
/// associated data (a sealed secret moved to another row does not open).
#[derive(Clone)]
pub struct SecretBox {
    key: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
#[error("an endpoint secret cannot be opened: sealed under another key, or damaged")]
pub struct Unsealable;

impl SecretBox {
    /// From the deployment's secret (AGORA_JWT_SECRET); with none (auth
    /// off, development only) a fixed key: nothing is protected then anyway.
    pub fn new(master: Option<&[u8]>) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"agora webhook endpoint secrets v1\0");
        hash.update(master.unwrap_or(b"agora development webhook key"));
        Self {
            key: hash.finalize().into(),
        }
    }

    fn aead(&self) -> LessSafeKey {
        // 32 bytes is AES-256's key length: this cannot fail.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.key).expect("a 32-byte key"))
    }

    /// `nonce || ciphertext || tag`.
    pub fn seal(&self, endpoint: Uuid, secret: &[u8]) -> Result<Vec<u8>, getrandom::Error> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce)?;
        let mut sealed = secret.to_vec();
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(endpoint.as_bytes()),
                &mut sealed,
            )
            .expect("sealing a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, endpoint: Uuid, sealed: &[u8]) -> Result<Vec<u8>, Unsealable> {
        if sealed.len() < NONCE_LEN {
            return Err(Unsealable);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unsealable)?;
        let mut buffer = rest.to_vec();
        let plain = self
            .aead()
            .open_in_place(nonce, Aad::from(endpoint.as_bytes()), &mut buffer)
            .map_err(|_| Unsealable)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's test vectors.
    #[test]
    fn signs_as_the_specification_does() {
        let key = STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("base64");
        let signature = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn sealed_secrets_open_only_for_their_endpoint() {
        let secrets = SecretBox::new(Some(b"a deployment secret"));
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let sealed = secrets
            .seal(a, b"0123456789abcdef0123456789abcdef")
            .expect("seal");
        assert_eq!(
            secrets.open(a, &sealed).expect("open"),
            b"0123456789abcdef0123456789abcdef"
        );
        assert!(secrets.open(b, &sealed).is_err());
        assert!(SecretBox::new(Some(b"another")).open(a, &sealed).is_err());
    }
}
