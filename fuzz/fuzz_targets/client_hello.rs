//! Feeds arbitrary bytes to the ClientHello parser: they come straight from
//! untrusted clients, so it must never panic, and its final answers must be
//! final, because the reader stops and acts on the first one it gets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weerwal::proxy::client_hello::{parse_client_hello, ClientHello, MAX_CLIENT_HELLO_BYTES};

fuzz_target!(|data: &[u8]| {
    let answer = parse_client_hello(data);

    // The reader never buffers more than the cap, so at the cap the parser
    // must have decided.
    if data.len() >= MAX_CLIENT_HELLO_BYTES {
        assert_ne!(answer, ClientHello::Incomplete);
    }

    // More bytes must not change a final answer (checked on a cheap prefix:
    // half the input).
    let prefix = parse_client_hello(&data[..data.len() / 2]);
    if prefix != ClientHello::Incomplete {
        assert_eq!(prefix, answer);
    }
});
