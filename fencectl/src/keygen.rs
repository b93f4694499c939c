//! `fencectl keygen`: a new sequencer signing key pair.
//!
//! The private key (Ed25519, PKCS#8 DER) goes to a new file with mode 0600, for
//! `fenced --signing-key FILE --signing-key-id ID`; the public key's line
//! (`KEY_ID BASE64URL_PUBLIC_KEY`) is returned for the verifiers' public-keys file
//! (`fenced-kv --verify-keys FILE`), and appended to that file when one is named.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use fenced_types::sequencer::generate_key;
use fenced_types::KeyId;

use crate::error::Error;

/// Makes a key pair for `key_id`: writes the private key to `private_key` (a new file,
/// mode 0600: an existing file is never overwritten), appends the public line to
/// `public_keys` if given (created with mode 0644 if missing), and returns the line.
pub fn keygen(
    key_id: &KeyId,
    private_key: &Path,
    public_keys: Option<&Path>,
) -> Result<String, Error> {
    let generated = generate_key(key_id).map_err(|e| Error::Settings(e.to_string()))?;
    let file_error = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::KeyFile { what, path, source }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(private_key)
        .map_err(file_error("create the private key", private_key))?;
    file.write_all(&generated.pkcs8)
        .and_then(|()| file.sync_all())
        .map_err(file_error("write the private key", private_key))?;
    if let Some(path) = public_keys {
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(path)
            .map_err(file_error("open the public-keys file", path))?;
        writeln!(file, "{}", generated.public_line)
            .and_then(|()| file.sync_all())
            .map_err(file_error("append to the public-keys file", path))?;
    }
    Ok(generated.public_line)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use fenced_types::sequencer::{PublicKeys, SigningKey};
    use fenced_types::{FencingToken, LockName};

    use super::*;

    // checks: S8
    #[test]
    fn the_pair_signs_and_verifies_the_private_key_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("k1.pk8"), dir.path().join("fenced.pub"));
        let k1 = KeyId::new("k1").unwrap();
        let line = keygen(&k1, &private, Some(&public)).unwrap();
        assert!(line.starts_with("k1 "));
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second key is appended: the file lists both (rotation).
        let k2 = KeyId::new("k2").unwrap();
        keygen(&k2, &dir.path().join("k2.pk8"), Some(&public)).unwrap();
        let keys = PublicKeys::parse(&std::fs::read_to_string(&public).unwrap()).unwrap();
        assert_eq!(keys.key_ids(), vec![&k1, &k2]);
        let signer = SigningKey::from_pkcs8(k1.clone(), &std::fs::read(&private).unwrap()).unwrap();
        let lock = LockName::new("orders").unwrap();
        keys.verify(&signer.sign(&lock, FencingToken::new(3).unwrap()))
            .unwrap();
        // The private key is never overwritten.
        let before = std::fs::read(&private).unwrap();
        let refused = keygen(&k1, &private, None).unwrap_err();
        assert!(refused.to_string().contains("k1.pk8"), "{refused}");
        assert_eq!(std::fs::read(&private).unwrap(), before);
    }
}
