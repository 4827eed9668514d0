//! Any bytes: parsing a save image never panics, never claims a stream past the input, and
//! whatever parses re-encodes to an image that parses back to the same XML and cookie.
#![no_main]

use clonesafe::backend::libvirt::save_image::SaveImage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = SaveImage::parse(data, data.len() as u64) {
        assert!(img.stream_offset() <= data.len() as u64);
        let region = img.encode_with_xml(&img.xml).expect("its own XML fits");
        assert_eq!(region.len() as u64, img.stream_offset());
        let again = SaveImage::parse(&region, region.len() as u64).expect("re-encoded image parses");
        assert_eq!(again.xml, img.xml);
        assert_eq!(again.cookie, img.cookie);
    }
});
