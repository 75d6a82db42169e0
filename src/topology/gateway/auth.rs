//! Who may call through a gateway: bearer JWTs verified by the
//! `jsonwebtoken` crate against keys loaded from a file or the
//! environment.
//!
//! Three kinds of key:
//! - **HS256**, a shared secret ([`Auth::hs256`]);
//! - **RS256** or **ES256** (P-256), a public key in PEM
//!   ([`Auth::from_pem`]): the gateway can check tokens but cannot mint
//!   them, so an identity provider keeps the private key;
//! - a **JWKS** document ([`Auth::from_jwks`]): several public keys, each
//!   picked by the token's `kid`, so an issuer can rotate keys by
//!   publishing the next one before it signs with it.
//!
//! [`KeySpec`] names where the key comes from (a file or an environment
//! variable) and [`Auth::load`] reads it; configuration files never carry
//! a key inline.
//!
//! # Guarantees
//! - The token's `alg` must be the algorithm of a configured key: `none`,
//!   and a token whose `alg` names another family than the key's (the
//!   classic RS256→HS256 confusion), are refused as [`AuthError::Algorithm`].
//! - `exp` is required and checked, `nbf` is checked when present, both
//!   with the configured leeway (30 s by default).
//! - Signatures are checked by `jsonwebtoken` (RustCrypto underneath);
//!   nothing here implements a cryptographic primitive.
//!
//! # Not guaranteed
//! Key files are read once, when the gateway starts: rotating a key means
//! restarting the gateway (a JWKS listing both keys avoids downtime).
//! Audience and issuer claims are not checked.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::{Deserialize, Serialize};

/// The claims the gateway reads from a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The subject (who the caller is).
    #[serde(default)]
    pub sub: String,
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Services this token may call (absent: any exposed service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a JWT: not three base64url parts, or a header or claims that do
    /// not parse.
    #[error("malformed token")]
    Malformed,
    /// The header's `alg` is not the algorithm of any configured key
    /// (`none` included).
    #[error("algorithm not accepted (the gateway accepts {0})")]
    Algorithm(String),
    /// The token names a key id (`kid`) the gateway does not have.
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    /// The signature does not match the configured key(s).
    #[error("bad signature")]
    Signature,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// The token does not allow this service.
    #[error("token does not allow service {0:?}")]
    NotAllowed(String),
}

/// The token algorithms a gateway can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, RSA public key.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

impl JwtAlgorithm {
    fn jwt(self) -> Algorithm {
        match self {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::RS256 => Algorithm::RS256,
            JwtAlgorithm::ES256 => Algorithm::ES256,
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::str::FromStr for JwtAlgorithm {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s.to_ascii_uppercase().as_str() {
            "HS256" => Ok(JwtAlgorithm::HS256),
            "RS256" => Ok(JwtAlgorithm::RS256),
            "ES256" => Ok(JwtAlgorithm::ES256),
            _ => Err(KeyError::Algorithm(s.to_string())),
        }
    }
}

/// Where a key's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A file (a mounted Kubernetes Secret, say). For HS256 the secret is
    /// the file's bytes with one trailing newline removed.
    File(PathBuf),
    /// An environment variable holding the key itself.
    Env(String),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "file {}", p.display()),
            KeySource::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

impl KeySource {
    fn read(&self) -> Result<Vec<u8>, KeyError> {
        let mut bytes = match self {
            KeySource::File(p) => std::fs::read(p).map_err(|e| KeyError::Read {
                from: self.to_string(),
                error: e.to_string(),
            })?,
            KeySource::Env(v) => std::env::var_os(v)
                .ok_or_else(|| KeyError::Read {
                    from: self.to_string(),
                    error: "not set".into(),
                })?
                .into_encoded_bytes(),
        };
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(KeyError::Empty(self.to_string()));
        }
        Ok(bytes)
    }
}

/// Which key a gateway verifies with and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// An HS256 shared secret.
    Hs256(KeySource),
    /// A public key in PEM (`-----BEGIN PUBLIC KEY-----`), RS256 or ES256.
    Pem(JwtAlgorithm, KeySource),
    /// A JWKS document (`{"keys":[…]}`) of RSA and P-256 public keys.
    Jwks(KeySource),
}

/// Why a key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The file or variable could not be read.
    #[error("cannot read the gateway key from {from}: {error}")]
    Read {
        /// Where it was looked for.
        from: String,
        /// What went wrong.
        error: String,
    },
    /// The file or variable is empty.
    #[error("the gateway key in {0} is empty")]
    Empty(String),
    /// Not a key of the stated kind.
    #[error("not a usable {kind} key: {error}")]
    Invalid {
        /// The kind of key expected.
        kind: String,
        /// What the parser said.
        error: String,
    },
    /// An algorithm name that is not HS256, RS256 or ES256, or a public
    /// key given for HS256.
    #[error("unsupported gateway key algorithm {0:?} (HS256, RS256 or ES256)")]
    Algorithm(String),
    /// A JWKS document without any RSA or P-256 signing key.
    #[error("the JWKS document has no RSA or P-256 signing key")]
    NoUsableKey,
}

/// One key the gateway verifies with.
#[derive(Clone)]
struct VerifyKey {
    kid: Option<String>,
    alg: JwtAlgorithm,
    key: Arc<DecodingKey>,
}

/// How callers are authenticated.
#[derive(Clone)]
pub enum Auth {
    /// No authentication (for trusted networks and demos).
    None,
    /// JWTs checked against these keys.
    Jwt {
        /// The keys, each with its algorithm and optional key id.
        keys: Arc<[VerifyKeyHandle]>,
        /// Clock skew tolerated on `exp`/`nbf`.
        leeway: Duration,
    },
}

/// A verification key inside [`Auth::Jwt`] (opaque: the key material is
/// never printed).
#[derive(Clone)]
pub struct VerifyKeyHandle(VerifyKey);

impl fmt::Debug for VerifyKeyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("alg", &self.0.alg)
            .field("kid", &self.0.kid)
            .finish_non_exhaustive()
    }
}

impl VerifyKeyHandle {
    /// The key's algorithm.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.0.alg
    }

    /// The key's id, if it has one (JWKS keys do).
    pub fn kid(&self) -> Option<&str> {
        self.0.kid.as_deref()
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("Auth::None"),
            Auth::Jwt { keys, leeway } => {
                let keys: Vec<String> = keys
                    .iter()
                    .map(|k| match k.kid() {
                        Some(kid) => format!("{}({kid})", k.algorithm()),
                        None => k.algorithm().to_string(),
                    })
                    .collect();
                write!(
                    f,
                    "Auth::Jwt {{ keys: {keys:?} (material redacted), leeway: {leeway:?} }}"
                )
            }
        }
    }
}

fn one(kid: Option<String>, alg: JwtAlgorithm, key: DecodingKey) -> Auth {
    Auth::Jwt {
        keys: Arc::from(vec![VerifyKeyHandle(VerifyKey {
            kid,
            alg,
            key: Arc::new(key),
        })]),
        leeway: Duration::from_secs(30),
    }
}

impl Auth {
    /// HS256 JWTs signed with `key`, 30 s leeway. Same as
    /// [`Auth::hs256`].
    pub fn jwt(key: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        Self::hs256(key)
    }

    /// HS256 JWTs signed with the shared secret `key`, 30 s leeway. An
    /// empty secret is refused ([`KeyError::Empty`]).
    pub fn hs256(key: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let key = key.as_ref();
        if key.is_empty() {
            return Err(KeyError::Empty("the HS256 secret".into()));
        }
        let key = DecodingKey::from_secret(key).map_err(|e| KeyError::Invalid {
            kind: "HS256".into(),
            error: e.to_string(),
        })?;
        Ok(one(None, JwtAlgorithm::HS256, key))
    }

    /// RS256 or ES256 JWTs checked against the public key `pem`, 30 s
    /// leeway.
    pub fn from_pem(alg: JwtAlgorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let invalid = |e: jsonwebtoken::errors::Error| KeyError::Invalid {
            kind: alg.to_string(),
            error: e.to_string(),
        };
        let key = match alg {
            JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(pem).map_err(invalid)?,
            JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(pem).map_err(invalid)?,
            JwtAlgorithm::HS256 => return Err(KeyError::Algorithm("HS256 with a PEM key".into())),
        };
        Ok(one(None, alg, key))
    }

    /// JWTs checked against the RSA (RS256) and P-256 (ES256) keys of a
    /// JWKS document; other keys in it (symmetric, other curves,
    /// encryption keys) are skipped. 30 s leeway.
    pub fn from_jwks(json: &[u8]) -> Result<Self, KeyError> {
        let set: JwkSet = serde_json::from_slice(json).map_err(|e| KeyError::Invalid {
            kind: "JWKS".into(),
            error: e.to_string(),
        })?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if jwk.common.public_key_use == Some(jsonwebtoken::jwk::PublicKeyUse::Encryption) {
                continue;
            }
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => JwtAlgorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    JwtAlgorithm::ES256
                }
                _ => continue,
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| KeyError::Invalid {
                kind: "JWKS".into(),
                error: e.to_string(),
            })?;
            keys.push(VerifyKeyHandle(VerifyKey {
                kid: jwk.common.key_id.clone(),
                alg,
                key: Arc::new(key),
            }));
        }
        if keys.is_empty() {
            return Err(KeyError::NoUsableKey);
        }
        Ok(Auth::Jwt {
            keys: Arc::from(keys),
            leeway: Duration::from_secs(30),
        })
    }

    /// Reads the key `spec` names and builds the check.
    pub fn load(spec: &KeySpec) -> Result<Self, KeyError> {
        match spec {
            KeySpec::Hs256(src) => Self::hs256(src.read()?),
            KeySpec::Pem(alg, src) => Self::from_pem(*alg, &src.read()?),
            KeySpec::Jwks(src) => Self::from_jwks(&src.read()?),
        }
    }

    /// Sets the clock skew tolerated on `exp` and `nbf`.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        if let Auth::Jwt { leeway: l, .. } = &mut self {
            *l = leeway;
        }
        self
    }

    /// Checks `token`; returns its claims (`None` for [`Auth::None`]).
    pub fn verify(&self, token: &str) -> Result<Option<Claims>, AuthError> {
        self.verify_as::<Claims>(token)
    }

    /// Checks `token` as [`verify`](Auth::verify) does (signature, `alg`,
    /// `exp` required, `nbf`) and reads its claims as `T`: the whole claim
    /// set (`serde_json::Map`) for a caller that checks claims of its own,
    /// such as the HTTP edge's per-route scopes. Claims that do not read
    /// as `T` are [`AuthError::Malformed`].
    pub fn verify_as<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
    ) -> Result<Option<T>, AuthError> {
        let Auth::Jwt { keys, leeway } = self else {
            return Ok(None);
        };
        let accepted = || {
            let mut names: Vec<String> = keys.iter().map(|k| k.0.alg.to_string()).collect();
            names.dedup();
            names.join(", ")
        };
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            // `alg: none` and other names jsonwebtoken does not know end
            // here: say "algorithm" when the header is otherwise JSON.
            Err(e) => {
                return Err(match e.kind() {
                    jsonwebtoken::errors::ErrorKind::Json(_) if names_an_alg(token) => {
                        AuthError::Algorithm(accepted())
                    }
                    _ => AuthError::Malformed,
                })
            }
        };
        let by_alg: Vec<&VerifyKey> = keys
            .iter()
            .map(|k| &k.0)
            .filter(|k| k.alg.jwt() == header.alg)
            .collect();
        if by_alg.is_empty() {
            return Err(AuthError::Algorithm(accepted()));
        }
        let candidates: Vec<&VerifyKey> = match &header.kid {
            Some(kid) if by_alg.iter().any(|k| k.kid.is_some()) => {
                let c: Vec<&VerifyKey> = by_alg
                    .into_iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if c.is_empty() {
                    return Err(AuthError::UnknownKey(kid.clone()));
                }
                c
            }
            _ => by_alg,
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = leeway.as_secs();
        validation.validate_nbf = true;
        validation.validate_aud = false;
        let mut last = AuthError::Signature;
        for k in candidates {
            match jsonwebtoken::decode::<T>(token, &k.key, &validation) {
                Ok(data) => return Ok(Some(data.claims)),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature => AuthError::Signature,
                        K::ExpiredSignature => return Err(AuthError::Expired),
                        K::ImmatureSignature => return Err(AuthError::NotYetValid),
                        K::InvalidAlgorithm => AuthError::Algorithm(accepted()),
                        _ => AuthError::Malformed,
                    };
                    if last == AuthError::Malformed {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}

/// Whether the token's header is JSON with an `alg` field (so a decode
/// failure means an algorithm jsonwebtoken does not know, `none` say).
fn names_an_alg(token: &str) -> bool {
    use base64::Engine;
    #[derive(Deserialize)]
    struct H {
        #[allow(dead_code)]
        alg: String,
    }
    let Some(h) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice::<H>(&b).ok())
        .is_some()
}

/// Signs `claims` as an HS256 JWT with `key` (for clients, tests and
/// demos; production tokens usually come from an identity provider).
/// An empty key signs nothing a gateway accepts: it gives an empty
/// string, which every gateway refuses as malformed.
pub fn sign_jwt(key: &[u8], claims: &Claims) -> String {
    EncodingKey::from_secret(key)
        .and_then(|k| {
            jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), claims, &k)
        })
        .unwrap_or_default()
}

/// Reads an HS256 secret the way [`KeySpec::Hs256`] does (for a client
/// that signs its own tokens with the gateway's shared key).
pub fn read_secret(source: &KeySource) -> Result<Vec<u8>, KeyError> {
    source.read()
}

/// Resolves a relative key file against `base` (the directory of the
/// configuration file that named it).
pub fn resolve_key_path(base: Option<&Path>, path: &Path) -> PathBuf {
    match base {
        Some(b) if path.is_relative() => b.join(path),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn b64() -> base64::engine::GeneralPurpose {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
    }

    fn claims(exp_in: i64) -> Claims {
        Claims {
            sub: "ada".into(),
            exp: (now_secs() as i64 + exp_in) as u64,
            nbf: None,
            services: None,
        }
    }

    const RSA_KEY: &str = include_str!("../../../tests/fixtures/jwt/rs256.key.pem");
    const RSA_PUB: &str = include_str!("../../../tests/fixtures/jwt/rs256.pub.pem");
    const EC_KEY: &str = include_str!("../../../tests/fixtures/jwt/es256.key.pem");
    const EC_PUB: &str = include_str!("../../../tests/fixtures/jwt/es256.pub.pem");
    const EC_OTHER_KEY: &str = include_str!("../../../tests/fixtures/jwt/es256-other.key.pem");

    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, c: &Claims) -> String {
        let mut h = jsonwebtoken::Header::new(alg);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, c, key).unwrap()
    }

    #[test]
    fn a_token_signed_with_the_key_is_accepted_and_tampering_is_refused() {
        let auth = Auth::jwt("secret").unwrap();
        let t = sign_jwt(b"secret", &claims(60));
        assert_eq!(auth.verify(&t).unwrap().unwrap().sub, "ada");
        assert_eq!(
            auth.verify(&sign_jwt(b"other", &claims(60))),
            Err(AuthError::Signature)
        );
        // Change the claims, keep the signature.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = b64().encode(br#"{"sub":"root","exp":99999999999}"#);
        parts[1] = &forged;
        assert_eq!(auth.verify(&parts.join(".")), Err(AuthError::Signature));
        assert_eq!(auth.verify("a.b"), Err(AuthError::Malformed));
        assert_eq!(auth.verify(""), Err(AuthError::Malformed));
    }

    #[test]
    fn expired_early_and_unsigned_tokens_are_refused() {
        let auth = Auth::jwt("secret").unwrap();
        assert_eq!(
            auth.verify(&sign_jwt(b"secret", &claims(-120))),
            Err(AuthError::Expired)
        );
        let mut early = claims(600);
        early.nbf = Some(now_secs() + 300);
        assert_eq!(
            auth.verify(&sign_jwt(b"secret", &early)),
            Err(AuthError::NotYetValid)
        );
        let none = format!(
            "{}.{}.",
            b64().encode(br#"{"alg":"none"}"#),
            b64().encode(serde_json::to_vec(&claims(60)).unwrap())
        );
        assert_eq!(
            auth.verify(&none),
            Err(AuthError::Algorithm("HS256".into()))
        );
        // A token without exp is refused.
        let no_exp = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "ada"}),
            &EncodingKey::from_secret(b"secret").unwrap(),
        )
        .unwrap();
        assert_eq!(auth.verify(&no_exp), Err(AuthError::Malformed));
    }

    #[test]
    fn rs256_and_es256_tokens_verify_against_their_public_keys() {
        let rsa = EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).unwrap();
        let ec = EncodingKey::from_ec_pem(EC_KEY.as_bytes()).unwrap();
        let rs = Auth::from_pem(JwtAlgorithm::RS256, RSA_PUB.as_bytes()).unwrap();
        let es = Auth::from_pem(JwtAlgorithm::ES256, EC_PUB.as_bytes()).unwrap();
        let t_rs = sign(Algorithm::RS256, None, &rsa, &claims(60));
        let t_es = sign(Algorithm::ES256, None, &ec, &claims(60));
        assert_eq!(rs.verify(&t_rs).unwrap().unwrap().sub, "ada");
        assert_eq!(es.verify(&t_es).unwrap().unwrap().sub, "ada");
        // Each refuses the other's tokens by algorithm.
        assert_eq!(rs.verify(&t_es), Err(AuthError::Algorithm("RS256".into())));
        assert_eq!(es.verify(&t_rs), Err(AuthError::Algorithm("ES256".into())));
        // The RS256 → HS256 confusion: an HS256 token "signed" with the
        // public key's PEM as the secret is refused by algorithm.
        let confused = sign_jwt(RSA_PUB.as_bytes(), &claims(60));
        assert_eq!(
            rs.verify(&confused),
            Err(AuthError::Algorithm("RS256".into()))
        );
        // Expiry holds for public keys too.
        assert_eq!(
            rs.verify(&sign(Algorithm::RS256, None, &rsa, &claims(-120))),
            Err(AuthError::Expired)
        );
        // A public key is not an HS256 key and vice versa.
        assert!(matches!(
            Auth::from_pem(JwtAlgorithm::ES256, RSA_PUB.as_bytes()),
            Err(KeyError::Invalid { .. })
        ));
        assert!(matches!(
            Auth::from_pem(JwtAlgorithm::HS256, RSA_PUB.as_bytes()),
            Err(KeyError::Algorithm(_))
        ));
    }

    fn jwks() -> Vec<u8> {
        let rsa = EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).unwrap();
        let ec = EncodingKey::from_ec_pem(EC_KEY.as_bytes()).unwrap();
        let mut a = jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap();
        a.common.key_id = Some("rsa-2026".into());
        let mut b = jsonwebtoken::jwk::Jwk::from_encoding_key(&ec, Algorithm::ES256).unwrap();
        b.common.key_id = Some("ec-2026".into());
        let oct = serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "kid": "sym"});
        let mut set = serde_json::json!({ "keys": [a, b] });
        set["keys"].as_array_mut().unwrap().push(oct);
        serde_json::to_vec(&set).unwrap()
    }

    #[test]
    fn a_jwks_picks_the_key_by_kid_and_skips_symmetric_keys() {
        let auth = Auth::from_jwks(&jwks()).unwrap();
        let Auth::Jwt { keys, .. } = &auth else {
            panic!("jwt auth expected")
        };
        assert_eq!(keys.len(), 2, "the oct key is skipped");
        let rsa = EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).unwrap();
        let ec = EncodingKey::from_ec_pem(EC_KEY.as_bytes()).unwrap();
        let ok = sign(Algorithm::RS256, Some("rsa-2026"), &rsa, &claims(60));
        assert!(auth.verify(&ok).unwrap().is_some());
        let ok = sign(Algorithm::ES256, Some("ec-2026"), &ec, &claims(60));
        assert!(auth.verify(&ok).unwrap().is_some());
        // No kid: every key of the algorithm is tried.
        let ok = sign(Algorithm::ES256, None, &ec, &claims(60));
        assert!(auth.verify(&ok).unwrap().is_some());
        let unknown = sign(Algorithm::RS256, Some("rsa-2025"), &rsa, &claims(60));
        assert_eq!(
            auth.verify(&unknown),
            Err(AuthError::UnknownKey("rsa-2025".into()))
        );
        // The right kid with another key's signature.
        let other = EncodingKey::from_ec_pem(EC_OTHER_KEY.as_bytes()).unwrap();
        let wrong = sign(Algorithm::ES256, Some("ec-2026"), &other, &claims(60));
        assert_eq!(auth.verify(&wrong), Err(AuthError::Signature));
        let hs = sign_jwt(b"secret", &claims(60));
        assert!(matches!(auth.verify(&hs), Err(AuthError::Algorithm(_))));
        assert_eq!(
            Auth::from_jwks(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).err(),
            Some(KeyError::NoUsableKey)
        );
        assert!(matches!(
            Auth::from_jwks(b"not json"),
            Err(KeyError::Invalid { .. })
        ));
    }

    #[test]
    fn keys_load_from_files_and_the_environment_never_inline() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("gw.key");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let auth = Auth::load(&KeySpec::Hs256(KeySource::File(secret.clone()))).unwrap();
        assert!(auth.verify(&sign_jwt(b"s3cret", &claims(60))).is_ok());
        let pem = dir.path().join("rs.pub");
        std::fs::write(&pem, RSA_PUB).unwrap();
        assert!(Auth::load(&KeySpec::Pem(JwtAlgorithm::RS256, KeySource::File(pem))).is_ok());
        let jwks_file = dir.path().join("keys.json");
        std::fs::write(&jwks_file, jwks()).unwrap();
        assert!(Auth::load(&KeySpec::Jwks(KeySource::File(jwks_file))).is_ok());
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(matches!(
            Auth::load(&KeySpec::Hs256(KeySource::File(empty))),
            Err(KeyError::Empty(_))
        ));
        assert!(matches!(
            Auth::load(&KeySpec::Hs256(KeySource::File(dir.path().join("absent")))),
            Err(KeyError::Read { .. })
        ));
        let var = "ZFABRIC_TEST_GATEWAY_KEY_UNSET_4f1c";
        assert!(matches!(
            Auth::load(&KeySpec::Hs256(KeySource::Env(var.into()))),
            Err(KeyError::Read { .. })
        ));
        assert_eq!(
            resolve_key_path(Some(Path::new("/etc/zf")), Path::new("gw.key")),
            PathBuf::from("/etc/zf/gw.key")
        );
        assert_eq!(
            resolve_key_path(Some(Path::new("/etc/zf")), Path::new("/k")),
            PathBuf::from("/k")
        );
        // Debug never prints key material.
        let shown = format!("{auth:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
