use std::time::Instant;
use verge_message::{Message, system};
use verge_route::*;
fn main() {
    let msg = Message::new(r#"{"message":{"Weather":{"Temperature":50,"Location":{"City":"Redmond"}}}}"#)
        .with_property("key1", "value1").with_property("key2", "3")
        .with_system(system::CONTENT_TYPE, "application/json").with_system(system::CONTENT_ENCODING, "utf-8")
        .with_system(system::CONNECTION_MODULE_ID, "sensor").with_system(system::OUTPUT_NAME, "out");
    let routes: Vec<Route> = [
        "FROM /messages/* INTO $upstream",
        "FROM /messages/modules/sensor/outputs/out WHERE key1 = 'value1' AND as_number(key2) > 2 INTO BrokeredEndpoint(\"/modules/a/inputs/b\")",
        "FROM /messages/* WHERE $body.message.Weather.Temperature > 40 INTO BrokeredEndpoint(\"/modules/c/inputs/d\")",
        "FROM /messages/modules/other/* WHERE key1 = 'x' INTO $upstream",
    ].iter().map(|r| Route::parse(r).unwrap()).collect();
    for (name, rs) in [("no condition", &routes[0..1]), ("property route", &routes[1..2]), ("4 routes incl. body parse", &routes[..])] {
        let n = 2_000_000;
        let t = Instant::now();
        let mut hits = 0;
        for _ in 0..n {
            let mut ev = Evaluation::new(std::hint::black_box(&msg));
            for r in rs { if r.matches(&mut ev) { hits += 1; } }
        }
        let el = t.elapsed();
        println!("{name}: {:.0} ns/message ({hits} hits)", el.as_nanos() as f64 / n as f64);
    }
}
