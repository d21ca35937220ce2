//! Password hashes: Argon2id (default parameters, about 19 MiB and tens of milliseconds of a
//! core each), stored as PHC strings.
//!
//! Anyone can make event-api hash (`POST /auth/login`), so hashing is bounded: it runs on a few
//! threads of its own (one per core; further requests wait in a queue), and each thread keeps
//! one Argon2 working memory that every hash on it reuses. Allocating it per hash, as
//! `PasswordHasher` does, left a freed hash's memory resident in the allocator: 300 wrong
//! logins grew the process by hundreds of MiB.

use argon2::password_hash::{Output, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use std::cell::RefCell;
use std::sync::{mpsc, Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    /// The working memory of the hashes on this thread, grown to the largest one seen.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs `job` on one of the hashing threads, started at first use; `None` if the thread died
/// (a panic inside the job).
async fn on_hash_thread<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    static QUEUE: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || loop {
                    let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match next {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Mutex::new(tx)
    });
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = done.send(job());
    });
    queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .ok()?;
    result.await.ok()
}

/// Argon2 of `password` with `salt` into `out`, in this thread's working memory.
fn compute(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        let blocks = params.block_count();
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        Argon2::new(algorithm, version, params).hash_password_into_with_memory(
            password,
            salt,
            out,
            &mut memory[..blocks],
        )
    })
}

fn hash_now(password: &str, salt: [u8; 16]) -> Result<String, argon2::password_hash::Error> {
    let params = Params::default();
    let salt = SaltString::encode_b64(&salt)?;
    let mut salt_bytes = [0u8; 16];
    let raw_salt = salt.decode_b64(&mut salt_bytes)?;
    let mut out = [0u8; 32];
    compute(
        Algorithm::Argon2id,
        Version::V0x13,
        params.clone(),
        password.as_bytes(),
        raw_salt,
        &mut out,
    )?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: (&params).try_into()?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out)?),
    };
    Ok(phc.to_string())
}

fn verify_now(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let algorithm = Algorithm::try_from(parsed.algorithm);
    let version = parsed.version.map_or(Ok(Version::V0x13), Version::try_from);
    let params = Params::try_from(&parsed);
    let (Ok(algorithm), Ok(version), Ok(params)) = (algorithm, version, params) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    compute(algorithm, version, params, password.as_bytes(), salt, &mut out).is_ok()
        // `Output`'s equality is constant-time.
        && Output::new(&out).is_ok_and(|got| got == expected)
}

/// The PHC string of `password` with a fresh random salt; `None` if the hashing thread failed.
pub async fn hash(password: String) -> Option<Result<String, argon2::password_hash::Error>> {
    use rand::RngCore;
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    on_hash_thread(move || hash_now(&password, salt)).await
}

/// Whether `password` matches the PHC string `phc` (false for a malformed one).
pub async fn verify(password: String, phc: String) -> bool {
    on_hash_thread(move || verify_now(&password, &phc))
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordVerifier;

    #[test]
    fn hashes_are_standard_phc_strings_that_verify() {
        let phc = hash_now("correct horse", [7; 16]).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_now("correct horse", &phc));
        assert!(!verify_now("wrong horse", &phc));
        assert!(!verify_now("correct horse", "not a hash"));
        // The argon2 crate reads it the same way (a hash made before this module verifies too).
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
    }

    #[test]
    fn a_hash_made_by_the_argon2_crate_verifies() {
        use argon2::PasswordHasher;
        let salt = SaltString::encode_b64(&[3; 16]).unwrap();
        let phc = Argon2::default()
            .hash_password(b"s3cret-pass", &salt)
            .unwrap()
            .to_string();
        assert!(verify_now("s3cret-pass", &phc));
        assert!(!verify_now("s3cret-pasS", &phc));
    }
}
