//! Layer media types: plain, gzip and zstd tars.

use std::fs;
use std::io::Write;

use wharf::image::{unpack_layer, Compression, Digest};

use crate::layers::{tar, Entry};

#[test]
fn gzip_zstd_and_plain_layers_unpack_alike_and_are_checked_against_the_diff_id() {
    let plain = tar(&[Entry::Dir("etc"), Entry::File("etc/motd", b"hello")]);
    let diff_id = Digest::of(&plain);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&plain).expect("gzip");
    let gzip = gzip.finish().expect("gzip");
    let zstd =
        ruzstd::encoding::compress_to_vec(&plain[..], ruzstd::encoding::CompressionLevel::Fastest);

    for (compression, blob) in [
        (Compression::None, plain.clone()),
        (Compression::Gzip, gzip),
        (Compression::Zstd, zstd),
    ] {
        let work = tempfile::tempdir().expect("temp dir");
        let blob_path = work.path().join("blob");
        fs::write(&blob_path, &blob).expect("write blob");
        let dest = work.path().join("layer");
        fs::create_dir(&dest).expect("mkdir");
        unpack_layer(&blob_path, compression, &diff_id, &dest).expect("unpacks");
        assert_eq!(
            fs::read_to_string(dest.join("etc/motd")).expect("file"),
            "hello",
            "{compression:?}"
        );
    }
}
