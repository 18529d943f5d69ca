//! The hosts' in-process memories, for worlds that run the processes of a simulated world's
//! [`WorldSpec`](racelab_sim::explore::WorldSpec) outside the explore world: the real world
//! ([`crate::run_world`]) and the net world. A [`StoreOp::Local`] block never crosses a
//! connection (it is one synchronous block on a process' own memory), so the process' store
//! client answers it here, as the explore world does: the processes of one host share its
//! memory (a copy of the world's template made at the host's first block), a crash of one
//! process does not clear it, and each answer carries the block's position in the run's total
//! order of blocks (`LocalReply::seq`), which the families' oracles order blocks by.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use racelab_core::{LocalBlock, LocalMemory, LocalReply, NoMemory, Reply};

use crate::AdapterError;

/// Every host's memory of one run, shared by its processes' store clients (cheap to clone).
#[derive(Clone, Debug)]
pub struct HostMemories {
    inner: Arc<Mutex<Memories>>,
}

#[derive(Debug)]
struct Memories {
    /// What each host's memory starts as; `None`: no process runs blocks.
    template: Option<Box<dyn LocalMemory>>,
    hosts: BTreeMap<u32, Box<dyn LocalMemory>>,
    /// Blocks run so far.
    seq: u64,
}

impl HostMemories {
    /// Memories that start as copies of `template` (a world's
    /// [`WorldSpec::local`](racelab_sim::explore::WorldSpec)).
    pub fn new(template: Option<Box<dyn LocalMemory>>) -> HostMemories {
        HostMemories {
            inner: Arc::new(Mutex::new(Memories {
                template,
                hosts: BTreeMap::new(),
                seq: 0,
            })),
        }
    }

    /// Runs `block` on `host`'s memory, atomically, and answers as the explore world does.
    pub fn run(&self, host: u32, block: &LocalBlock) -> Result<Reply, AdapterError> {
        let mut memories = self.inner.lock().map_err(|_| AdapterError::Protocol {
            what: "in-process memory",
            message: "its state was poisoned by a panic elsewhere".into(),
        })?;
        let Memories {
            template,
            hosts,
            seq,
        } = &mut *memories;
        let memory = hosts.entry(host).or_insert_with(|| match template {
            Some(t) => t.clone_memory(),
            None => Box::new(NoMemory),
        });
        let result = memory.run(block);
        *seq += 1;
        Ok(Reply::Local(LocalReply { seq: *seq, result }))
    }

    /// A copy of each host's memory as it is now (a run's end state, `Run::local`); hosts
    /// that never ran a block are absent, as in the explore world.
    pub fn snapshot(&self) -> BTreeMap<u32, Box<dyn LocalMemory>> {
        self.inner
            .lock()
            .map(|m| {
                m.hosts
                    .iter()
                    .map(|(host, memory)| (*host, memory.clone_memory()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_core::FamilyMemory;

    #[derive(Clone, Debug, Default, Hash)]
    struct Counter(u64);

    impl FamilyMemory for Counter {
        type Block = String;
        type Output = u64;
        fn run(&mut self, _block: &String) -> u64 {
            self.0 += 1;
            self.0
        }
    }

    fn count(reply: &Reply) -> (u64, Option<u64>) {
        match reply {
            Reply::Local(r) => (r.seq, r.result.get::<u64>().copied()),
            other => panic!("not a local reply: {other:?}"),
        }
    }

    #[test]
    fn hosts_have_their_own_memory_and_blocks_one_order() {
        let m = HostMemories::new(Some(Box::new(Counter::default())));
        let block = LocalBlock::new("inc".to_string());
        let answers: Vec<(u64, Option<u64>)> = [0, 0, 1, 0]
            .iter()
            .map(|h| count(&m.run(*h, &block).expect("runs")))
            .collect();
        assert_eq!(
            answers,
            vec![(1, Some(1)), (2, Some(2)), (3, Some(1)), (4, Some(3))],
            "host 1 starts from the template; the sequence counts every host's blocks"
        );
        let end = m.snapshot();
        assert_eq!(end.len(), 2);
        assert_eq!(end[&0].get::<Counter>().map(|c| c.0), Some(3));
    }

    #[test]
    fn a_world_without_memory_answers_a_foreign_block() {
        let m = HostMemories::new(None);
        let reply = m
            .run(0, &LocalBlock::new("x".to_string()))
            .expect("answers");
        let Reply::Local(r) = reply else {
            panic!("a local reply");
        };
        assert!(r.result.get::<racelab_core::ForeignBlock>().is_some());
    }
}
