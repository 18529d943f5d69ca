//! The synchronous blocks of documents 001 and 003 as store operations on a process's own
//! memory.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{
    Added, EndpointId, FailureQueue, Generation, HealthConfig, HealthTable, Observation,
    ObserveOutcome, Source, Variant,
};

/// One synchronous block (no `await` inside) on the proxy's in-process state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LocalOp {
    /// `get_healthy_endpoints()`: the candidate list the documents' request handler computes
    /// once, at request start.
    Candidates,
    /// An attempt is sent to `endpoint` without re-checking its health (the documents' retry
    /// loop over its candidate list).
    Dispatch {
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// `Correct`: pick the first healthy endpoint not yet tried, and dispatch to it.
    Select {
        /// Endpoints this request already tried.
        tried: Vec<EndpointId>,
    },
    /// `update_health_status`.
    Observe {
        /// The endpoint.
        endpoint: EndpointId,
        /// What was observed.
        observation: Observation,
        /// A request or a probe.
        source: Source,
        /// The generation the attempt or probe started with.
        started: Generation,
    },
    /// A probe of `endpoint` starts: snapshot its generation and failure epoch.
    BeginProbe {
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// `add_failed_endpoint`.
    FqAdd {
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// A threaded port's check (`e in failed`).
    FqContains {
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// A threaded port's act after its check: insert and count.
    FqInsertCounted {
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// The failed endpoints (the recovery loop's work list).
    FqFailed,
    /// `remove_failed_endpoint` after a recovery probe that started at `epoch`.
    FqRemove {
        /// The endpoint.
        endpoint: EndpointId,
        /// The failure epoch the probe started with.
        epoch: u64,
    },
    /// Serialise the queue (the text `_save()` writes).
    FqSnapshot,
    /// Replace the queue with a loaded file (`None`: no file). A file that does not parse
    /// leaves an empty queue, as the documents' loader does after logging the error.
    FqLoad {
        /// The file's content.
        content: Option<String>,
    },
    /// Truncate a file (the first half of an in-place rewrite).
    FsTruncate {
        /// The path.
        path: String,
    },
    /// Write a file's whole content.
    FsWrite {
        /// The path.
        path: String,
        /// The content.
        content: String,
    },
    /// Rename a file over another, atomically.
    FsRename {
        /// From.
        from: String,
        /// To.
        to: String,
    },
    /// Read a file.
    FsRead {
        /// The path.
        path: String,
    },
}

/// A synchronous block's result.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LocalResult {
    /// Endpoints, in order.
    Endpoints(Vec<EndpointId>),
    /// The generation an attempt starts with.
    Dispatched(Generation),
    /// The selected endpoint, if any is healthy and untried.
    Selected(Option<(EndpointId, Generation)>),
    /// What an observation did.
    Observed(ObserveOutcome),
    /// A probe's starting point.
    Begun {
        /// The endpoint's generation.
        generation: Generation,
        /// The endpoint's failure epoch.
        epoch: u64,
    },
    /// What an add did.
    Added(Added),
    /// A yes/no answer.
    Bool(bool),
    /// A serialised queue.
    Text(String),
    /// A file's content (`None`: no such file).
    File(Option<String>),
    /// Whether a load parsed (the error text otherwise).
    Loaded(Result<(), String>),
    /// Done.
    Done,
}

/// One process's in-process state: the endpoint table, the failure queue and its local
/// files (which survive a crash; the rest is rebuilt by a load).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LocalState {
    /// The endpoint health table.
    pub health: HealthTable,
    /// The failure queue.
    pub queue: FailureQueue,
    /// Local files by path.
    pub files: BTreeMap<String, String>,
}

impl crate::ops::FamilyMemory for LocalState {
    type Block = LocalOp;
    type Output = LocalResult;

    fn run(&mut self, block: &LocalOp) -> LocalResult {
        self.apply(block)
    }
}

impl LocalState {
    /// Fresh state over `endpoints`.
    pub fn new(variant: Variant, config: HealthConfig, endpoints: &[EndpointId]) -> LocalState {
        LocalState {
            health: HealthTable::new(variant, config, endpoints),
            queue: FailureQueue::new(variant),
            files: BTreeMap::new(),
        }
    }

    /// Runs one block.
    pub fn apply(&mut self, op: &LocalOp) -> LocalResult {
        match op {
            LocalOp::Candidates => LocalResult::Endpoints(self.health.healthy_endpoints()),
            LocalOp::Dispatch { endpoint } => {
                LocalResult::Dispatched(self.health.dispatch(*endpoint))
            }
            LocalOp::Select { tried } => LocalResult::Selected(self.health.select(tried)),
            LocalOp::Observe {
                endpoint,
                observation,
                source,
                started,
            } => LocalResult::Observed(self.health.observe(
                *endpoint,
                *observation,
                *source,
                *started,
            )),
            LocalOp::BeginProbe { endpoint } => LocalResult::Begun {
                generation: self.health.begin_probe(*endpoint),
                epoch: self.queue.begin_recovery(*endpoint),
            },
            LocalOp::FqAdd { endpoint } => LocalResult::Added(self.queue.add(*endpoint)),
            LocalOp::FqContains { endpoint } => LocalResult::Bool(self.queue.contains(*endpoint)),
            LocalOp::FqInsertCounted { endpoint } => {
                LocalResult::Added(self.queue.insert_counted(*endpoint))
            }
            LocalOp::FqFailed => LocalResult::Endpoints(self.queue.failed()),
            LocalOp::FqRemove { endpoint, epoch } => {
                LocalResult::Bool(self.queue.remove(*endpoint, *epoch))
            }
            LocalOp::FqSnapshot => LocalResult::Text(self.queue.to_json()),
            LocalOp::FqLoad { content } => {
                let variant = self.queue.variant();
                match content {
                    None => {
                        self.queue = FailureQueue::new(variant);
                        LocalResult::Loaded(Ok(()))
                    }
                    Some(text) => match FailureQueue::from_json(variant, text) {
                        Ok(queue) => {
                            self.queue = queue;
                            LocalResult::Loaded(Ok(()))
                        }
                        Err(e) => {
                            self.queue = FailureQueue::new(variant);
                            LocalResult::Loaded(Err(e.to_string()))
                        }
                    },
                }
            }
            LocalOp::FsTruncate { path } => {
                self.files.insert(path.clone(), String::new());
                LocalResult::Done
            }
            LocalOp::FsWrite { path, content } => {
                self.files.insert(path.clone(), content.clone());
                LocalResult::Done
            }
            LocalOp::FsRename { from, to } => match self.files.remove(from) {
                Some(content) => {
                    self.files.insert(to.clone(), content);
                    LocalResult::Bool(true)
                }
                None => LocalResult::Bool(false),
            },
            LocalOp::FsRead { path } => LocalResult::File(self.files.get(path).cloned()),
        }
    }
}

fn list(f: &mut fmt::Formatter<'_>, endpoints: &[EndpointId]) -> fmt::Result {
    write!(f, "[")?;
    for (i, e) in endpoints.iter().enumerate() {
        if i > 0 {
            write!(f, ", ")?;
        }
        write!(f, "{e}")?;
    }
    write!(f, "]")
}

impl fmt::Display for LocalOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalOp::Candidates => write!(f, "get_healthy_endpoints()"),
            LocalOp::Dispatch { endpoint } => write!(f, "dispatch to {endpoint} (no re-check)"),
            LocalOp::Select { tried } => {
                write!(f, "select healthy endpoint not in ")?;
                list(f, tried)
            }
            LocalOp::Observe {
                endpoint,
                observation,
                source,
                started,
            } => write!(
                f,
                "update_health_status({endpoint}, {}, from {}, gen {})",
                observation.as_str(),
                match source {
                    Source::Request => "request",
                    Source::Probe => "probe",
                },
                started.0
            ),
            LocalOp::BeginProbe { endpoint } => write!(f, "begin probe of {endpoint}"),
            LocalOp::FqAdd { endpoint } => write!(f, "add_failed_endpoint({endpoint})"),
            LocalOp::FqContains { endpoint } => write!(f, "{endpoint} in failed_endpoints"),
            LocalOp::FqInsertCounted { endpoint } => {
                write!(f, "failed_endpoints.add({endpoint}); total_failed += 1")
            }
            LocalOp::FqFailed => write!(f, "list failed_endpoints"),
            LocalOp::FqRemove { endpoint, epoch } => {
                write!(f, "remove_failed_endpoint({endpoint}, epoch {epoch})")
            }
            LocalOp::FqSnapshot => write!(f, "serialise failure queue"),
            LocalOp::FqLoad { content: None } => write!(f, "load failure queue (no file)"),
            LocalOp::FqLoad { content: Some(c) } => write!(f, "load failure queue from {c:?}"),
            LocalOp::FsTruncate { path } => write!(f, "truncate {path}"),
            LocalOp::FsWrite { path, .. } => write!(f, "write {path}"),
            LocalOp::FsRename { from, to } => write!(f, "rename {from} -> {to}"),
            LocalOp::FsRead { path } => write!(f, "read {path}"),
        }
    }
}

impl fmt::Display for LocalResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalResult::Endpoints(list_) => list(f, list_),
            LocalResult::Dispatched(g) => write!(f, "gen {}", g.0),
            LocalResult::Selected(None) => write!(f, "none"),
            LocalResult::Selected(Some((e, g))) => write!(f, "{e} (gen {})", g.0),
            LocalResult::Observed(o) => write!(f, "{o:?}"),
            LocalResult::Begun { generation, epoch } => {
                write!(f, "gen {}, epoch {epoch}", generation.0)
            }
            LocalResult::Added(a) => write!(f, "inserted {}, epoch {}", a.inserted, a.epoch),
            LocalResult::Bool(b) => write!(f, "{b}"),
            LocalResult::Text(t) => write!(f, "{t}"),
            LocalResult::File(None) => write!(f, "no file"),
            LocalResult::File(Some(c)) => write!(f, "{c:?}"),
            LocalResult::Loaded(Ok(())) => write!(f, "loaded"),
            LocalResult::Loaded(Err(e)) => write!(f, "{e}"),
            LocalResult::Done => write!(f, "ok"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists_render_comma_separated_in_timelines() {
        let list = |v: Vec<u32>| {
            LocalResult::Endpoints(v.into_iter().map(EndpointId).collect()).to_string()
        };
        assert_eq!(list(vec![]), "[]");
        assert_eq!(list(vec![1]), "[E1]");
        assert_eq!(list(vec![1, 2, 3]), "[E1, E2, E3]");
    }
}
