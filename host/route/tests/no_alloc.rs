//! Evaluating property, literal and body comparisons allocates nothing once the body is parsed.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use verge_message::{Message, system};
use verge_route::{Bool3, CompilerFlags, Condition, Evaluation, Route, SourcePattern};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts calls made on this thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    COUNT.with(Cell::get)
}

fn message() -> Message {
    Message::new(r#"{"a":{"b":"x","n":5,"t":"2017-03-09T00:00:00Z"}}"#)
        .with_property("key1", "value1")
        .with_property("key2", "3")
        .with_system("sys2", "4")
        .with_system(system::CONTENT_TYPE, "application/json")
        .with_system(system::CONTENT_ENCODING, "utf-8")
}

#[test]
fn comparisons_do_not_allocate() {
    let condition = Condition::compile(
        "key1 = 'value1' AND $sys2 = \"4\" AND as_number(key2) > 2 AND NOT is_defined(none) \
         AND key1 <> key2 AND starts_with(key1, 'val') AND substring(key1, 1, 2) = 'al' \
         AND $body.a.b = 'x' AND $body.a.n >= 5 AND NOT is_defined($body.a.t <> 'y') \
         AND (none ?? 'z') = 'z'",
        CompilerFlags::ALL,
        &SourcePattern::new("/messages"),
    )
    .unwrap();
    let message = message();
    let mut evaluation = Evaluation::new(&message);
    assert_eq!(condition.evaluate(&mut evaluation), Bool3::True); // parses the body once
    let count = allocations(|| {
        for _ in 0..100 {
            assert_eq!(condition.evaluate(&mut evaluation), Bool3::True);
        }
    });
    assert_eq!(count, 0);
    // The counter does count: a concatenation builds a new string.
    let concat = Condition::compile(
        "key1 || 'x' = 'value1x'",
        CompilerFlags::ALL,
        &SourcePattern::new("/"),
    )
    .unwrap();
    assert!(allocations(|| assert_eq!(concat.evaluate(&mut evaluation), Bool3::True)) > 0);
}

#[test]
fn a_new_evaluation_of_properties_does_not_allocate() {
    let route = Route::parse("FROM /messages/* WHERE key1 = 'value1' INTO $upstream").unwrap();
    let message = message();
    let count = allocations(|| {
        for _ in 0..100 {
            let mut evaluation = Evaluation::new(&message);
            assert!(route.matches(&mut evaluation));
        }
    });
    assert_eq!(count, 0);
}
