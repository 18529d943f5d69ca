//! What an operation means to the protocol that issued it ([`Tag`]) and what a process reports
//! ([`Note`]), both owned by the race family that defines them.
//!
//! Core knows no family: a tag is a family's own value behind a shared pointer, with the one
//! thing every generic part needs, its [`TagKind`] (a static name such as `"effect"`), which
//! scripted schedules count (`Step::On`) and fault profiles aim at. Oracles get their family's
//! value back with [`Tag::get`]. Notes work the same way and also render themselves for
//! timelines.
//!
//! Why a payload rather than a type parameter: the world, the schedulers, the catalog, the
//! report and the gate hold runs of many families side by side (one `Vec` of races, one
//! history type), so a generic `History<T>` would have to be erased there anyway; erasing it
//! at the tag keeps every generic part free of type parameters, and a family still matches on
//! its own enum.

use std::any::Any;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// The kind of a [`Tag`], a static name the family chooses (`"effect"`, `"acquire-lease"`).
/// Scripted schedules address operations by it ("the 2nd `effect` that `W_A` sends").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TagKind(&'static str);

impl TagKind {
    /// A kind named `name`.
    pub const fn new(name: &'static str) -> TagKind {
        TagKind(name)
    }

    /// The name.
    pub fn name(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for TagKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A family's tag type: usually an enum whose variants say what each operation means to the
/// family's protocol and which carry the ids its oracles need.
pub trait FamilyTag: Clone + fmt::Debug + PartialEq + Eq + Hash + Send + Sync + 'static {
    /// This tag's kind.
    fn kind(&self) -> TagKind;
}

/// A family's note type: what its processes report (an alarm, a job given up).
pub trait FamilyNote:
    Clone + fmt::Debug + fmt::Display + PartialEq + Eq + Hash + Send + Sync + 'static
{
    /// Whether the note is an alarm a process raised (timelines highlight it).
    fn alarm(&self) -> bool {
        false
    }
}

/// Object-safe face of a payload: equality and hashing through `Any`.
pub(crate) trait Payload: Any + fmt::Debug + Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn eq_payload(&self, other: &dyn Payload) -> bool;
    fn hash_payload(&self, state: &mut dyn Hasher);
}

impl<T: Any + fmt::Debug + PartialEq + Hash + Send + Sync> Payload for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn eq_payload(&self, other: &dyn Payload) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }

    fn hash_payload(&self, mut state: &mut dyn Hasher) {
        self.hash(&mut state);
    }
}

/// What an operation means to the protocol that issued it: a family's [`FamilyTag`] value.
/// Whether the operation took effect always comes from the store's recorded reply, never
/// from the tag.
#[derive(Clone)]
pub struct Tag {
    kind: TagKind,
    payload: Arc<dyn Payload>,
}

impl Tag {
    /// Wraps a family's tag.
    pub fn new<T: FamilyTag>(tag: T) -> Tag {
        Tag {
            kind: tag.kind(),
            payload: Arc::new(tag),
        }
    }

    /// A tag of `kind` with no family data, for operations whose meaning is only their kind
    /// (transaction control, a test's operations).
    pub fn plain(kind: TagKind) -> Tag {
        Tag::new(Plain(kind))
    }

    /// The tag's kind.
    pub fn kind(&self) -> TagKind {
        self.kind
    }

    /// The family's value, if this tag is of family type `T`.
    pub fn get<T: FamilyTag>(&self) -> Option<&T> {
        self.payload.as_any().downcast_ref::<T>()
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.payload.fmt(f)
    }
}

impl PartialEq for Tag {
    fn eq(&self, other: &Tag) -> bool {
        self.kind == other.kind && self.payload.eq_payload(&*other.payload)
    }
}

impl Eq for Tag {}

impl Hash for Tag {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.payload.hash_payload(state);
    }
}

impl Serialize for Tag {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{:?}", self.payload))
    }
}

/// A tag that is only its kind ([`Tag::plain`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Plain(pub TagKind);

impl FamilyTag for Plain {
    fn kind(&self) -> TagKind {
        self.0
    }
}

/// Object-safe face of a displayable payload.
pub(crate) trait Shown: Payload + fmt::Display {}

impl<T: Payload + fmt::Display> Shown for T {}

/// Object-safe face of a note payload.
trait NotePayload: Payload + fmt::Display {
    fn alarm(&self) -> bool;
}

impl<T: FamilyNote> NotePayload for T {
    fn alarm(&self) -> bool {
        FamilyNote::alarm(self)
    }
}

/// An outcome a process reports: a family's [`FamilyNote`] value.
#[derive(Clone)]
pub struct Note(Arc<dyn NotePayload>);

impl Note {
    /// Wraps a family's note.
    pub fn new<T: FamilyNote>(note: T) -> Note {
        Note(Arc::new(note))
    }

    /// Whether the note is an alarm ([`FamilyNote::alarm`]).
    pub fn is_alarm(&self) -> bool {
        self.0.alarm()
    }

    /// The family's value, if this note is of family type `T`.
    pub fn get<T: FamilyNote>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref::<T>()
    }
}

impl fmt::Debug for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl PartialEq for Note {
    fn eq(&self, other: &Note) -> bool {
        self.0.eq_payload(&*other.0)
    }
}

impl Eq for Note {}

impl Hash for Note {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash_payload(state);
    }
}

impl Serialize for Note {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    enum A {
        One(u32),
    }

    impl FamilyTag for A {
        fn kind(&self) -> TagKind {
            TagKind::new("one")
        }
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct B(u32);

    impl FamilyTag for B {
        fn kind(&self) -> TagKind {
            TagKind::new("one")
        }
    }

    #[test]
    fn tags_of_different_families_differ_even_with_equal_kind_and_data() {
        assert_eq!(Tag::new(A::One(1)), Tag::new(A::One(1)));
        assert_ne!(Tag::new(A::One(1)), Tag::new(A::One(2)));
        assert_ne!(Tag::new(A::One(1)), Tag::new(B(1)));
        assert_eq!(Tag::new(A::One(1)).get::<A>(), Some(&A::One(1)));
        assert_eq!(Tag::new(A::One(1)).get::<B>(), None);
        assert_eq!(Tag::plain(TagKind::new("tx")).kind().name(), "tx");
    }

    #[test]
    fn equal_tags_hash_equally() {
        #[derive(Default)]
        struct Bytes(Vec<u8>);
        impl Hasher for Bytes {
            fn finish(&self) -> u64 {
                0
            }
            fn write(&mut self, bytes: &[u8]) {
                self.0.extend_from_slice(bytes);
            }
        }
        let h = |t: &Tag| {
            let mut s = Bytes::default();
            t.hash(&mut s);
            s.0
        };
        assert_eq!(h(&Tag::new(A::One(3))), h(&Tag::new(A::One(3))));
        assert_ne!(h(&Tag::new(A::One(3))), h(&Tag::new(A::One(4))));
    }
}
