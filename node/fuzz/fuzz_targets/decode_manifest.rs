//! Fuzzes the manifest decoder and verifier with arbitrary bytes.
//!
//! Checks beyond "no panic": whatever decodes obeys every rule of the format.
#![no_main]

use bytes::Bytes;
use fjord_core::wire::{ChannelId, UnverifiedManifest, limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = UnverifiedManifest::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    assert!(data.len() <= limits::MAX_MANIFEST_LEN);
    assert_eq!(manifest.content().validate(), Ok(()));
    if let Ok(channel) = ChannelId::from_bytes(manifest.channel_bytes()) {
        let _ = manifest.verify(&channel);
    }
});
