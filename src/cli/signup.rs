//! `p2psip users signup USER@DOMAIN (--data DIR | --http ADDR)`: claims a
//! name at a running node that allows sign-up (`POST /signup`), with the
//! password read on standard input; `@DOMAIN` lets the node pick the name.
//! The CLI speaks plain HTTP, so it reaches a node's loopback listener
//! (on the node's own machine): the only plain listener that takes
//! passwords (`docs/security.md`, "Sign-up").

use std::process::ExitCode;

use super::control::{self, NodeAt};

/// Claims `aor` at the node `at` names; prints the address claimed.
pub fn signup(at: &NodeAt, aor: &str) -> ExitCode {
    let Some((user, domain)) = aor.split_once('@').filter(|(_, d)| !d.is_empty()) else {
        eprintln!("p2psip: {aor:?} is not USER@DOMAIN (or @DOMAIN for a name the node picks)");
        return ExitCode::from(2);
    };
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut password) {
        eprintln!("p2psip: cannot read the password on standard input: {e}");
        return ExitCode::from(2);
    }
    let password = password.trim_end_matches(['\r', '\n']);
    let body = if user.is_empty() {
        serde_json::json!({ "domain": domain, "password": password })
    } else {
        serde_json::json!({ "user": aor, "password": password })
    };
    let found = match at.find() {
        Ok(found) => found,
        Err(why) => {
            eprintln!("p2psip: {why}");
            return ExitCode::from(2);
        }
    };
    let Some(http) = found.http else {
        eprintln!("p2psip: sign-up needs the node's HTTP server: --data DIR or --http ADDR");
        return ExitCode::from(2);
    };
    let body = body.to_string();
    match control::request(
        http,
        "POST",
        "/signup",
        None,
        Some(&body),
        control::SURVEY_TIMEOUT,
    ) {
        Ok((201, text)) => {
            let claimed: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            println!("{}", claimed["aor"].as_str().unwrap_or(aor));
            ExitCode::SUCCESS
        }
        Ok((status, text)) => {
            let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let why = answer["error"].as_str().unwrap_or(text.trim());
            eprintln!("p2psip: sign-up of {aor} refused: {status} {why}");
            ExitCode::FAILURE
        }
        Err(why) => {
            eprintln!("p2psip: {why}");
            ExitCode::FAILURE
        }
    }
}
