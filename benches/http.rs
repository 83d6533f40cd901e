//! HTTP request decoding and response encoding throughput.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use orchestra::proto::http::{DecodeLimits, Decoded, RequestDecoder, Response};
use std::hint::black_box;

const SPAWN: &[u8] = b"POST /api/agents/spawn HTTP/1.1\r\nHost: localhost:8080\r\n\
User-Agent: curl/8.5.0\r\nAccept: */*\r\nAuthorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjbGkiLCJzY29wZSI6ImNvbnRyb2wiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMH0.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl\r\n\
Content-Type: application/json\r\nContent-Length: 86\r\n\r\n\
{\"agent_type\":\"droid\",\"working_dir\":\"/workspace/project\",\"env\":{\"PROJECT_NAME\":\"app\"}}";

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("http_decode");
    group.throughput(Throughput::Bytes(SPAWN.len() as u64));
    group.bench_function("spawn_request_whole", |b| {
        b.iter(|| {
            let mut decoder = RequestDecoder::new(DecodeLimits::default());
            match decoder.decode(black_box(SPAWN)) {
                Ok(Decoded::Complete { request, .. }) => black_box(request),
                other => panic!("{other:?}"),
            }
        })
    });
    // The same request arriving in 64-byte reads, as a slow client would send it.
    group.bench_function("spawn_request_in_64_byte_reads", |b| {
        b.iter(|| {
            let mut decoder = RequestDecoder::new(DecodeLimits::default());
            let mut end = 0;
            loop {
                end = (end + 64).min(SPAWN.len());
                if let Ok(Decoded::Complete { request, .. }) = decoder.decode(&SPAWN[..end]) {
                    break black_box(request);
                }
            }
        })
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let body = br#"{"agents":[{"session_id":"sess-claude-0123abcd","agent_type":"claude","status":"running","created_at":"2025-01-10T11:00:00Z","last_activity":"2025-01-10T12:00:00Z"}],"total":1}"#;
    let response = Response::json(200, body.to_vec());
    let mut group = c.benchmark_group("http_encode");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("list_response", |b| {
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            out.clear();
            black_box(&response).encode(true, &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
