//! Sign-up: a new user claims a free name of one of our domains with a
//! password of her choice (`POST /signup`, `p2psip users signup`). The
//! claim is a conditional store of her credentials under her key
//! (`ring/claim.rs`), so the key's holder decides first come, first served
//! for the whole ring. This module holds the rules that need no ring: the
//! configuration, what a name and a password may be, and the limit per
//! source; `core/accounts.rs` runs the claim.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Shortest and longest user part a sign-up may claim.
pub const NAME_LEN: (usize, usize) = (2, 32);
/// Shortest and longest password.
pub const PASSWORD_LEN: (usize, usize) = (8, 128);
/// Names nobody may claim: the node's own services and the usual role
/// accounts.
const RESERVED: [&str; 10] = [
    "voicemail",
    "admin",
    "administrator",
    "root",
    "postmaster",
    "hostmaster",
    "abuse",
    "operator",
    "system",
    "anonymous",
];
/// Sources tracked at most by one [`Window`]; beyond, the oldest window is
/// forgotten first (idle ones go at each purge).
const MAX_SOURCES: usize = 100_000;

/// The `[signup]` section as the core takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignupConfig {
    /// Sign-up served at all (off by default).
    pub enabled: bool,
    /// Sign-ups one source may attempt per `window`.
    pub per_source: u32,
    pub window: Duration,
    /// How long a claimed name lives in the ring.
    pub keep_for: Duration,
    /// Buddy-list reads and writes one source may make per `window`.
    pub buddy_requests: u32,
}

impl Default for SignupConfig {
    fn default() -> Self {
        SignupConfig {
            enabled: false,
            per_source: 5,
            window: Duration::from_secs(600),
            keep_for: Duration::from_secs(365 * 86_400),
            buddy_requests: 120,
        }
    }
}

/// Why a sign-up is refused before the ring is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Sign-up is off on this node.
    Off,
    /// The name, the domain or the password is not acceptable: why.
    Bad(String),
    /// Too many attempts from this source: try again after this long.
    Limited(Duration),
}

/// Whether `user` may be claimed: 2 to 32 characters of lower-case
/// letters, digits, `.`, `-` and `_`, starting with a letter, not a
/// reserved name.
pub fn check_name(user: &str) -> Result<(), String> {
    let (short, long) = NAME_LEN;
    if user.len() < short || user.len() > long {
        return Err(format!("a name has {short} to {long} characters"));
    }
    if !user.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("a name starts with a lower-case letter".into());
    }
    if !user
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
    {
        return Err("a name has only a-z, 0-9, '.', '-' and '_'".into());
    }
    if RESERVED.contains(&user) {
        return Err(format!("{user:?} is reserved"));
    }
    Ok(())
}

/// Whether `password` is acceptable: 8 to 128 characters, no control
/// characters.
pub fn check_password(password: &str) -> Result<(), String> {
    let (short, long) = PASSWORD_LEN;
    let n = password.chars().count();
    if n < short || n > long {
        return Err(format!("a password has {short} to {long} characters"));
    }
    if password.chars().any(char::is_control) {
        return Err("a password has no control characters".into());
    }
    Ok(())
}

/// A name the node picks: `user` and eight digits from `random`.
pub fn chosen_name(random: u64) -> String {
    format!("user{:08}", random % 100_000_000)
}

/// A fixed window per source IP: at most `limit` requests per `window`.
#[derive(Debug)]
pub struct Window {
    limit: u32,
    window: Duration,
    seen: HashMap<IpAddr, (Instant, u32)>,
}

impl Window {
    pub fn new(limit: u32, window: Duration) -> Window {
        Window {
            limit,
            window,
            seen: HashMap::new(),
        }
    }

    /// Counts one request from `ip`: `Err(wait)` when it is over the limit.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.seen.len() >= MAX_SOURCES && !self.seen.contains_key(&ip) {
            self.purge(now);
            if self.seen.len() >= MAX_SOURCES
                && let Some(oldest) = self
                    .seen
                    .iter()
                    .min_by_key(|(_, (t, _))| *t)
                    .map(|(k, _)| *k)
            {
                self.seen.remove(&oldest);
            }
        }
        let entry = self.seen.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit {
            let wait = self
                .window
                .saturating_sub(now.saturating_duration_since(entry.0));
            return Err(wait.max(Duration::from_secs(1)));
        }
        entry.1 += 1;
        Ok(())
    }

    /// Forgets the windows that are over.
    pub fn purge(&mut self, now: Instant) {
        let window = self.window;
        self.seen
            .retain(|_, (t, _)| now.saturating_duration_since(*t) < window);
    }
}

/// The sign-up rules of one node: on or off, and the limit per source.
#[derive(Debug)]
pub struct Signup {
    config: SignupConfig,
    window: Window,
}

impl Signup {
    pub fn new(config: SignupConfig) -> Signup {
        Signup {
            window: Window::new(config.per_source, config.window),
            config,
        }
    }

    pub fn config(&self) -> &SignupConfig {
        &self.config
    }

    /// Checks a sign-up of `user` (`None`: the node picks) from `ip` with
    /// `password` before the ring is asked. Counts the attempt.
    pub fn admit(
        &mut self,
        ip: IpAddr,
        user: Option<&str>,
        password: &str,
        now: Instant,
    ) -> Result<(), Refused> {
        if !self.config.enabled {
            return Err(Refused::Off);
        }
        self.window.admit(ip, now).map_err(Refused::Limited)?;
        if let Some(user) = user {
            check_name(user).map_err(Refused::Bad)?;
        }
        check_password(password).map_err(Refused::Bad)
    }

    pub fn purge(&mut self, now: Instant) {
        self.window.purge(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_plain_and_not_reserved() {
        for good in ["carol", "c3", "bob.smith", "a-b_c", &"x".repeat(32)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "c",
            &"x".repeat(33),
            "Carol",
            "3com",
            ".dot",
            "car ol",
            "carol@x",
            "caröl",
            "voicemail",
            "admin",
            "a;b",
            "",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(chosen_name(1_234_567_891), "user34567891");
        assert!(check_name(&chosen_name(u64::MAX)).is_ok());
    }

    #[test]
    fn passwords_have_a_length_and_no_control_characters() {
        assert!(check_password("correct horse").is_ok());
        assert!(check_password("short").is_err());
        assert!(check_password(&"p".repeat(129)).is_err());
        assert!(check_password("new\nline password").is_err());
    }

    #[test]
    fn a_source_gets_its_attempts_per_window_then_a_wait() {
        let now = Instant::now();
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let other: IpAddr = "192.0.2.8".parse().expect("ip");
        let mut signup = Signup::new(SignupConfig {
            enabled: true,
            per_source: 2,
            window: Duration::from_secs(60),
            ..SignupConfig::default()
        });
        assert!(signup.admit(ip, Some("carol"), "password1", now).is_ok());
        // A refused name still counts as an attempt.
        assert!(matches!(
            signup.admit(ip, Some("C"), "password1", now),
            Err(Refused::Bad(_))
        ));
        let later = now + Duration::from_secs(20);
        assert_eq!(
            signup.admit(ip, Some("dave"), "password1", later),
            Err(Refused::Limited(Duration::from_secs(40)))
        );
        assert!(
            signup
                .admit(other, Some("dave"), "password1", later)
                .is_ok()
        );
        let next = now + Duration::from_secs(60);
        assert!(signup.admit(ip, Some("dave"), "password1", next).is_ok());
        signup.purge(next + Duration::from_secs(61));
        assert!(signup.window.seen.is_empty());
    }

    #[test]
    fn off_means_off() {
        let mut signup = Signup::new(SignupConfig::default());
        assert_eq!(
            signup.admit(
                "127.0.0.1".parse().expect("ip"),
                Some("carol"),
                "password1",
                Instant::now()
            ),
            Err(Refused::Off)
        );
    }
}
