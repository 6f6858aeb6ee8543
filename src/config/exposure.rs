//! Who may reach the server: the browser origins allowed by CORS, and the check that keeps a
//! development server (whose well-known key and credential-free `/v1/dev/token` hand out
//! admin rights) on loopback unless the operator says otherwise.

use std::net::{IpAddr, SocketAddr};

use super::error::ConfigError;

/// Browser origins allowed to call the API (`cors_origins`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin, never with credentials. Every endpoint takes its credential as a
    /// bearer token the calling page must already hold, so no ambient authority is exposed.
    Any,
    /// Exactly these origins (normalized `scheme://host[:port]`), plus in development mode
    /// the server's own and loopback origins.
    List(Vec<String>),
}

/// Parses `cors_origins`: `*`, or comma-separated origins like `https://app.example.com`.
pub(super) fn cors_origins(input: &str) -> Result<CorsOrigins, String> {
    let items: Vec<&str> = input
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Err("expected * or origins like https://app.example.com".to_owned());
    }
    if items.contains(&"*") {
        if items.len() > 1 {
            return Err("* already allows every origin; give it alone".to_owned());
        }
        return Ok(CorsOrigins::Any);
    }
    let mut origins = Vec::with_capacity(items.len());
    for item in items {
        let origin = normalize_origin(item).ok_or_else(|| {
            format!(
                "{item:?} is not an origin: expected scheme://host[:port] with http or https, \
                 no path, like https://app.example.com"
            )
        })?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(CorsOrigins::List(origins))
}

/// `scheme://host[:port]`, lowercase, without the scheme's default port, as browsers send
/// the `Origin` header; `None` when `origin` is not one.
pub fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim().to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = split_port(authority)?;
    if host.is_empty() {
        return None;
    }
    match port {
        Some(port) if port != default_port => Some(format!("{scheme}://{host}:{port}")),
        _ => Some(format!("{scheme}://{host}")),
    }
}

/// `host[:port]` (with `[v6]` brackets kept on the host); `None` for a malformed port.
fn split_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &authority[..end + 2];
        match &rest[end + 1..] {
            "" => (host, None),
            tail => (host, Some(tail.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if let Some(port) = port {
        port.parse::<u16>().ok()?;
    }
    Some((host, port))
}

/// True for an origin on this machine: `localhost`, `127.0.0.0/8` or `[::1]`, any port.
pub fn is_loopback_origin(origin: &str) -> bool {
    let Some(normalized) = normalize_origin(origin) else {
        return false;
    };
    let Some((_, authority)) = normalized.split_once("://") else {
        return false;
    };
    let Some((host, _)) = split_port(authority) else {
        return false;
    };
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `--dev` on an address other hosts can reach hands them admin tokens (the well-known key,
/// `/v1/dev/token`); refused unless `dev_allow_public` says the operator means it.
pub fn check_dev_exposure(
    dev: bool,
    allow_public: bool,
    http_addr: SocketAddr,
    rtc_ip: IpAddr,
) -> Result<(), ConfigError> {
    if !dev || allow_public {
        return Ok(());
    }
    let exposed = [("http_addr", http_addr.ip()), ("rtc.ip", rtc_ip)]
        .into_iter()
        .find(|(_, ip)| !ip.is_loopback());
    match exposed {
        Some((setting, ip)) => Err(ConfigError::DevNotLoopback { setting, ip }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalized_and_checked() {
        assert_eq!(
            cors_origins("https://App.example.com, http://localhost:3000,https://a.b:443"),
            Ok(CorsOrigins::List(vec![
                "https://app.example.com".into(),
                "http://localhost:3000".into(),
                "https://a.b".into(),
            ]))
        );
        assert_eq!(cors_origins(" * "), Ok(CorsOrigins::Any));
        for bad in [
            "",
            "*,https://a.b",
            "app.example.com",
            "ftp://a.b",
            "https://a.b/path",
            "https://a.b:99999",
            "https://",
        ] {
            assert!(cors_origins(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(
            normalize_origin("http://[::1]:8080").as_deref(),
            Some("http://[::1]:8080")
        );
    }

    #[test]
    fn loopback_origins() {
        for origin in [
            "http://localhost:5173",
            "http://127.0.0.1",
            "https://127.1.2.3:8443",
            "http://[::1]:80",
            "http://app.localhost:3000",
        ] {
            assert!(is_loopback_origin(origin), "{origin}");
        }
        for origin in [
            "http://localhost.evil.com",
            "http://10.0.0.1",
            "https://evil.example",
            "null",
        ] {
            assert!(!is_loopback_origin(origin), "{origin}");
        }
    }

    #[test]
    fn cors_origins_and_dev_allow_public_resolve_from_every_source() {
        use crate::config::tests::{env, err, no_env, ok, path_str, serve, toml_file};
        let defaults = ok(&serve(&["--dev"]), &no_env);
        assert_eq!(defaults.cors_origins, None);
        assert!(!defaults.dev_allow_public);
        let file =
            toml_file("cors_origins = [\"https://file.example\"]\ndev_allow_public = true\n");
        let from_file = ok(&serve(&["--dev", "--config", path_str(&file)]), &no_env);
        assert_eq!(
            from_file.cors_origins,
            Some(CorsOrigins::List(vec!["https://file.example".into()]))
        );
        assert!(from_file.dev_allow_public);
        let vars = env(&[
            (
                "SWITCHBOARD_CORS_ORIGINS",
                "https://a.example, https://b.example",
            ),
            ("SWITCHBOARD_DEV_ALLOW_PUBLIC", "1"),
        ]);
        let from_env = ok(&serve(&["--dev", "--config", path_str(&file)]), &vars);
        assert_eq!(
            from_env.cors_origins,
            Some(CorsOrigins::List(vec![
                "https://a.example".into(),
                "https://b.example".into()
            ]))
        );
        let args = serve(&[
            "--dev",
            "--cors-origin",
            "*",
            "--dev-allow-public",
            "--http-addr",
            "0.0.0.0:7880",
            "--node-ip",
            "192.0.2.1",
        ]);
        let from_flags = ok(&args, &vars);
        assert_eq!(from_flags.cors_origins, Some(CorsOrigins::Any));
        assert!(from_flags.check_dev_exposure().is_ok());
        let bad = err(&serve(&["--dev", "--cors-origin", "app.example"]), &no_env);
        assert!(
            bad.contains("--cors-origin") && bad.contains("not an origin"),
            "{bad}"
        );
    }

    #[test]
    fn dev_mode_stays_on_loopback_unless_allowed() {
        let lo: SocketAddr = "127.0.0.1:7880".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7880".parse().unwrap();
        let lo_ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(check_dev_exposure(true, false, lo, lo_ip).is_ok());
        let e = check_dev_exposure(true, false, any, lo_ip).unwrap_err();
        assert!(e.to_string().contains("--dev-allow-public"), "{e}");
        assert!(e.to_string().contains("0.0.0.0"), "{e}");
        let e = check_dev_exposure(true, false, lo, "10.0.0.1".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("rtc.ip"), "{e}");
        assert!(check_dev_exposure(true, true, any, lo_ip).is_ok());
        assert!(check_dev_exposure(false, false, any, lo_ip).is_ok());
    }
}
