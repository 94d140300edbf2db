//! Fuzz target: arbitrary bytes from a hostile peer through the frame decoder, read the way
//! the daemon reads a connection (frame after frame until an error or an incomplete frame),
//! as requests (what the engine decodes) and as events (what the API decodes). It must never
//! panic, never claim more bytes than it was given, and whatever decodes must survive an
//! encode/decode round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portscope_proto::{decode, encode, Event, Request, MAX_FRAME};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;

fn drain<T: DeserializeOwned + Serialize + PartialEq + Debug>(mut buf: &[u8]) {
    while let Ok(Some((msg, used))) = decode::<T>(buf) {
        assert!((5..=4 + MAX_FRAME).contains(&used) && used <= buf.len(), "{used}");
        let again = encode(&msg);
        let (back, n) = decode::<T>(&again)
            .expect("an encoded frame decodes")
            .expect("an encoded frame is complete");
        assert_eq!((&back, n), (&msg, again.len()));
        buf = &buf[used..];
    }
}

fuzz_target!(|data: &[u8]| {
    drain::<Request>(data);
    drain::<Event>(data);
});
