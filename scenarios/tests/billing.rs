//! Document 000's billing family end to end: every scripted timeline does what the catalog
//! says for every variant; the random scheduler finds the Buggy and DocFix violations within
//! the seed budget, naming the property they break; the Correct variant holds for 10,000
//! seeds with its protections seen.

#[macro_use]
mod common;

race_tests! {
    r_000_03 => "R-000-03", ["I-IDEM-a", "I-IDEM-b", "I-IDEM-c", "I-IDEM-d"],
    r_000_01 => "R-000-01", ["I-BILL-1"],
    r_000_14 => "R-000-14", ["I-TOK"],
    r_000_08 => "R-000-08", ["I-USAGE"],
}

/// A document test's outcome per variant: whether it passes on Buggy, DocFix, Correct.
fn doc_test(id: &str) -> [bool; 3] {
    let tests = racelab_scenarios::acceptance::doc_tests();
    let test = tests
        .iter()
        .find(|t| t.id == id)
        .unwrap_or_else(|| panic!("{id} is a document test"));
    test.result().passes
}

#[test]
fn ac_000_2_identical_replays_fail_the_documents_gateways_and_pass_the_claim() {
    // Buggy and DocFix answer a replay with an empty duplicate (or charge it again); the
    // claim-and-result store replays the stored body.
    assert_eq!(doc_test("AC-000-2"), [false, false, true]);
}

#[test]
fn ac_000_4_a_rollback_at_each_step_restores_the_state_only_without_the_early_marker() {
    // The documents' gateways leave billing:idem:K behind (SET NX before the transaction);
    // R-000-08's task queued before the commit survives the rollback; the claim is released
    // and the outbox row rolls back with the charge.
    assert_eq!(doc_test("AC-000-4"), [false, false, true]);
}

#[test]
fn ac_000_6_the_counters_move_once_per_fault_and_correct_never_deducts_twice() {
    assert_eq!(doc_test("AC-000-6"), [false, false, true]);
}
