//! Framing throughput over a stream of large DataRows: the decoder that the handshake uses and
//! the boundary scanner that the relay uses.

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rds_auth_codec::boundary::BoundaryScanner;
use rds_auth_codec::frame::Frame;

fn data_rows(row_len: usize, total: usize) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(total + row_len);
    let row = Frame::new(b'D', vec![0x5a; row_len]);
    while buf.len() < total {
        row.encode(&mut buf);
    }
    buf.to_vec()
}

fn framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("framing");
    for row_len in [8 * 1024, 64 * 1024] {
        let stream = data_rows(row_len, 64 << 20);
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_function(format!("decode/{}KiB-rows", row_len / 1024), |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(&stream[..]);
                let mut n = 0usize;
                while let Some(frame) = Frame::decode(&mut buf, 1 << 30).expect("valid stream") {
                    n += frame.body.len();
                }
                n
            })
        });
        group.bench_function(format!("scan-16KiB-chunks/{}KiB-rows", row_len / 1024), |b| {
            b.iter(|| {
                let mut scanner = BoundaryScanner::new(1 << 30);
                let mut n = 0usize;
                for chunk in stream.chunks(16 * 1024) {
                    scanner.scan(chunk, |_| n += 1).expect("valid stream");
                }
                n
            })
        });
    }
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
