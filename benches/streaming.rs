//! The output hot path: WebSocket frame encoding, the UTF-8 chunker, and the fanout hub
//! (one encoding shared by 1, 16 and 256 viewers, for small and large chunks), and what the
//! metrics counters cost, and what screen state costs (parsing against skimming a flood).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use orchestra::net::ConnId;
use orchestra::panes::hub::{Hub, HubLimits};
use orchestra::panes::utf8::Utf8Chunker;
use orchestra::proto::output_frame::{OutputFields, OutputFrameEncoder};
use orchestra::proto::ws::text_frame;
use std::hint::black_box;

/// Terminal-like output: colours, UTF-8, line breaks.
fn sample(len: usize) -> Vec<u8> {
    let line =
        "\x1b[32m✓\x1b[0m compiling crate héllo-wörld v0.1.0 (/work/src) 😀 \x1b[1mdone\x1b[0m\r\n";
    line.as_bytes().iter().copied().cycle().take(len).collect()
}

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_encode");
    for size in [256usize, 4096, 65536] {
        let text = String::from_utf8_lossy(&sample(size)).into_owned();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::new("terminal_output_json_and_frame", size),
            &text,
            |b, text| {
                let mut encoder = OutputFrameEncoder::new();
                b.iter(|| {
                    black_box(encoder.encode(&OutputFields {
                        session_id: "sess-claude-0123abcd",
                        stream: "a1b2c3d4e5f6",
                        data: text,
                        offset: 1000,
                        next_offset: 2000,
                        timestamp: 1_700_000_000_000,
                    }))
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("frame_only", size), &text, |b, text| {
            b.iter(|| black_box(text_frame(text)))
        });
    }
    group.finish();
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8_chunker");
    for size in [4096usize, 65536] {
        let bytes = sample(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("push", size), &bytes, |b, bytes| {
            let mut chunker = Utf8Chunker::new();
            b.iter(|| black_box(chunker.push(bytes)))
        });
    }
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for viewers in [1usize, 16, 256] {
        for size in [1024usize, 65536] {
            let bytes = sample(size);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("{viewers}_viewers"), size),
                &bytes,
                |b, bytes| {
                    let mut hub =
                        Hub::new(HubLimits::from_config(&orchestra::config::Config::default()));
                    hub.open("s", 0);
                    let conns: Vec<ConnId> = (0..viewers)
                        .map(|i| ConnId {
                            key: i,
                            serial: i as u64,
                        })
                        .collect();
                    for conn in &conns {
                        hub.subscribe(*conn, "s", Some(0), None).unwrap();
                    }
                    b.iter(|| {
                        // One chunk arrives; every viewer pulls it (what the server does for
                        // each viewer with room in its queue).
                        hub.push("s", bytes, 0);
                        for conn in hub.take_dirty() {
                            black_box(hub.pull(conn, 1 << 20, 0));
                        }
                    })
                },
            );
        }
    }
    group.finish();
}

/// What counting costs on the hot path: one HTTP request recorded (counter and histogram),
/// one sent message counted by its type, and a full `/metrics` rendering.
fn metrics(c: &mut Criterion) {
    use orchestra::metrics::{Gauges, Metrics, OutputCounts, SharedHistogram, render};
    use std::time::Duration;
    let mut group = c.benchmark_group("metrics");
    let mut registry = Metrics::default();
    group.bench_function("count_http_request", |b| {
        b.iter(|| {
            registry.http(
                black_box("/api/agents/{session_id}"),
                200,
                Duration::from_micros(420),
            )
        })
    });
    let message = r#"{"type":"agent_status","session_id":"sess-x","status":"running"}"#;
    group.bench_function("count_sent_message", |b| {
        b.iter(|| registry.sent(black_box(message)))
    });
    let shared = SharedHistogram::default();
    group.bench_function("shared_histogram_observe", |b| {
        b.iter(|| shared.observe(black_box(Duration::from_millis(3))))
    });
    group.bench_function("render_exposition", |b| {
        b.iter(|| {
            black_box(render(
                &registry,
                &OutputCounts::default(),
                &Gauges::default(),
                &shared,
                &shared,
            ))
        })
    });
    group.finish();
}

/// What screen state costs per byte: parsing output exactly (vt100) against skimming it
/// for its control sequences (what the emulator does with a flood beyond its window and
/// parse rate), and one snapshot of a full screen.
fn emulator(c: &mut Criterion) {
    use orchestra::panes::emulator::screen_state;
    use orchestra::panes::skim::Skimmer;
    use std::num::NonZeroU16;
    let mut flood = Vec::new();
    let mut line = 0u64;
    while flood.len() < 1 << 20 {
        flood.extend_from_slice(
            format!(
                "\x1b[1;3{}mline {line:06}\x1b[0m the quick brown fox \x1b[34mjumps\x1b[0m over the lazy dog 0123456789\r\n",
                line % 8
            )
            .as_bytes(),
        );
        line += 1;
    }
    let mut group = c.benchmark_group("emulator");
    group.throughput(Throughput::Bytes(flood.len() as u64));
    let size = || (NonZeroU16::new(50).unwrap(), NonZeroU16::new(200).unwrap());
    group.bench_function("vt100_parse_coloured_flood", |b| {
        let (rows, cols) = size();
        let mut parser = vt100::Parser::new(rows, cols, 0);
        b.iter(|| parser.process(black_box(&flood)))
    });
    group.bench_function("skim_coloured_flood", |b| {
        let (rows, cols) = size();
        let mut parser = vt100::Parser::new(rows, cols, 0);
        let mut skimmer = Skimmer::new();
        let mut kept = Vec::new();
        b.iter(|| {
            kept.clear();
            skimmer.skim(black_box(&flood), &mut kept);
            parser.process(&kept);
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("snapshot_50x200", |b| {
        let (rows, cols) = size();
        let mut parser = vt100::Parser::new(rows, cols, 0);
        parser.process(&flood);
        b.iter(|| black_box(screen_state(parser.screen())))
    });
    group.finish();
}

criterion_group!(benches, frames, utf8, fanout, metrics, emulator);
criterion_main!(benches);
