//! Who listens on a TCP port, read from `/proc`: our rsync daemon must be the process
//! answering on the dump port, not someone else's daemon that happens to hold it (a Pika
//! replica on the same host runs one on its port + 1000).

use std::net::IpAddr;
use std::path::Path;

/// A listening socket: its local address and the inode that names it in `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub ip: IpAddr,
    pub port: u16,
    pub inode: u64,
}

/// The `LISTEN` sockets on `port` that a connection to `ip:port` would reach: bound to
/// `ip` itself or to the unspecified address.
pub fn listening_on(ip: IpAddr, port: u16) -> Vec<Listener> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        found.extend(
            text.lines()
                .skip(1)
                .filter_map(parse_line)
                .filter(|l| l.port == port && (l.ip == ip || l.ip.is_unspecified())),
        );
    }
    found
}

/// One row of `/proc/net/tcp{,6}` in the `LISTEN` state (`0A`).
fn parse_line(line: &str) -> Option<Listener> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
    if *state != "0A" {
        return None;
    }
    let (addr, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = parse_addr(addr)?;
    Some(Listener {
        ip,
        port,
        inode: inode.parse().ok()?,
    })
}

/// The kernel prints an address as 32-bit words in host (little-endian) order.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| {
            hex.get(i * 8..i * 8 + 8)
                .and_then(|w| u32::from_str_radix(w, 16).ok())
        })
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
        }
        _ => None,
    }
}

/// Whether process `pid` holds the socket `inode`.
pub fn held_by(pid: u32, inode: u64) -> bool {
    let socket = format!("socket:[{inode}]");
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == Path::new(&socket)))
}

/// The process holding socket `inode`, as "pid N (command line)", when it can be seen
/// (another user's processes cannot).
pub fn holder(inode: u64) -> Option<String> {
    let procs = std::fs::read_dir("/proc").ok()?;
    procs.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        if !held_by(pid, inode) {
            return None;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        Some(format!("pid {pid} ({})", cmdline.trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kernel_addresses() {
        let row = "   1: 0100007F:2AF8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0";
        let l = parse_line(row).unwrap();
        assert_eq!(l.ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((l.port, l.inode), (11000, 4242));
        let established = row.replace(" 0A ", " 01 ");
        assert_eq!(parse_line(&established), None);
        assert_eq!(
            parse_addr("00000000000000000000000001000000"),
            Some("::1".parse().unwrap())
        );
    }

    #[test]
    fn finds_the_listener_of_this_process() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let found = listening_on("127.0.0.1".parse().unwrap(), port);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(held_by(std::process::id(), found[0].inode));
        let who = holder(found[0].inode).unwrap();
        assert!(
            who.starts_with(&format!("pid {}", std::process::id())),
            "{who}"
        );
    }
}
