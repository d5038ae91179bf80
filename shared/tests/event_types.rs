//! Only `Event` types (proto messages with a routing key) can be staged or subscribed to: a
//! request, a resource or any other type is a compile error, not a runtime surprise.

#[test]
fn non_event_types_cannot_be_published_or_subscribed() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
