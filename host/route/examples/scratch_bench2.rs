use std::hint::black_box;
use std::time::Instant;
use verge_message::{Message, system};
use verge_route::*;
fn time(name: &str, mut f: impl FnMut() -> bool) {
    let n = 5_000_000;
    let t = Instant::now();
    let mut k = 0;
    for _ in 0..n { if f() { k += 1; } }
    println!("{name}: {:.1} ns ({k})", t.elapsed().as_nanos() as f64 / n as f64);
}
fn main() {
    let msg = Message::new(r#"{}"#)
        .with_property("key1", "value1").with_property("key2", "3")
        .with_system(system::CONTENT_TYPE, "application/json").with_system(system::CONTENT_ENCODING, "utf-8")
        .with_system(system::CONNECTION_MODULE_ID, "sensor").with_system(system::OUTPUT_NAME, "out");
    let pat = SourcePattern::new("/messages/*");
    let src = MessageSource::of(&msg);
    time("system().get(messageType)", || black_box(&msg).system().get(black_box("messageType")).is_some());
    time("system().get(outputName)", || black_box(&msg).system().get(black_box("outputName")).is_some());
    time("MessageSource::of", || matches!(MessageSource::of(black_box(&msg)), MessageSource::Module{..}));
    time("pattern.matches(owned)", || black_box(&pat).matches(black_box(&src)));
    let route = Route::parse("FROM /messages/* INTO $upstream").unwrap();
    time("route.matches", || route.matches(&mut Evaluation::new(black_box(&msg))));
}
