//! Where the sink writes: a url turned into connection settings of the `redis` crate.
//!
//! - `redis://[user[:password]@]host[:port][/db]`, `rediss://…` (TLS, with the sink's
//!   `tls:` files), `redis+unix:///path?db=N` and `unix:///path?db=N`: one node, parsed
//!   by the crate.
//! - `redis-sentinel://[[user]:password@]host1[:26379],host2[:26379][/db]#mastername`:
//!   the master that the sentinels name (the Lettuce form). The url's credentials are
//!   the sentinels'; the data nodes use the sink's `username:`/`password:` when given,
//!   else the same ones.
//!
//! Shown (in logs and errors) without the password.

use std::fmt;
use std::path::{Path, PathBuf};

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use serde::Deserialize;

use super::config::RedisSinkConfig;

/// The `tls:` settings of a Redis sink.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA(s) that signed the server's certificate; default: the
    /// system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for servers that authenticate clients.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// A url the sink cannot use.
#[derive(Debug, thiserror::Error)]
#[error("bad url {url}: {message}")]
pub struct UrlError {
    /// The url as shown (no password).
    pub url: String,
    pub message: String,
}

/// Sentinels and the master they watch.
#[derive(Clone)]
pub struct SentinelSpec {
    /// Each sentinel, with the sentinels' credentials.
    pub sentinels: Vec<ConnectionInfo>,
    pub master_name: String,
    /// Credentials and database for the master (and the replicas).
    pub node: RedisConnectionInfo,
}

/// Where to connect.
#[derive(Clone)]
pub enum Target {
    /// One server: TCP, TLS or a unix socket.
    Node(ConnectionInfo),
    Sentinel(SentinelSpec),
}

impl Target {
    /// The sink's target, with the TLS files read when the url is `rediss://`.
    pub fn of(config: &RedisSinkConfig) -> Result<Target, UrlError> {
        let url = config.url.trim();
        let shown = hide_password(url);
        let bad = |message: String| UrlError {
            url: shown.clone(),
            message,
        };
        if let Some(rest) = url.strip_prefix("redis-sentinel://") {
            if config.tls.is_some() {
                return Err(bad(
                    "`tls:` is not supported with redis-sentinel:// yet".into()
                ));
            }
            let mut spec = parse_sentinel(rest).map_err(bad)?;
            if let Some(user) = &config.username {
                spec.node.username = Some(user.clone());
            }
            if let Some(password) = &config.password {
                spec.node.password = Some(password.clone());
            }
            return Ok(Target::Sentinel(spec));
        }
        if config.username.is_some() || config.password.is_some() {
            return Err(bad(
                "`username:`/`password:` are for redis-sentinel:// urls; put credentials in the url".into(),
            ));
        }
        let mut info = url.into_connection_info().map_err(|e| {
            bad(format!(
                "{e} (expected redis://, rediss://, redis+unix://, unix:// or redis-sentinel://)"
            ))
        })?;
        let tls = matches!(info.addr, ConnectionAddr::TcpTls { .. });
        match (&config.tls, tls) {
            (Some(_), false) => {
                return Err(bad("`tls:` is set but the url is not rediss://".into()));
            }
            (settings, true) => {
                let certificates = certificates(&settings.clone().unwrap_or_default())
                    .map_err(|e| bad(format!("tls: {e}")))?;
                info = redis::Client::build_with_tls(info, certificates)
                    .map_err(|e| bad(format!("tls: {e}")))?
                    .get_connection_info()
                    .clone();
            }
            (None, false) => {}
        }
        Ok(Target::Node(info))
    }

    /// The database the url names (for a cluster, 0).
    pub fn db(&self) -> u32 {
        let db = match self {
            Target::Node(info) => info.redis.db,
            Target::Sentinel(spec) => spec.node.db,
        };
        u32::try_from(db).unwrap_or(0)
    }

    /// Whether the target is the master named by sentinels (and may move).
    pub fn is_sentinel(&self) -> bool {
        matches!(self, Target::Sentinel(_))
    }

    /// The settings of one node: the url's, or a resolved master's.
    pub fn node(&self) -> Option<&ConnectionInfo> {
        match self {
            Target::Node(info) => Some(info),
            Target::Sentinel(_) => None,
        }
    }
}

/// `info` at another TCP address (a cluster node, a master named by sentinels): the
/// same credentials and TLS settings, database `db`.
pub fn at_address(info: &ConnectionInfo, host: &str, port: u16, db: i64) -> ConnectionInfo {
    let mut moved = info.clone();
    match &mut moved.addr {
        ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            *h = host.to_owned();
            *p = port;
        }
        addr => *addr = ConnectionAddr::Tcp(host.to_owned(), port),
    }
    moved.redis.db = db;
    moved
}

/// `redis://:***@host:port/db`, `rediss://…`, `redis+unix:///path?db=N`.
pub fn show(info: &ConnectionInfo) -> String {
    let auth = match (&info.redis.username, &info.redis.password) {
        (Some(u), _) => format!("{u}:***@"),
        (None, Some(_)) => ":***@".to_owned(),
        (None, None) => String::new(),
    };
    let db = info.redis.db;
    match &info.addr {
        ConnectionAddr::Tcp(host, port) => format!("redis://{auth}{host}:{port}/{db}"),
        ConnectionAddr::TcpTls { host, port, .. } => format!("rediss://{auth}{host}:{port}/{db}"),
        ConnectionAddr::Unix(path) => {
            let user = info
                .redis
                .username
                .as_ref()
                .map(|u| format!("&user={u}"))
                .unwrap_or_default();
            let pass = if info.redis.password.is_some() {
                "&pass=***"
            } else {
                ""
            };
            format!("redis+unix://{}?db={db}{user}{pass}", path.display())
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Node(info) => f.write_str(&show(info)),
            Target::Sentinel(spec) => {
                let first = spec.sentinels.first().map(|s| &s.redis);
                let auth = match first.map(|r| (&r.username, &r.password)) {
                    Some((Some(u), _)) => format!("{u}:***@"),
                    Some((None, Some(_))) => ":***@".to_owned(),
                    _ => String::new(),
                };
                let hosts: Vec<String> = spec
                    .sentinels
                    .iter()
                    .map(|s| match &s.addr {
                        ConnectionAddr::Tcp(h, p) => format!("{h}:{p}"),
                        other => other.to_string(),
                    })
                    .collect();
                write!(
                    f,
                    "redis-sentinel://{auth}{}/{}#{}",
                    hosts.join(","),
                    spec.node.db,
                    spec.master_name
                )
            }
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The url with any password replaced by `***`, for messages about a url that did
/// not parse.
fn hide_password(url: &str) -> String {
    if let Some(at) = url.find("pass=") {
        let end = url[at..].find('&').map_or(url.len(), |e| at + e);
        return format!("{}pass=***{}", &url[..at], &url[end..]);
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((auth, host)) => {
            let user = auth.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
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

/// The part after `redis-sentinel://`.
fn parse_sentinel(rest: &str) -> Result<SentinelSpec, String> {
    let (rest, master) = rest
        .split_once('#')
        .ok_or("no master name: end the url with #<master name>")?;
    if master.is_empty() {
        return Err("no master name after #".into());
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (auth, hosts) = match authority.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, authority),
    };
    let (username, password) = match auth {
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
    let db_text = path.split('?').next().unwrap_or("");
    let db: i64 = if db_text.is_empty() {
        0
    } else {
        db_text
            .parse()
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| format!("bad database number {db_text:?}"))?
    };
    let credentials = RedisConnectionInfo {
        db: 0,
        username,
        password,
        ..Default::default()
    };
    let mut sentinels = Vec::new();
    for host in hosts.split(',') {
        let (h, port) = match host.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| format!("bad port {p:?}"))?),
            None => (host, 26379),
        };
        if h.is_empty() {
            return Err("a sentinel has no host".into());
        }
        let h = h.trim_start_matches('[').trim_end_matches(']');
        sentinels.push(ConnectionInfo {
            addr: ConnectionAddr::Tcp(h.to_owned(), port),
            redis: credentials.clone(),
        });
    }
    Ok(SentinelSpec {
        sentinels,
        master_name: master.to_owned(),
        node: RedisConnectionInfo { db, ..credentials },
    })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The `tls:` files, read for the crate's rustls client.
fn certificates(tls: &TlsConfig) -> Result<redis::TlsCertificates, String> {
    let root_cert = match &tls.ca_file {
        Some(ca) => {
            let pem = read(ca)?;
            if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
                return Err(format!("{}: no PEM certificate in it", ca.display()));
            }
            Some(pem)
        }
        None => None,
    };
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        (None, None) => None,
        _ => return Err("give both cert_file and key_file, or neither".into()),
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> RedisSinkConfig {
        serde_yaml::from_str(&format!("url: \"{url}\"")).unwrap()
    }

    #[test]
    fn every_url_form_parses_and_hides_its_password() {
        let t = Target::of(&config("redis://:s3cret@127.0.0.1:6380/2")).unwrap();
        assert_eq!(t.to_string(), "redis://:***@127.0.0.1:6380/2");
        assert_eq!(t.db(), 2);
        let t = Target::of(&config("redis://app:p%40ss@host")).unwrap();
        let info = t.node().unwrap();
        assert_eq!(info.redis.password.as_deref(), Some("p@ss"));
        assert_eq!(t.to_string(), "redis://app:***@host:6379/0");
        let t = Target::of(&config("redis+unix:///run/redis.sock?db=3")).unwrap();
        assert_eq!(t.to_string(), "redis+unix:///run/redis.sock?db=3");
        assert_eq!(t.db(), 3);
        let t = Target::of(&config("unix:///run/redis.sock?db=1&pass=s3cret")).unwrap();
        assert!(matches!(t.node().unwrap().addr, ConnectionAddr::Unix(_)));
        assert_eq!(t.node().unwrap().redis.password.as_deref(), Some("s3cret"));
        assert_eq!(t.to_string(), "redis+unix:///run/redis.sock?db=1&pass=***");

        let t = Target::of(&config(
            "redis-sentinel://:pw@10.0.0.1:26379,10.0.0.2/4#mymaster",
        ))
        .unwrap();
        assert_eq!(
            t.to_string(),
            "redis-sentinel://:***@10.0.0.1:26379,10.0.0.2:26379/4#mymaster"
        );
        let Target::Sentinel(spec) = &t else { panic!() };
        assert_eq!(spec.sentinels.len(), 2);
        assert_eq!(spec.sentinels[1].redis.password.as_deref(), Some("pw"));
        assert_eq!(
            (spec.node.db, spec.node.password.as_deref()),
            (4, Some("pw"))
        );

        let mut c = config("redis-sentinel://:sentinel-pw@h:26379#m");
        c.password = Some("data-pw".into());
        let Target::Sentinel(spec) = Target::of(&c).unwrap() else {
            panic!()
        };
        assert_eq!(spec.node.password.as_deref(), Some("data-pw"));
        assert_eq!(
            spec.sentinels[0].redis.password.as_deref(),
            Some("sentinel-pw")
        );
    }

    #[test]
    fn bad_urls_are_refused_without_showing_the_password() {
        assert_eq!(
            hide_password("unix:///x?pass=pw&db=x"),
            "unix:///x?pass=***&db=x"
        );
        for url in [
            "http://x",
            "redis://h:notaport",
            "redis-sentinel://:pw@h:1",
            "redis-sentinel://h:1#",
            "redis-sentinel://h:x#m",
        ] {
            let e = Target::of(&config(url)).err().unwrap().to_string();
            assert!(!e.contains("pw@"), "{e}");
        }
        let mut c = config("redis://h");
        c.password = Some("x".into());
        assert!(Target::of(&c).is_err(), "password: needs a sentinel url");
        let mut c = config("redis://h");
        c.tls = Some(TlsConfig::default());
        assert!(Target::of(&c).is_err(), "tls: needs rediss://");
    }
}
