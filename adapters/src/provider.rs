//! The in-process LLM provider of the gateway's real-server run. There is no real provider
//! to reach (and a real one would bill real money), so the upstream calls of a real run are
//! answered in this process by the simulated worlds' own [`UpstreamModel`] (one model, not a
//! second copy of its rules) on the run's [`Clock`]: a stream generates its chunks over real
//! time from its acceptance whether or not anyone reads them, a read of a chunk not yet
//! produced waits until it is, a cancel stops the generation and bills what was produced by
//! then, a process that dies leaves its streams generating to their end, and the provider's
//! usage API answers from the same state. Only Redis and PostgreSQL are real in such a run.
//!
//! [`WithProvider`] puts the provider beside any [`StoreClient`]: upstream operations go to
//! the provider, everything else to the inner client.

use std::collections::BTreeMap;
use std::sync::Mutex;

use racelab_core::{EndpointId, Reply, RequestId, StoreOp, UpstreamOp, Usage};
use racelab_sim::explore::{StreamStep, Upstream, UpstreamModel};

use crate::AdapterError;
use crate::driver::{Clock, StoreClient};

/// The provider: the simulated worlds' upstream model, served on a real clock.
#[derive(Debug)]
pub struct InProcessProvider {
    model: Mutex<UpstreamModel>,
    clock: Clock,
}

/// How often a waiting read looks again (it also wakes at its frame's time).
const WAIT_STEP: std::time::Duration = std::time::Duration::from_millis(50);

impl InProcessProvider {
    /// A provider serving the endpoints of `script`, on `clock`'s time line.
    pub fn new(script: Upstream, clock: Clock) -> InProcessProvider {
        InProcessProvider {
            model: Mutex::new(UpstreamModel::new(script)),
            clock,
        }
    }

    /// Answers `op` for `reader` (one connection: a process and its incarnation), waiting
    /// as the model says (a slow window, a frame not produced yet).
    pub async fn call(&self, reader: (usize, u32), op: &UpstreamOp) -> Result<Reply, AdapterError> {
        if !op.kind.is_stream() {
            let (reply, slow) = {
                let model = self.lock()?;
                model.call(self.clock.true_now(), op)
            };
            tokio::time::sleep(std::time::Duration::from_millis(slow.as_ms())).await;
            return Ok(Reply::Upstream(reply));
        }
        loop {
            let step = {
                let mut model = self.lock()?;
                model.stream_call(self.clock.true_now(), reader, op)
            };
            match step {
                StreamStep::Reply(reply, slow) => {
                    if slow.as_ms() > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(slow.as_ms())).await;
                    }
                    return Ok(Reply::Stream(reply));
                }
                StreamStep::Wait(at) => {
                    let until = self.clock.instant(at);
                    let step = tokio::time::Instant::now() + WAIT_STEP;
                    tokio::time::sleep_until(until.min(step)).await;
                }
            }
        }
    }

    /// Process `process` died: its connections are gone, its streams generate on unread.
    pub fn reader_gone(&self, process: usize) {
        if let Ok(mut model) = self.model.lock() {
            model.reader_gone(process);
        }
    }

    /// What the provider bills in the end per request (every stream generating to its end
    /// unless cancelled).
    pub fn final_usage(&self) -> BTreeMap<(EndpointId, RequestId), Usage> {
        self.model
            .lock()
            .map(|m| m.final_usage())
            .unwrap_or_default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, UpstreamModel>, AdapterError> {
        self.model.lock().map_err(|_| AdapterError::Protocol {
            what: "in-process provider",
            message: "its state was poisoned by a panic elsewhere".into(),
        })
    }
}

/// A [`StoreClient`] with the provider beside it: upstream operations are answered by the
/// provider for this `reader`, every other operation by `inner`.
#[derive(Debug)]
pub struct WithProvider<'p, C> {
    /// The real stores.
    pub inner: &'p mut C,
    /// The provider.
    pub provider: &'p InProcessProvider,
    /// The connection the provider sees (a process and its incarnation).
    pub reader: (usize, u32),
}

impl<C: StoreClient + Send> StoreClient for WithProvider<'_, C> {
    async fn execute(&mut self, op: &StoreOp) -> Result<Reply, AdapterError> {
        match op {
            StoreOp::Upstream(call) => self.provider.call(self.reader, call).await,
            other => self.inner.execute(other).await,
        }
    }
}
