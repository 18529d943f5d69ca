//! The local store: one synchronous block on a process's own memory, atomic with respect to
//! the other tasks of the process because it contains no `await` (an asyncio coroutine's code
//! between two await points, a critical section of a threaded port).
//!
//! Core knows no family's memory. A family defines its memory ([`FamilyMemory`]: the state,
//! its block type and its result type); machines emit a [`LocalBlock`] wrapping the family's
//! block, the world runs it on the memory of the process's host ([`LocalMemory::run`]) and
//! answers a [`LocalReply`] carrying the family's result and the block's position in the run's
//! total order of local blocks. Blocks never cross a connection: the adapters run them in
//! process.

use std::any::Any;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::tag::Shown;

/// A family's process memory: what its local blocks run on.
pub trait FamilyMemory: Clone + fmt::Debug + Hash + Send + Sync + 'static {
    /// The family's block type (what a machine asks to run).
    type Block: Clone + fmt::Debug + fmt::Display + PartialEq + Eq + Hash + Send + Sync + 'static;
    /// The family's result type.
    type Output: Clone + fmt::Debug + fmt::Display + PartialEq + Eq + Hash + Send + Sync + 'static;
    /// Runs one block, atomically.
    fn run(&mut self, block: &Self::Block) -> Self::Output;
}

/// A host's memory as the world holds it (any family's). Implemented for every
/// [`FamilyMemory`].
pub trait LocalMemory: fmt::Debug + Send + Sync + 'static {
    /// Runs one block; a block of another family gets [`ForeignBlock`].
    fn run(&mut self, block: &LocalBlock) -> LocalValue;
    /// A copy (each host starts from a copy of the world's template).
    fn clone_memory(&self) -> Box<dyn LocalMemory>;
    /// Feeds the memory to a hasher (for trace hashes).
    fn hash_memory(&self, state: &mut dyn Hasher);
    /// The family's memory, for its end-state extraction.
    fn as_any(&self) -> &dyn Any;
}

impl<M: FamilyMemory> LocalMemory for M {
    fn run(&mut self, block: &LocalBlock) -> LocalValue {
        match block.get::<M::Block>() {
            Some(b) => LocalValue::new(FamilyMemory::run(self, b)),
            None => LocalValue::new(ForeignBlock(block.to_string())),
        }
    }

    fn clone_memory(&self) -> Box<dyn LocalMemory> {
        Box::new(self.clone())
    }

    fn hash_memory(&self, mut state: &mut dyn Hasher) {
        self.hash(&mut state);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl dyn LocalMemory {
    /// The family's memory, if it is an `M`.
    pub fn get<M: FamilyMemory>(&self) -> Option<&M> {
        self.as_any().downcast_ref::<M>()
    }
}

/// The answer to a block the memory does not know (another family's): nothing ran.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ForeignBlock(pub String);

impl fmt::Display for ForeignBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no memory here runs {}", self.0)
    }
}

/// Memory that runs no block (a world whose processes use none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NoMemory;

impl LocalMemory for NoMemory {
    fn run(&mut self, block: &LocalBlock) -> LocalValue {
        LocalValue::new(ForeignBlock(block.to_string()))
    }

    fn clone_memory(&self) -> Box<dyn LocalMemory> {
        Box::new(NoMemory)
    }

    fn hash_memory(&self, _state: &mut dyn Hasher) {}

    fn as_any(&self) -> &dyn Any {
        self
    }
}

macro_rules! shown_payload {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(Arc<dyn Shown>);

        impl $name {
            /// Wraps a family's value.
            pub fn new<T>(value: T) -> $name
            where
                T: Clone + fmt::Debug + fmt::Display + PartialEq + Eq + Hash + Send + Sync + 'static,
            {
                $name(Arc::new(value))
            }

            /// The family's value, if it is a `T`.
            pub fn get<T: 'static>(&self) -> Option<&T> {
                self.0.as_any().downcast_ref::<T>()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&*self.0, f)
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &$name) -> bool {
                self.0.eq_payload(&*other.0)
            }
        }

        impl Eq for $name {}

        impl Hash for $name {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.0.hash_payload(state);
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(_: D) -> Result<$name, D::Error> {
                Err(D::Error::custom(concat!(
                    "a local ",
                    $what,
                    " runs in its own process and never crosses a connection"
                )))
            }
        }
    };
}

shown_payload!(
    /// One synchronous block: a family's block value ([`FamilyMemory::Block`]).
    LocalBlock,
    "block"
);

shown_payload!(
    /// A block's result: a family's output value ([`FamilyMemory::Output`]).
    LocalValue,
    "result"
);

/// A block's result with its position in the run's total order of local blocks (the
/// simulation numbers them; oracles order events by it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LocalReply {
    /// The position of the block among all local blocks of the run.
    pub seq: u64,
    /// The result.
    pub result: LocalValue,
}
