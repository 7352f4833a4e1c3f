//! Config sources: where cluster objects come from. Each writes into the [`crate::store::Store`];
//! nothing downstream knows which source an object came from.

pub mod directory;
