//! R-000-14's pure billing function, [`count_tokens`], over generated chunk sequences: random
//! token counts per chunk, a usage record sent or not, a client disconnect at any index.
//! The provider's accounting never bills other than the provider's usage (and, when it cannot
//! tell, says so, and the gateway asks the provider); `chunks × 3` and "require usage" each
//! have a counterexample, which proptest must find.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use racelab_core::Usage;
use racelab_core::billing::{Accounting, Amount, count_tokens, price};

/// A completion: the prompt, its chunks' tokens, whether the end carries the usage record,
/// and after how many chunks the client disconnects (then the gateway cancels the stream).
#[derive(Clone, Debug)]
struct Completion {
    prompt: u32,
    chunks: Vec<u32>,
    usage_in_final: bool,
    disconnect_after: Option<usize>,
}

fn completion() -> impl Strategy<Value = Completion> {
    (
        0u32..2_000,
        prop::collection::vec(0u32..64, 0..40),
        any::<bool>(),
        proptest::option::of(0usize..45),
    )
        .prop_map(|(prompt, chunks, usage_in_final, disconnect)| {
            let disconnect_after = disconnect.filter(|d| *d < chunks.len());
            Completion {
                prompt,
                chunks,
                usage_in_final,
                disconnect_after,
            }
        })
}

impl Completion {
    /// The chunks the client read (the stream is cancelled at the disconnect).
    fn read(&self) -> &[u32] {
        &self.chunks[..self.disconnect_after.unwrap_or(self.chunks.len())]
    }

    /// What the provider bills: the prompt and every chunk generated before the cancel.
    fn truth(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt,
            completion_tokens: self.read().iter().sum(),
        }
    }

    /// The final usage record, if the client read it.
    fn record(&self) -> Option<Usage> {
        (self.usage_in_final && self.disconnect_after.is_none()).then(|| self.truth())
    }

    /// What the gateway bills with `accounting`: its count, or (when it cannot tell) the
    /// provider's usage API's answer.
    fn billed(&self, accounting: Accounting) -> Amount {
        let chunks = u32::try_from(self.read().len()).unwrap_or(u32::MAX);
        count_tokens(accounting, self.prompt, chunks, self.record())
            .unwrap_or_else(|| price(self.truth()))
    }
}

fn check(accounting: Accounting) -> Result<(), String> {
    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&completion(), |c| {
            let billed = c.billed(accounting);
            let truth = price(c.truth());
            if billed == truth {
                Ok(())
            } else {
                Err(TestCaseError::fail(format!(
                    "{c:?}: billed {billed}, the provider billed {truth}"
                )))
            }
        })
        .map_err(|e| e.to_string())
}

#[test]
fn the_providers_usage_is_billed_exactly_whatever_the_chunks() {
    check(Accounting::Provider).expect("billed == reported");
}

#[test]
fn chunks_times_three_is_wrong_for_some_chunk_sequence() {
    let err = check(Accounting::ChunksTimes3).expect_err("a counterexample exists");
    assert!(err.contains("billed"), "{err}");
}

#[test]
fn require_usage_is_wrong_when_the_record_is_never_read() {
    let err = check(Accounting::RequireUsage).expect_err("a counterexample exists");
    assert!(err.contains("billed"), "{err}");
    // With the record read, it is exact.
    let c = Completion {
        prompt: 7,
        chunks: vec![3, 9],
        usage_in_final: true,
        disconnect_after: None,
    };
    assert_eq!(c.billed(Accounting::RequireUsage), Amount(19));
}
