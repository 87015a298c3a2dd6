//! Redis URLs: `redis://[user[:password]@]host[:port][/db]`, `rediss://` for TLS.

use std::fmt;

/// Where and how to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    pub tls: bool,
    /// The TLS client settings (set by the sink from its `tls:` config).
    pub tls_client: Option<super::tls::TlsClient>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Shown without the password.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = match (&self.user, &self.password) {
            (Some(u), _) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".to_owned(),
            (None, None) => String::new(),
        };
        write!(
            f,
            "{scheme}://{auth}{}:{}/{}",
            self.host, self.port, self.db
        )
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape %{hex}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "credentials are not UTF-8".to_owned())
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(url: &str) -> Result<Target, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("rediss://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("redis://") {
            (false, r)
        } else {
            return Err("expected redis://… or rediss://…".into());
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (auth, hostport) = match authority.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, authority),
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => {
                let (u, p) = a.split_once(':').map_or((a, None), |(u, p)| (u, Some(p)));
                let user = (!u.is_empty()).then(|| percent_decode(u)).transpose()?;
                let password = p
                    .filter(|p| !p.is_empty())
                    .map(percent_decode)
                    .transpose()?;
                (user, password)
            }
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| format!("bad port {p:?}"))?),
            None => (hostport, 6379),
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        let db_text = path.split('?').next().unwrap_or("");
        let db = if db_text.is_empty() {
            0
        } else {
            db_text
                .parse()
                .map_err(|_| format!("bad database number {db_text:?}"))?
        };
        Ok(Target {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            user,
            password,
            db,
            tls,
            tls_client: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_hides_passwords() {
        let t: Target = "redis://:s3cret@127.0.0.1:6380/2".parse().unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.db,
                t.password.as_deref(),
                t.user.as_deref()
            ),
            ("127.0.0.1", 6380, 2, Some("s3cret"), None)
        );
        assert_eq!(t.to_string(), "redis://:***@127.0.0.1:6380/2");
        let t: Target = "rediss://app:p%40ss@host".parse().unwrap();
        assert_eq!(
            (t.tls, t.port, t.user.as_deref(), t.password.as_deref()),
            (true, 6379, Some("app"), Some("p@ss"))
        );
        assert!("http://x".parse::<Target>().is_err());
        assert!("redis://h:notaport".parse::<Target>().is_err());
        assert!("redis://h:1/x".parse::<Target>().is_err());
    }
}
