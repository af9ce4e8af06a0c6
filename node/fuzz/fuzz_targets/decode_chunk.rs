//! Fuzzes the chunk decoder and verifier with arbitrary bytes.
//!
//! Checks beyond "no panic": a decoded chunk re-exposes exactly the input, and a chunk that
//! verifies under the channel it names has a payload inside the input.
#![no_main]

use bytes::Bytes;
use fjord_core::wire::{ChannelId, UnverifiedChunk, limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(chunk) = UnverifiedChunk::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    assert_eq!(chunk.len(), data.len());
    assert!(chunk.len() <= limits::MAX_CHUNK_LEN);
    if let Ok(channel) = ChannelId::from_bytes(chunk.channel_bytes()) {
        if let Ok(verified) = chunk.verify(&channel) {
            assert!(verified.payload().len() <= limits::MAX_CHUNK_PAYLOAD);
            assert_eq!(&verified.encoded()[..], data);
        }
    }
});
