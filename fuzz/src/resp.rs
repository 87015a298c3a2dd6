//! RESP commands (the content of every binlog item).

use bytes::Bytes;
use pika_migrate_core::resp::{encode_command, parse_command};

/// Parses one command; an accepted one is encoded and parsed back to the same
/// arguments, slices of the input; a refused one names a byte inside the input.
pub fn command(data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    match parse_command(&input) {
        Ok(argv) => {
            let total: usize = argv.iter().map(Bytes::len).sum();
            assert!(total <= data.len(), "arguments longer than the input");
            let mut out = Vec::new();
            encode_command(&mut out, &argv);
            let again = parse_command(&Bytes::from(out)).expect("an encoded command parses");
            assert_eq!(again, argv);
        }
        Err(e) => {
            assert!(
                e.at <= data.len(),
                "error at byte {} of {}",
                e.at,
                data.len()
            );
            assert!(e.to_string().contains(&format!("at byte {}", e.at)), "{e}");
        }
    }
}
