//! Header and record decoding on arbitrary bytes: no panic, and whatever
//! decodes re-encodes to exactly the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::format::{HEADER_SIZE, RECORD_SIZE};
use storage::{Header, Record};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::decode(data) {
        assert_eq!(&h.encode()[..], &data[..HEADER_SIZE]);
    }
    if let Ok(r) = Record::decode(data) {
        assert_eq!(&r.encode()[..], &data[..RECORD_SIZE]);
    }
});
